#!/usr/bin/env python3
"""IMAP4rev1 (RFC 3501) command battery against an IMAP server on loopback, used by
tests/tests/imap_commands.rs. A raw client (so that exact responses can be checked)
plus Python's imaplib for one part. Every check is an assert; the script prints
`CHECK name` for each passed group and `ALL OK` at the end.

    imap_commands.py PORT USER PASSWORD
"""
import datetime
import imaplib
import re
import socket
import sys

PORT, USER, PASSWORD = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Raw:
    """One connection; cmd() returns (untagged lines, tagged line)."""

    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
        self.f = self.s.makefile("rb")
        self.n = 0
        greeting = self.line()
        assert greeting.startswith(b"* OK"), greeting

    def line(self):
        data = self.f.readline(1 << 20)
        assert data.endswith(b"\r\n"), data
        # A literal: read it and the rest of the line it belongs to.
        m = re.search(rb"\{(\d+)\}\r\n$", data)
        while m:
            data += self.f.read(int(m.group(1)))
            more = self.f.readline(1 << 20)
            data += more
            m = re.search(rb"\{(\d+)\}\r\n$", more)
        return data

    def cmd(self, text, literal=None):
        self.n += 1
        tag = b"t%d" % self.n
        if literal is None:
            self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        else:
            self.s.sendall(tag + b" " + text.encode() + b" {%d}\r\n" % len(literal))
            cont = self.line()
            assert cont.startswith(b"+"), cont
            self.s.sendall(literal + b"\r\n")
        untagged = []
        while True:
            l = self.line()
            if l.startswith(tag + b" "):
                return untagged, l[len(tag) + 1:].decode("utf-8", "replace").rstrip("\r\n")
            untagged.append(l)

    def ok(self, text, literal=None):
        u, t = self.cmd(text, literal)
        assert t.startswith("OK"), (text, t, u)
        return u, t


def flagset(line):
    """The FLAGS of an untagged FETCH line, without the session-local \\Recent."""
    m = re.search(rb"FLAGS \(([^)]*)\)", line)
    assert m, line
    return sorted(f for f in m.group(1).decode().split() if f != "\\Recent")


def list_names(u):
    """LIST/LSUB lines → {mailbox name: line}; the name quoted or an atom."""
    out = {}
    for l in u:
        m = re.match(rb'\* (?:LIST|LSUB) \([^)]*\) (?:"."|NIL) (?:"((?:[^"\\]|\\.)*)"|(\S+))\r\n$', l)
        assert m, l
        out[(m.group(1) if m.group(1) is not None else m.group(2)).decode()] = l
    return out


def literal(data):
    return b"{%d}\r\n" % len(data) + data


def search(c, criteria):
    u, t = c.ok(criteria)
    line = [l for l in u if l.startswith(b"* SEARCH")]
    assert len(line) == 1, (criteria, u)
    return [int(x) for x in line[0].split()[2:]]


M1 = (b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nCc: carol@remote.test\r\n"
      b"Subject: Quarterly report\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
      b"Message-ID: <m1@example.test>\r\n\r\nthe numbers inside\r\n")
