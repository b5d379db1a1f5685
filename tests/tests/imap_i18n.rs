//! I18NLEVEL=1 (RFC 5255): SORT and SEARCH compare with i;unicode-casemap, computed as
//! Dovecot 2.3 computes it (imapd/src/collate.rs), under the real master. The expected
//! SORT order and SEARCH hits are Dovecot 2.3.19's answers to the same commands over the
//! same 31 subjects (the bench/peer Dovecot, 2026-12-07): `é` is `E` and a combining
//! acute, so `été` sorts after `ez` and equals `Été`; `²` is `2`; `ﬁ` is a lower-case
//! `fi`; `ẫ` is `Â` and a tilde (one step of decomposition); the digraph `ǆ` is `ǅ`;
//! Georgian keeps its case; a Hangul syllable is its jamo.

use postern_tests::imap_script;

const SUBJECTS: [&str; 31] = [
    "été", "Été", "ete", "Ete", "etf", "ez", "f", "ü", "Üa", "Ub", "Uz", "Va", "ǖ", "Ǖx", "ﬁx", "fix", "FIX", "²b",
    "2a", "ǆ", "Ǆa", "Dža", "straße", "STRASSE", "ẫ", "Âz", "ა", "Ა", "ᾳ", "ᾼ", "한",
];

/// Dovecot 2.3.19's `SORT (SUBJECT) UTF-8 ALL`, as the subjects.
const DOVECOT_ORDER: [&str; 31] = [
    "2a", "²b", "Âz", "Dža", "ete", "Ete", "etf", "ez", "été", "Été", "f", "fix", "FIX", "STRASSE", "straße", "Ub",
    "Uz", "ü", "Üa", "Va", "ﬁx", "ẫ", "ǖ", "Ǖx", "ǆ", "Ǆa", "ᾳ", "ᾼ", "ა", "한", "Ა",
];

const SCRIPT: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-I18n-Pw1')
assert ' I18NLEVEL=1' in R.ok(b'CAPABILITY')[0]
R.ok(b'CREATE probe')
for s in SUBJECTS:
    m = b'Subject: ' + s.encode() + b'\r\n\r\nx\r\n'
    R.ok(b'APPEND probe {%d+}\r\n' % len(m) + m)
R.ok(b'SELECT probe')
got = R.ok(b'SORT (SUBJECT) UTF-8 ALL')[0].split()[2:]
order = [SUBJECTS[int(n) - 1] for n in got]
assert order == DOVECOT_ORDER, order
def search(needle):
    n = needle.encode()
    got = R.ok(b'SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n' % len(n) + n)[0].split()[2:]
    return [SUBJECTS[int(x) - 1] for x in got]
# Dovecot's hits
for needle, want in [('ÉTÉ', ['été', 'Été']), ('ete', ['ete', 'Ete']), ('ü', ['ü', 'Üa']), ('Ü', ['ü', 'Üa']),
                     ('fi', ['fix', 'FIX']), ('ǅ', ['ǆ', 'Ǆa'])]:
    assert search(needle) == want, (needle, search(needle))
# the same key in an RFC 2047 encoded subject, and in a body
m = b'Subject: =?ISO-8859-1?Q?Vacances_d=27=E9t=E9?=\r\n\r\nL\xc3\x89T\xc3\x89 dernier\r\n'
R.ok(b'APPEND probe {%d+}\r\n' % len(m) + m)
R.ok(b'NOOP')
n = 'été'.encode()
eq = R.ok(b'SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n' % len(n) + n + b' BODY {%d+}\r\n' % len(n) + n)
assert eq == ['* SEARCH 32'], eq
"#;

#[test]
fn sort_and_search_compare_as_dovecot_does() {
    let quote = |list: &[&str]| {
        let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", items.join(", "))
    };
    let prelude = format!(
        "SUBJECTS = {}\nDOVECOT_ORDER = {}\n",
        quote(&SUBJECTS),
        quote(&DOVECOT_ORDER)
    );
    imap_script::run("Alice-I18n-Pw1", &prelude, SCRIPT);
}
