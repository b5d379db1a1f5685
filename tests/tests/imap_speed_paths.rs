//! imapd's fast paths against the slow truth, under the real master with imaplib: whole
//! bodies (`BODY[]`, `BODY.PEEK[]`, `RFC822`) converted from LF to CRLF as they are
//! written give exactly the bytes of the files with every bare LF made CRLF, over more
//! than one output chunk and beside the general section path; SEARCH on header fields,
//! answered from the folder's header cache, gives the same UIDs as matching the headers
//! FETCH reads from the files — cold, warm, after flag changes, new deliveries, an
//! expunge and a damaged cache file.

use postern_tests::{Instance, deliver_maildir, imap_instance, python};

fn instance() -> (Instance, u16) {
    let (mut inst, port) = imap_instance("alice", "Alice-Speed-Pw1");
    // the Maildir, owned as a delivery agent leaves it; the script adds the rest
    deliver_maildir(&inst, "alice", "1600000000.M0P0.test", b"Subject: zero\n\nx\n");
    inst.start();
    (inst, port)
}

fn run(port: u16, inst: &Instance, body: &str) {
    let md = inst.root.path().join("var/mail/alice");
    let script = format!(
        "PORT = {port}\nMAILDIR = {:?}\n{PRELUDE}\n{body}\nprint('done ok')\n",
        md.display().to_string()
    );
    let out = python(&script);
    assert!(out.contains("done ok"), "{out}\n{}", inst.log());
}

/// Delivery into new/ as an agent does it, and the CRLF form IMAP must send.
const PRELUDE: &str = r#"
import imaplib, os, re
seq = [0]
def deliver(data, folder=''):
    seq[0] += 1
    d = os.path.join(MAILDIR, folder)
    name = '1700000000.M%dP99.test' % seq[0]
    with open(os.path.join(d, 'tmp', name), 'wb') as f:
        f.write(data)
    os.rename(os.path.join(d, 'tmp', name), os.path.join(d, 'new', name))
def crlf(b):
    return re.sub(rb'(?<!\r)\n', b'\r\n', b)
def login():
    M = imaplib.IMAP4('127.0.0.1', PORT)
    M.login('alice', 'Alice-Speed-Pw1')
    return M
"#;

const BODIES: &str = r#"
ends = [b'\n', b'\r\n']
msgs = {}
for i in range(300):
    e = ends[i % 2]
    lines = [b'Subject: m%03d' % i, b'From: x@example.test', b''] + [b'line %d of %d %s' % (j, i, b'y' * (20 + i % 50)) for j in range(100)]
    raw = e.join(lines) + e
    if i % 5 == 0:
        raw = raw.replace(b'line 3', b'mixed\r\nend\nand\rcr')      # mixed line ends, a bare CR
    if i % 7 == 0:
        raw = raw.rstrip(b'\r\n')                                    # no final line end
    msgs[b'm%03d' % i] = raw
    deliver(raw)
M = login()
typ, data = M.select('INBOX')
assert data == [b'301'], data
def subject(b):
    return re.search(rb'Subject: (\w+)', b).group(1)
total = 0
typ, data = M.fetch('2:*', '(RFC822.SIZE BODY.PEEK[])')
got = [d for d in data if isinstance(d, tuple)]
assert len(got) == 300, len(got)
for meta, body in got:
    want = crlf(msgs[subject(body)])
    assert body == want, (meta, body[:80], want[:80])
    assert b'RFC822.SIZE %d ' % len(want) in meta, meta
    total += len(body)
assert total > 1024 * 1024, total    # more than one output chunk
# RFC822 (sets \Seen) and BODY[] beside FLAGS: the same bytes
typ, data = M.uid('FETCH', '2:*', '(FLAGS RFC822)')
got = [d for d in data if isinstance(d, tuple)]
assert len(got) == 300 and all(b == crlf(msgs[subject(b)]) for _, b in got)
typ, data = M.fetch('2:4', '(FLAGS)')
assert all(b'\\Seen' in d for d in data), data
typ, data = M.fetch('2:11', '(BODY[])')
got = [d for d in data if isinstance(d, tuple)]
assert len(got) == 10 and all(b == crlf(msgs[subject(b)]) for _, b in got)
# the general section path (a partial, BODYSTRUCTURE) gives the same bytes
typ, data = M.fetch('2:21', '(BODYSTRUCTURE BODY.PEEK[]<10.20> BODY.PEEK[])')
got = [d for d in data if isinstance(d, tuple)]
assert len(got) == 40, len(got)
for k in range(0, 40, 2):
    part, whole = got[k][1], got[k + 1][1]
    want = crlf(msgs[subject(whole)])
    assert whole == want and part == want[10:30], (part, want[10:30])
M.logout()
"#;

#[test]
fn whole_bodies_are_exact_crlf_bytes() {
    let (mut inst, port) = instance();
    run(port, &inst, BODIES);
    inst.stop();
}