M2 = (b"From: bob@remote.test\r\nTo: alice@example.test\r\nSubject: Photos\r\n"
      b"Date: Tue, 10 Nov 2026 12:00:00 +0000\r\nMessage-ID: <m2@remote.test>\r\n"
      b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
      b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee attached\r\n"
      b"--XX\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
      b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgc=\r\n--XX--\r\n")
M3 = (b"From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@remote.test>\r\nTo: alice@example.test\r\n"
      b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\nDate: Fri, 20 Nov 2026 08:00:00 +0100\r\n"
      b"Message-ID: <m3@remote.test>\r\nMIME-Version: 1.0\r\n"
      b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      + "Grüße aus Köln\r\n".encode() + b"x" * 2000 + b"\r\n")

c = Raw()
u, t = c.ok("CAPABILITY")
caps = u[0].decode().split()
for cap in ["IMAP4rev1", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "UNSELECT", "LITERAL+", "ID", "ENABLE"]:
    assert cap in caps, (cap, caps)
u, t = c.cmd("SELECT INBOX")
assert t.startswith("NO") or t.startswith("BAD"), ("SELECT before LOGIN", t)
c.ok("LOGIN %s %s" % (USER, PASSWORD))
print("CHECK capability+login")

u, t = c.ok("NAMESPACE")
assert u == [b'* NAMESPACE (("" ".")) NIL NIL\r\n'], u
u, t = c.ok('LIST "" ""')
assert u == [b'* LIST (\\Noselect) "." ""\r\n'], u
u, t = c.ok('LIST "" "*"')
names = list_names(u)
for special, attr in [("Sent", b"\\Sent"), ("Drafts", b"\\Drafts"), ("Trash", b"\\Trash"), ("Junk", b"\\Junk"),
                      ("Archive", b"\\Archive")]:
    assert special in names and attr in names[special], (special, u)
assert "INBOX" in names, u
print("CHECK namespace+list")

# Hierarchies: CREATE makes the parents, RENAME takes the children along, DELETE.
c.ok('CREATE "Projects"')
c.ok('CREATE "Projects.2026"')
u, t = c.ok('LIST "" "Projects*"')
n = list_names(u)
assert sorted(n) == ["Projects", "Projects.2026"] and b"\\HasChildren" in n["Projects"], u
u, t = c.cmd('CREATE "Projects.2026"')
assert t.startswith("NO"), ("CREATE of an existing mailbox", t)
u, t = c.ok('LIST "" "Projects.%"')
assert list(list_names(u)) == ["Projects.2026"], u
c.ok('RENAME "Projects" "Work"')
u, t = c.ok('LIST "" "Work*"')
assert sorted(list_names(u)) == ["Work", "Work.2026"], u
u, t = c.ok('LIST "" "Projects*"')
assert u == [], u
c.ok('DELETE "Work.2026"')
u, t = c.ok('LIST "" "Work*"')
assert len(u) == 1 and b"\\HasNoChildren" in u[0], u
u, t = c.cmd('DELETE "INBOX"')
assert t.startswith("NO"), t
print("CHECK create+rename+delete")

c.ok('SUBSCRIBE "Work"')
u, t = c.ok('LSUB "" "*"')
assert "Work" in list_names(u), u
c.ok('UNSUBSCRIBE "Work"')
u, t = c.ok('LSUB "" "W*"')
assert u == [], u
print("CHECK subscribe+lsub")

# APPEND with flags, dates and literals; UIDPLUS APPENDUID.
uids = []
for msg, flags, date in [(M1, r"(\Seen)", "01-Nov-2026 10:00:00 +0000"),
                         (M2, r"(\Flagged $Work)", "10-Nov-2026 12:00:00 +0000"),
                         (M3, r"(\Answered \Draft)", "20-Nov-2026 08:00:00 +0100")]:
    u, t = c.ok('APPEND INBOX %s "%s"' % (flags, date), msg)
    m = re.search(r"\[APPENDUID (\d+) (\d+)\]", t)
    assert m, t
    uids.append(int(m.group(2)))
    validity = int(m.group(1))
assert uids == sorted(uids) and len(set(uids)) == 3, uids
# LITERAL+ (non-synchronising): no continuation request is waited for.
c.n += 1
c.s.sendall(b"t%d APPEND Trash {5+}\r\nhello\r\n" % c.n)
while True:
    l = c.line()
    if l.startswith(b"t%d " % c.n):
        assert l.startswith(b"t%d OK" % c.n), l
        break
    assert not l.startswith(b"+"), ("continuation sent for LITERAL+", l)
u, t = c.ok("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)")
st = u[0].decode()
assert "MESSAGES 3" in st and "UIDNEXT %d" % (uids[-1] + 1) in st and "UIDVALIDITY %d" % validity in st and \
    "UNSEEN 2" in st, st
print("CHECK append+status")

# EXAMINE is read-only.
u, t = c.ok("EXAMINE INBOX")
assert "[READ-ONLY]" in t and b"* 3 EXISTS\r\n" in u, (t, u)
u, t = c.cmd("STORE 1 +FLAGS (\\Deleted)")
assert t.startswith("NO"), ("STORE in a read-only mailbox", t)
u, t = c.ok("SELECT INBOX")
assert "[READ-WRITE]" in t and b"* 3 EXISTS\r\n" in u, (t, u)
assert any(b"[UIDVALIDITY %d]" % validity in l for l in u), u
print("CHECK examine+select")

# FETCH: sizes, internal dates, structure, sections, partials.
u, t = c.ok("FETCH 1:3 (UID FLAGS INTERNALDATE RFC822.SIZE)")
assert len(u) == 3, u
for line, msg, date, uid in zip(u, [M1, M2, M3], ["01-Nov-2026 10:00:00 +0000", "10-Nov-2026 12:00:00 +0000",
                                                  "20-Nov-2026 08:00:00 +0100"], uids):
    assert b"RFC822.SIZE %d" % len(msg) in line, (line, len(msg))
    # The same instant (a Maildir keeps it as the file's mtime; the zone may differ).
    got = re.search(rb'INTERNALDATE "([^"]+)"', line).group(1).decode()
    parse = lambda d: datetime.datetime.strptime(d.strip(), "%d-%b-%Y %H:%M:%S %z")
    assert parse(got) == parse(date), (got, date)
    assert b"UID %d" % uid in line, line
assert b"\\Seen" in u[0] and b"$Work" in u[1] and b"\\Flagged" in u[1] and b"\\Draft" in u[2], u
u, t = c.ok("FETCH 2 BODYSTRUCTURE")
bs = u[0]
assert b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 12 ' in bs, bs
assert b'("APPLICATION" "OCTET-STREAM" ("NAME" "a.bin") NIL NIL "BASE64" 12' in bs, bs
assert b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)' in bs, bs
u, t = c.ok("FETCH 2 (BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[1])")
assert b"BODY[1.MIME] " + literal(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n") in u[0], u
assert b"BODY[2] " + literal(b"AAECAwQFBgc=") in u[0], u
assert b"BODY[1] " + literal(b"see attached") in u[0], u
u, t = c.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (From To Cc Date)]")
want = b"Subject: Quarterly report\r\nMessage-ID: <m1@example.test>\r\n\r\n"
assert literal(want) in u[0], u
u, t = c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<4.7>)")
assert b"BODY[HEADER.FIELDS (SUBJECT)] " + literal(b"Subject: Quarterly report\r\n\r\n") in u[0], u
assert b"BODY[TEXT]<4> {7}\r\nnumbers" in u[0], u
u, t = c.ok("FETCH 1 (FLAGS)")
assert b"\\Seen" in u[0], u
u, t = c.ok("FETCH 2 BODY[TEXT]")
assert any(b"\\Seen" in l for l in u), ("BODY[] without PEEK sets \\Seen", u)
c.ok("STORE 2 -FLAGS.SILENT (\\Seen)")
u, t = c.ok("FETCH 3 ENVELOPE")
assert b'"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?="' in u[0] and b'"juergen" "remote.test"' in u[0], u
print("CHECK fetch")

