#!/usr/bin/env python3
"""Writes imapd/src/casemap_data.rs, the tables of i;unicode-casemap as Dovecot 2.3
computes it (src/lib/unicodemap.pl and unichar.c there: each character mapped to its
simple titlecase, then decomposed one step), from the Unicode Character Database that
Perl carries (Unicode::UCD: UnicodeData.txt's fields).

    python3 imapd/casemap_gen.py

- TITLE: the characters whose simple titlecase (field 14, the upper case where it is
  empty) is not what imapd's `titlecase` gets from Rust's one-character upper case and
  the digraph rule: Georgian Mkhedruli (its titlecase is itself), the Greek letters with
  ypogegrammeni.
- DECOMP: one step of decomposition, canonical or compatibility (`<tag> ...`), as
  Dovecot 2.3.19 answers SORT (checked against it: `Âz` sorts before `Dža`, `ẫ` after
  `ﬁx`, `ᾼ` as Α + U+0345): only for characters without a titlecase field (the others
  are mapped to their titlecase first); the four digraphs whose field 14 is themselves
  (ǅ ǈ ǋ ǲ, which Perl's charinfo shows as no mapping) keep no decomposition. Hangul
  syllables are decomposed by rule in collate.rs.
"""
import os
import subprocess
import sys

PERL = r'''
use strict; use warnings;
use Unicode::UCD qw(prop_invmap charinfo);
my %codes;
for my $prop ("Simple_Titlecase_Mapping", "Decomposition_Mapping") {
    my ($l, $m) = prop_invmap($prop);
    for my $i (0 .. $#$l - 1) {
        next if !ref $m->[$i] && $m->[$i] eq "0";
        for my $c ($l->[$i] .. $l->[$i + 1] - 1) {
            next if $c >= 0xAC00 && $c <= 0xD7A3;
            $codes{$c} = 1;
        }
    }
}
print "# ", Unicode::UCD::UnicodeVersion(), "\n";
for my $c (sort { $a <=> $b } keys %codes) {
    my $ci = charinfo($c) or next;
    print join(";", $ci->{code}, $ci->{title}, $ci->{decomposition}, $ci->{category}), "\n";
}
'''

# titlecase letters whose UnicodeData field 14 is themselves
SELF_TITLE = {0x1C5, 0x1C8, 0x1CB, 0x1F2}

DIGRAPHS = ((0x1C4, 0x1C6, 0x1C5), (0x1C7, 0x1C9, 0x1C8), (0x1CA, 0x1CC, 0x1CB), (0x1F1, 0x1F3, 0x1F2))


def rust_title(c):
    """What collate.rs's titlecase gives without the TITLE table."""
    for lo, hi, t in DIGRAPHS:
        if lo <= c <= hi:
            return t
    u = chr(c).upper()
    return ord(u) if len(u) == 1 else c


def main():
    dump = subprocess.run(["perl", "-e", PERL], check=True, capture_output=True, text=True).stdout
    version = None
    titles, rows = {}, []
    for line in dump.splitlines():
        if line.startswith("#"):
            version = line.split()[1]
            continue
        code, title, decomp, cat = line.split(";")
        code = int(code, 16)
        if title:
            titles[code] = int(title, 16)
        rows.append((code, title, decomp, cat))
    table = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        want = titles.get(c, c)
        if rust_title(c) != want:
            table.append((c, want))
    decomps = []
    for code, title, decomp, cat in rows:
        if title or code in SELF_TITLE or not decomp:
            continue
        tagged = decomp.startswith("<")
        parts = decomp.split()[1:] if tagged else decomp.split()
        decomps.append("%X %s" % (code, " ".join("%X" % int(p, 16) for p in parts)))
    out = [
        "//! Tables of i;unicode-casemap as Dovecot 2.3 computes it ([`crate::collate`]), written",
        "//! by `python3 imapd/casemap_gen.py` from the Unicode Character Database %s" % version,
        "//! (Perl's copy): [`TITLE`], the characters whose simple titlecase is not what Rust's",
        "//! one-character upper case and the digraph rule give; [`DECOMP`], one step of",
        "//! decomposition (canonical or compatibility) of the characters that have no",
        "//! titlecase mapping, as Dovecot 2.3 takes them.",
        "",
        "/// (character, its titlecase) where Rust's upper case is not it, sorted.",
        "pub(crate) static TITLE: &[(u32, u32)] = &[",
    ]
    out += ["    (0x%04X, 0x%04X)," % t for t in table]
    out += [
        "];",
        "",
        "/// One decomposition a line, `CODE PART...` in hex, sorted by code.",
        'pub(crate) static DECOMP: &str = "\\',
    ]
    out += ["%s\\n\\" % d for d in decomps]
    out += ['";', ""]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "casemap_data.rs")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print("%s: %d titlecase exceptions, %d decompositions" % (path, len(table), len(decomps)))


if __name__ == "__main__":
    main()