const SEARCH: &str = r#"
import random
rnd = random.Random(5)
words = [b'alpha', b'beta', b'gamma', b'Alpha beta']
def make(i):
    sub = words[i % 4] + b' %d' % i
    hdr = [b'Subject: ' + sub, b'From: %s <u%d@example.test>' % (rnd.choice([b'Carol', b'Dave', b'Erin']), i),
           b'To: bob%d@example.test' % (i % 3)]
    if i % 4 == 1:
        hdr.append(b'Cc: dave@example.test')
    if i % 6 == 0:
        hdr.append(b'X-Tag: red\n\tand blue')                       # folded
    if i % 9 == 0:
        hdr[0] = b'Subject: part one\r\n part two ' + sub          # folded subject
    if i == 13:
        hdr.append(b'X-Big: ' + b'q' * 20000)                       # over the cache's bound
    e = b'\r\n' if i % 2 else b'\n'
    return e.join(hdr) + e + e + b'body alpha text' + e
for i in range(60):
    deliver(make(i))
M = login()
M.select('INBOX')
def fields(h):
    h = re.sub(rb'\r\n([ \t])', rb'\1', h)
    out = []
    for line in h.split(b'\r\n'):
        if b':' in line and line[:1] not in (b' ', b'\t'):
            n, v = line.split(b':', 1)
            out.append((n.strip().lower(), v.strip().lower()))
    return out
def has(h, name, needle):
    return any(n == name and needle.lower() in v for n, v in fields(h))
def truth():
    typ, data = M.uid('FETCH', '1:*', '(UID BODY.PEEK[HEADER])')
    hs = {}
    for meta, h in [d for d in data if isinstance(d, tuple)]:
        hs[int(re.search(rb'UID (\d+)', meta).group(1))] = h
    typ, data = M.uid('FETCH', '1:*', '(UID FLAGS)')
    seen = {int(re.search(rb'UID (\d+)', d).group(1)): b'\\Seen' in d for d in data}
    return hs, seen
checks = [
    (('SUBJECT', 'alpha'), lambda h, s: has(h, b'subject', b'alpha')),
    (('SUBJECT', '"part two"'), lambda h, s: has(h, b'subject', b'part two')),
    (('SUBJECT', '"one part"'), lambda h, s: has(h, b'subject', b'one part')),
    (('FROM', 'carol'), lambda h, s: has(h, b'from', b'carol')),
    (('TO', 'bob1@'), lambda h, s: has(h, b'to', b'bob1@')),
    (('CC', 'dave'), lambda h, s: has(h, b'cc', b'dave')),
    (('HEADER', 'X-Tag', '"red\tand"'), lambda h, s: has(h, b'x-tag', b'red\tand')),
    (('HEADER', 'X-Tag', '"red and"'), lambda h, s: has(h, b'x-tag', b'red and')),
    (('HEADER', 'X-Tag', 'blue'), lambda h, s: has(h, b'x-tag', b'blue')),
    (('HEADER', 'X-Big', 'qqq'), lambda h, s: has(h, b'x-big', b'qqq')),
    (('OR', 'SUBJECT', 'beta', 'FROM', 'erin'), lambda h, s: has(h, b'subject', b'beta') or has(h, b'from', b'erin')),
    (('NOT', 'SUBJECT', 'alpha'), lambda h, s: not has(h, b'subject', b'alpha')),
    (('SUBJECT', 'gamma', 'UNSEEN'), lambda h, s: has(h, b'subject', b'gamma') and not s),
    (('SUBJECT', 'body'), lambda h, s: False),
]
def compare(stage):
    hs, seen = truth()
    for args, pred in checks:
        typ, data = M.uid('SEARCH', *args)
        got = sorted(int(x) for x in data[0].split())
        want = sorted(u for u, h in hs.items() if pred(h, seen[u]))
        assert got == want, (stage, args, got, want)
    return hs
hs = compare('cold')
cache = os.path.join(MAILDIR, 'postern-headers')
text = open(cache, 'rb').read()
cached = set(int(m) for m in re.findall(rb'(?m)^(\d+) \d+$', text))
big = [u for u, h in hs.items() if b'X-Big' in h]
assert len(big) == 1 and cached == set(hs) - set(big), (sorted(cached), big)
compare('warm')
M.uid('STORE', '1:30', '+FLAGS', '(\\Seen)')
compare('after a flag change')
deliver(b'Subject: gamma late\nFrom: Erin <e@example.test>\n\nx\n')
deliver(b'Subject: alpha late\r\nCc: dave@example.test\r\n\r\nx\r\n')
M.noop()
hs = compare('after new deliveries')
assert len(hs) == 63, len(hs)
M.uid('STORE', '2:20', '+FLAGS', '(\\Deleted)')
M.expunge()
compare('after an expunge')
with open(cache, 'r+b') as f:
    f.truncate(len(text) // 2)
    f.seek(0, 2)
    f.write(b'\n99 5\nxx')
compare('after a damaged cache')
M.logout()
"#;

#[test]
fn header_search_from_the_cache_matches_the_files() {
    let (mut inst, port) = instance();
    run(port, &inst, SEARCH);
    inst.stop();
}