# SEARCH: every RFC 3501 key.
cases = {
    "ALL": [1, 2, 3], "SEEN": [1], "UNSEEN": [2, 3], "ANSWERED": [3], "UNANSWERED": [1, 2],
    "DRAFT": [3], "UNDRAFT": [1, 2], "FLAGGED": [2], "UNFLAGGED": [1, 3], "DELETED": [],
    "UNDELETED": [1, 2, 3], "KEYWORD $Work": [2], "UNKEYWORD $Work": [1, 3],
    "FROM alice": [1], "TO bob": [1], "CC carol": [1], "BCC carol": [], "SUBJECT photos": [2],
    "BODY numbers": [1], "TEXT PHOTOS": [2], "TEXT attached": [2], 'HEADER Message-ID "m2@"': [2],
    "HEADER MIME-Version \"\"": [2, 3], "LARGER 1500": [3], "SMALLER 1500": [1, 2],
    "BEFORE 05-Nov-2026": [1], "ON 10-Nov-2026": [2], "SINCE 10-Nov-2026": [2, 3],
    "SENTBEFORE 05-Nov-2026": [1], "SENTON 10-Nov-2026": [2], "SENTSINCE 10-Nov-2026": [2, 3],
    "UID %d:%d" % (uids[1], uids[2]): [2, 3], "2:*": [2, 3], "1,3": [1, 3],
    "OR FROM alice SUBJECT photos": [1, 2], "NOT SEEN": [2, 3], "SEEN FROM alice": [1],
    "NOT (FLAGGED OR SEEN ANSWERED)": [1, 2, 3], "NOT (OR SEEN FLAGGED)": [3], "(OR SEEN FLAGGED) SMALLER 1000": [1, 2],
    "NEW": None, "OLD": None, "RECENT": None,
}
for crit, want in cases.items():
    got = search(c, "SEARCH " + crit)
    if want is not None:
        assert got == want, (crit, got, want)
got = search(c, "UID SEARCH FLAGGED")
assert got == [uids[1]], got
# CHARSET UTF-8 with a literal: the subject is an encoded word, the body 8-bit.
u, t = c.ok("SEARCH CHARSET UTF-8 SUBJECT", "Grüße".encode())
assert u == [b"* SEARCH 3\r\n"], u
u, t = c.ok("SEARCH CHARSET UTF-8 TEXT", "köln".encode())
assert u == [b"* SEARCH 3\r\n"], u
u, t = c.ok("SEARCH CHARSET UTF-8 FROM", "Jürgen".encode())
assert u == [b"* SEARCH 3\r\n"], u
u, t = c.cmd("SEARCH CHARSET KOI8-Q ALL")
assert t.startswith("NO [BADCHARSET"), t
print("CHECK search")

# STORE variants; COPY and MOVE with COPYUID; UID EXPUNGE; CHECK.
u, t = c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
assert u == [], u
u, t = c.ok("STORE 1 -FLAGS (\\Seen)")
assert len(u) == 1 and u[0].startswith(b"* 1 FETCH ") and flagset(u[0]) == ["\\Deleted"], u
u, t = c.ok("STORE 1 FLAGS (\\Deleted \\Seen)")
assert len(u) == 1 and flagset(u[0]) == ["\\Deleted", "\\Seen"], u
u, t = c.ok("COPY 2 Trash")
assert re.search(r"\[COPYUID \d+ %d \d+\]" % uids[1], t), t
u, t = c.ok("MOVE 3 Archive")
assert any(re.search(rb"\[COPYUID \d+ %d \d+\]" % uids[2], l) for l in u + [t.encode()]), (u, t)
assert b"* 3 EXPUNGE\r\n" in u, u
u, t = c.ok("UID EXPUNGE %d" % uids[1])
assert u == [], ("UID EXPUNGE of a message without \\Deleted removes nothing", u)
u, t = c.ok("UID EXPUNGE %d:%d" % (uids[0], uids[1]))
assert u == [b"* 1 EXPUNGE\r\n"], u
c.ok("CHECK")
u, t = c.ok("SEARCH ALL")
assert u == [b"* SEARCH 1\r\n"], u
print("CHECK store+copy+move+expunge")

# CLOSE expunges silently; UNSELECT does not.
u, t = c.ok("SELECT Trash")
assert b"* 2 EXISTS\r\n" in u, u
c.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)")
u, t = c.ok("CLOSE")
assert u == [], u
u, t = c.ok("STATUS Trash (MESSAGES)")
assert b"MESSAGES 0" in u[0], u
c.ok("SELECT Archive")
c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
u, t = c.ok("UNSELECT")
u, t = c.ok("STATUS Archive (MESSAGES)")
assert b"MESSAGES 1" in u[0], u
u, t = c.cmd("FETCH 1 FLAGS")
assert t.startswith("BAD") or t.startswith("NO"), ("FETCH with nothing selected", t)
print("CHECK close+unselect")

# Bad input: BAD and the session goes on; an oversized literal is refused unread.
for bad in ["BOGUS", "FETCH", "SELECT", "STORE 1 +FLAGS", "SEARCH FROBNICATE", "LOGIN"]:
    u, t = c.cmd(bad)
    assert t.startswith("BAD"), (bad, t)
c.n += 1
c.s.sendall(b"t%d APPEND INBOX {999999999999}\r\n" % c.n)
l = c.line()
assert l.startswith(b"t%d NO" % c.n) or l.startswith(b"t%d BAD" % c.n), ("oversized literal", l)
u, t = c.ok("NOOP")
u, t = c.ok("ENABLE X-NOTHING")
assert not any(b"ENABLED X-NOTHING" in l for l in u), u
u, t = c.ok('ID ("name" "imap_commands.py")')
assert u and u[0].startswith(b"* ID "), u
print("CHECK bad input")

# imaplib, a real client library, over the same account.
M = imaplib.IMAP4("127.0.0.1", PORT)
M.login(USER, PASSWORD)
typ, data = M.select("Archive", readonly=True)
assert typ == "OK" and data == [b"1"], (typ, data)
typ, data = M.fetch("1", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
assert data[0][1] == b"Message-ID: <m3@remote.test>\r\n\r\n", data
typ, data = M.fetch("1", "(BODY.PEEK[])")
assert data[0][1] == M3, data
M.logout()
c.ok("LOGOUT")
print("ALL OK")
