//! SORT (RFC 5256, SORT=DISPLAY of RFC 5957), THREAD=ORDEREDSUBJECT/REFERENCES, ESORT
//! and PARTIAL (RFC 5267), SEARCHRES (RFC 5182) and the SENT* search keys' calendar dates
//! under the real master, from a plain socket client asserting exact response lines.
//!
//! The mailbox: seven messages with subjects that reduce to three base subjects
//! (`Re: [list] Fwd: subject (fwd)`, an RFC 2047-encoded `Re: [list] news`, `[list]
//! other`, `Fwd: news`), Date: headers in five time zones (one missing), internal dates
//! (file mtimes) in another order than the sequence, and References chains with a
//! cycle (3 and 4 name each other), a missing parent shared by two messages, and a
//! reply by subject only. Expected answers are worked out by hand from the RFC steps
//! (the comments say how).
//!
//! Bounded work: with one imapd process, a THREAD and a SORT over thousands of messages
//! with hostile References (6,000 ids each, all naming one chain) leave another session
//! answered within a second, and the answers are whole.

use postern_tests::imap_raw::ImapRaw;
use postern_tests::{
    Instance, add_user, auth_service, daemon_service, deliver_maildir, free_port, imap_instance, python,
};
use std::time::{Duration, Instant, SystemTime};

/// (headers, body length, internal date)
const MESSAGES: [(&str, usize, u64); 7] = [
    (
        "From: Zoe <zoe@x.test>\r\nTo: bob@x.test\r\nCc: carl@x.test\r\n\
         Subject: Re: [list] Fwd: subject (fwd)\r\nDate: Sun, 25 Mar 2007 00:00:00 +0200\r\n\
         Message-ID: <m1@x>\r\nReferences: <m2@x>",
        6000,
        1_200_000_500,
    ),
    (
        "From: adam@x.test\r\nSubject: subject\r\nDate: Sat, 24 Mar 2007 23:30:00 +0000\r\n\
         Message-ID: <m2@x>",
        1000,
        1_200_000_100,
    ),
    (
        "From: =?UTF-8?Q?=C3=84rger?= <ann@x.test>\r\nSubject: =?UTF-8?Q?Re=3A_=5Blist=5D_news?=\r\n\
         Date: Mon, 26 Mar 2007 01:00:00 -0500\r\nMessage-ID: <m3@x>\r\nReferences: <m4@x>",
        5000,
        1_200_000_300,
    ),
    (
        "From: Carl <carl@x.test>\r\nTo: Yves <alice@x.test>\r\nSubject: news\r\n\
         Date: Sun, 25 Mar 2007 23:00:00 -0300\r\nMessage-ID: <m4@x>\r\nReferences: <m3@x>",
        2000,
        1_200_000_400,
    ),
    (
        "From: bob@x.test\r\nSubject: [list] other\r\nMessage-ID: <m5@x>\r\n\
         In-Reply-To: <missing@x>",
        4000,
        // 25 Mar 2007 12:00:00 UTC: no Date:, so this is its sent date too
        1_174_824_000,
    ),
    (
        "From: \"\" <dan@x.test>\r\nSubject: Re: other\r\nDate: Tue, 27 Mar 2007 10:00:00 +0000\r\n\
         Message-ID: <m6@x>\r\nReferences: <missing@x>",
        3000,
        1_200_000_200,
    ),
    (
        "From: Eve <eve@x.test>\r\nTo: Zed <zed@x.test>\r\nSubject: Fwd: news\r\n\
         Date: Wed, 28 Mar 2007 09:00:00 +0100\r\nMessage-ID: <m7@x>",
        500,
        1_200_000_600,
    ),
];

fn instance() -> (Instance, u16) {
    let (mut inst, port) = imap_instance("alice", "Alice-Sort-Pw1");
    for (i, (headers, len, mtime)) in MESSAGES.iter().enumerate() {
        let mut msg = format!("{headers}\r\n\r\n").into_bytes();
        while msg.len() < headers.len() + len {
            msg.extend_from_slice(&[b'y'; 98]);
            msg.extend_from_slice(b"\r\n");
        }
        let name = format!("17000000{:02}.M{i}P1.test", i + 1);
        deliver_maildir(&inst, "alice", &name, &msg);
        let path = inst.root.path().join("var/mail/alice/new").join(&name);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(*mtime))
            .unwrap();
    }
    inst.start();
    (inst, port)
}

/// A plain IMAP client: `R.ok(b'...')` returns the untagged lines of a command that must
/// succeed, `R.reply(b'...')` the tagged reply without the tag.
const RAW: &str = r#"
import socket, re
class Raw:
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=30)
        self.f = self.s.makefile('rb')
        self.n = 0
        assert self.f.readline().startswith(b'* OK')
    def cmd(self, text):
        self.n += 1
        tag = b'x%d' % self.n
        self.s.sendall(tag + b' ' + text + b'\r\n')
        lines = []
        while True:
            l = self.f.readline()
            assert l, 'connection closed'
            l = l.rstrip(b'\r\n')
            if l.startswith(tag + b' '):
                return lines, l[len(tag) + 1:]
            lines.append(l)
    def ok(self, text):
        lines, done = self.cmd(text)
        assert done.startswith(b'OK'), (text, lines, done)
        return [l.decode() for l in lines]
    def reply(self, text):
        return self.cmd(text)[1].decode()
    def tag(self):
        return 'x%d' % (self.n + 1)
"#;

fn run(body: &str) {
    let (inst, port) = instance();
    let script = format!("{RAW}\nR = Raw({port})\nR.ok(b'LOGIN alice Alice-Sort-Pw1')\n{body}\nprint('done ok')\n");
    let out = python(&script);
    assert!(out.contains("done ok"), "{out}\n{}", inst.log());
}

#[test]
fn sort_by_every_key_with_time_zones_and_tricky_subjects() {
    run(r#"
caps = R.ok(b'CAPABILITY')[0]
for c in ['SORT', 'SORT=DISPLAY', 'ESORT', 'THREAD=ORDEREDSUBJECT', 'THREAD=REFERENCES', 'SEARCHRES', 'ESEARCH']:
    assert ' %s ' % c in caps + ' ', (c, caps)
R.ok(b'SELECT INBOX')
assert R.ok(b'UID SEARCH ALL') == ['* SEARCH 1 2 3 4 5 6 7']
def sort(q):
    return R.ok(b'SORT ' + q)
# internal dates: 5 (2007), then 2 6 3 4 1 7 by mtime
assert sort(b'(ARRIVAL) US-ASCII ALL') == ['* SORT 5 2 6 3 4 1 7']
assert sort(b'(REVERSE ARRIVAL) US-ASCII ALL') == ['* SORT 7 1 4 3 6 2 5']
# sent dates in UTC: 1 24th 22:00 (+0200), 2 24th 23:30, 5 25th 12:00 (no Date:, its
# internal date), 4 26th 02:00 (-0300), 3 26th 06:00 (-0500), 6 27th, 7 28th
assert sort(b'(DATE) UTF-8 ALL') == ['* SORT 1 2 5 4 3 6 7']
# base subjects: NEWS (3 decoded from RFC 2047, 4, 7), OTHER (5, 6), SUBJECT (1, 2)
assert sort(b'(SUBJECT) UTF-8 ALL') == ['* SORT 3 4 7 5 6 1 2']
assert sort(b'(SUBJECT REVERSE DATE) UTF-8 ALL') == ['* SORT 7 3 4 6 5 2 1']
assert sort(b'(REVERSE SUBJECT) UTF-8 ALL') == ['* SORT 1 2 5 6 3 4 7']
# addr-mailbox: adam ann bob carl dan eve zoe
assert sort(b'(FROM) UTF-8 ALL') == ['* SORT 2 3 5 4 6 7 1']
# display: ADAM@X.TEST, the decoded name of 3 (ÄRGER under i;unicode-casemap as Dovecot
# computes it: A and a combining diaeresis, after ADAM), BOB@X.TEST CARL DAN@X.TEST
# (empty name) EVE ZOE
assert sort(b'(DISPLAYFROM) UTF-8 ALL') == ['* SORT 2 3 5 4 6 7 1']
assert sort(b'(REVERSE DISPLAYFROM) UTF-8 ALL') == ['* SORT 1 7 6 4 5 3 2']
# no To: sorts first (empty), then alice (4) bob (1) zed (7); displayed: bob@ Yves Zed
assert sort(b'(TO) UTF-8 ALL') == ['* SORT 2 3 5 6 4 1 7']
assert sort(b'(DISPLAYTO) UTF-8 ALL') == ['* SORT 2 3 5 6 1 4 7']
assert sort(b'(CC) UTF-8 ALL') == ['* SORT 2 3 4 5 6 7 1']
assert sort(b'(SIZE) UTF-8 ALL') == ['* SORT 7 2 4 6 5 3 1']
assert sort(b'(REVERSE SIZE) UTF-8 ALL') == ['* SORT 1 3 5 6 4 2 7']
# with search keys (3's encoded subject matches decoded), and by UID
assert sort(b'(DATE) UTF-8 SUBJECT news') == ['* SORT 4 3 7']
assert R.ok(b'UID SORT (REVERSE DATE) UTF-8 2:4') == ['* SORT 3 4 2']
assert sort(b'(DATE) UTF-8 FROM nobody') == ['* SORT']
# ESORT (RFC 5267): MIN/MAX are the first and last in sort order, ALL keeps the order
t = R.tag()
assert R.ok(b'UID SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL') == [
    '* ESEARCH (TAG "%s") UID MIN 1 MAX 7 COUNT 7 ALL 1:2,5,4,3,6:7' % t]
t = R.tag()
assert R.ok(b'SORT RETURN (PARTIAL 2:4) (ARRIVAL) US-ASCII ALL') == ['* ESEARCH (TAG "%s") PARTIAL (2:4 2,6,3)' % t]
t = R.tag()
# RETURN after the charset, as imaptest's sort-partial writes it
assert R.ok(b'SORT (ARRIVAL) US-ASCII RETURN (PARTIAL 2:4) ALL') == ['* ESEARCH (TAG "%s") PARTIAL (2:4 2,6,3)' % t]
t = R.tag()
assert R.ok(b'SORT RETURN (PARTIAL 6:9) (ARRIVAL) US-ASCII ALL') == ['* ESEARCH (TAG "%s") PARTIAL (6:9 1,7)' % t]
t = R.tag()
assert R.ok(b'SORT RETURN () (SUBJECT) UTF-8 1:3') == ['* ESEARCH (TAG "%s") ALL 3,1:2' % t]
t = R.tag()
assert R.ok(b'SORT RETURN (COUNT) (SUBJECT) UTF-8 FROM nobody') == ['* ESEARCH (TAG "%s") COUNT 0' % t]
# bad input
assert R.reply(b'SORT (FOO) UTF-8 ALL').startswith('BAD')
assert R.reply(b'SORT () UTF-8 ALL').startswith('BAD')
assert R.reply(b'SORT (REVERSE) UTF-8 ALL').startswith('BAD')
assert R.reply(b'SORT DATE UTF-8 ALL').startswith('BAD')
assert R.reply(b'SORT (DATE)').startswith('BAD')
assert R.reply(b'SORT (DATE) UTF-8').startswith('BAD')
assert R.reply(b'SORT RETURN (PARTIAL 1:*) (DATE) UTF-8 ALL').startswith('BAD')
assert R.reply(b'SORT (DATE) KOI8-R ALL') == 'NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset'
"#);
}

#[test]
fn thread_both_algorithms_with_a_reference_cycle_and_a_missing_parent() {
    run(r#"
R.ok(b'SELECT INBOX')
# ORDEREDSUBJECT: groups by base subject, each led by its earliest; groups by that date:
# SUBJECT (1 then 2), OTHER (5 then 6), NEWS (4, 3, 7)
assert R.ok(b'THREAD ORDEREDSUBJECT UTF-8 ALL') == ['* THREAD (1 2)(5 6)(4 (3)(7))']
# REFERENCES: 1's parent is 2; 3 and 4 name each other, the first link (4 parent of 3)
# stays and the second would loop; 5 and 6 share a missing parent, a dummy kept at the
# top; 7 (Fwd: news) has no references and joins 4's thread by subject (step 5)
assert R.ok(b'THREAD REFERENCES UTF-8 ALL') == ['* THREAD (2 1)((5)(6))(4 (3)(7))']
assert R.ok(b'THREAD REFERENCES US-ASCII 5:7') == ['* THREAD ((5)(6))(7)']
assert R.ok(b'THREAD REFERENCES UTF-8 FROM nobody') == ['* THREAD']
# after 2 is expunged, 1's parent is a dummy with one child: promoted to the top
R.ok(b'STORE 2 +FLAGS.SILENT (\\Deleted)')
R.ok(b'EXPUNGE')
assert R.ok(b'UID THREAD REFERENCES UTF-8 ALL') == ['* THREAD (1)((5)(6))(4 (3)(7))']
assert R.ok(b'THREAD REFERENCES UTF-8 ALL') == ['* THREAD (1)((4)(5))(3 (2)(6))']
assert R.ok(b'UID THREAD ORDEREDSUBJECT UTF-8 ALL') == ['* THREAD (1)(5 6)(4 (3)(7))']
assert R.reply(b'THREAD FOO UTF-8 ALL').startswith('BAD')
assert R.reply(b'THREAD REFERENCES UTF-8').startswith('BAD')
assert R.reply(b'THREAD REFERENCES BIG5 ALL').startswith('NO [BADCHARSET')
"#);
}

#[test]
fn sent_dates_are_the_headers_own_calendar_dates() {
    run(r#"
R.ok(b'SELECT INBOX')
# 1 is 25 Mar in +0200 (24 Mar in UTC), 4 is 25 Mar in -0300 (26 Mar in UTC); 5 has no
# Date: and matches no SENT* key
assert R.ok(b'SEARCH SENTON 25-Mar-2007') == ['* SEARCH 1 4']
assert R.ok(b'SEARCH SENTBEFORE 25-Mar-2007') == ['* SEARCH 2']
assert R.ok(b'SEARCH SENTBEFORE 26-Mar-2007') == ['* SEARCH 1 2 4']
assert R.ok(b'SEARCH SENTSINCE 26-Mar-2007') == ['* SEARCH 3 6 7']
assert R.ok(b'SEARCH SENTON 26-Mar-2007') == ['* SEARCH 3']
assert R.ok(b'SEARCH NOT SENTSINCE 1-Jan-1990') == ['* SEARCH 5']
t = R.tag()
assert R.ok(b'UID SEARCH RETURN (MIN MAX COUNT ALL) SENTON 25-Mar-2007') == [
    '* ESEARCH (TAG "%s") UID MIN 1 MAX 4 COUNT 2 ALL 1,4' % t]
"#);
}

#[test]
fn searchres_saves_a_result_for_later_commands() {
    run(r#"
R.ok(b'SELECT INBOX')
# SAVE alone: no untagged answer
assert R.ok(b'SEARCH RETURN (SAVE) SENTSINCE 26-Mar-2007') == []
assert R.ok(b'FETCH $ (UID)') == ['* 3 FETCH (UID 3)', '* 6 FETCH (UID 6)', '* 7 FETCH (UID 7)']
assert R.ok(b'SEARCH $ FROM eve') == ['* SEARCH 7']
assert R.ok(b'UID SEARCH UID $') == ['* SEARCH 3 6 7']
assert R.ok(b'SEARCH OR $ 1') == ['* SEARCH 1 3 6 7']
# SAVE with MIN: only the minimum is saved (RFC 5182 §2.4)
t = R.tag()
assert R.ok(b'SEARCH RETURN (SAVE MIN) FROM x.test') == ['* ESEARCH (TAG "%s") MIN 1' % t]
assert R.ok(b'SEARCH $') == ['* SEARCH 1']
# SORT can save too; the saved result is a set (its order is not kept)
assert R.ok(b'SORT RETURN (SAVE) (REVERSE DATE) UTF-8 2:3') == []
assert R.ok(b'UID FETCH $ (UID)') == ['* 2 FETCH (UID 2)', '* 3 FETCH (UID 3)']
# expunged messages leave the saved result; sequence numbers follow
R.ok(b'STORE $ FLAGS (\\Seen)')
R.ok(b'STORE 2 +FLAGS.SILENT (\\Deleted)')
R.ok(b'EXPUNGE')
assert R.ok(b'FETCH $ (UID)') == ['* 2 FETCH (UID 3)']
R.ok(b'COPY $ Trash')
# a failing SEARCH ... RETURN (SAVE) empties it
assert R.reply(b'SEARCH RETURN (SAVE) BOGUS').startswith('BAD')
assert R.ok(b'SEARCH $') == ['* SEARCH']
assert R.ok(b'FETCH $ (UID)') == []
# a new selection starts with an empty one
R.ok(b'SEARCH RETURN (SAVE) ALL')
assert R.ok(b'SEARCH $') == ['* SEARCH 1 2 3 4 5 6']
R.ok(b'SELECT INBOX')
assert R.ok(b'SEARCH $') == ['* SEARCH']
R.ok(b'SEARCH RETURN (SAVE) 1:2')
R.ok(b'STORE $ +FLAGS.SILENT (\\Deleted)')
R.ok(b'UID EXPUNGE $')
assert R.ok(b'UID SEARCH ALL') == ['* SEARCH 4 5 6 7']
"#);
}

#[test]
fn sort_and_thread_over_hostile_references_leave_other_sessions_served() {
    const N: usize = 200;
    let port = free_port();
    let services = format!(
        "{}{}",
        auth_service(),
        daemon_service("imap", "inet", &format!("127.0.0.1:{port}"), "imapd", "maxproc = 1")
    );
    let mut inst = Instance::new(&services, &[]);
    add_user(&inst, "alice", "Alice-Sort-Pw1");
    // one message of a 100 KB References header (over the header cache's size, so every
    // command reads and parses it again), hard-linked N times
    let refs: Vec<String> = (0..6000).map(|i| format!("<chain-{i}@x.test>")).collect();
    let msg = format!(
        "From: a@x.test\r\nSubject: Re: the same\r\nMessage-ID: <same@x.test>\r\nReferences: {}\r\n\r\nbody\r\n",
        refs.join("\r\n ")
    );
    let new = inst.root.path().join("var/mail/alice/new");
    std::fs::create_dir_all(&new).unwrap();
    let first = new.join("1600000000.M0P1.test");
    std::fs::write(&first, &msg).unwrap();
    for i in 1..N {
        std::fs::hard_link(&first, new.join(format!("1600000000.M{i}P1.test"))).unwrap();
    }
    // (and hands the mailbox to the daemons' account)
    deliver_maildir(&inst, "alice", "1600000001.M0P1.test", b"Subject: last\r\n\r\nx\r\n");
    inst.start();
    let mut a = ImapRaw::login(port, "alice", "Alice-Sort-Pw1");
    let mut b = ImapRaw::login(port, "alice", "Alice-Sort-Pw1");
    assert!(a.cmd("s", "SELECT INBOX").contains("\r\ns OK"));
    assert!(b.cmd("s", "SELECT INBOX").contains("\r\ns OK"));
    for (tag, command) in [
        ("t", "THREAD REFERENCES UTF-8 ALL"),
        ("o", "SORT (SUBJECT DATE) UTF-8 ALL"),
    ] {
        let started = Instant::now();
        a.send(format!("{tag} {command}\r\n").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        let asked = Instant::now();
        let done = b.cmd("n", "NOOP");
        let b_took = asked.elapsed();
        let answer = String::from_utf8(a.until_bytes(tag)).unwrap();
        let a_took = started.elapsed();
        assert!(done.contains("n OK"), "{done}");
        let lines: Vec<&str> = answer.lines().collect();
        assert_eq!(lines.len(), 2, "{answer}");
        assert!(lines[1].starts_with(&format!("{tag} OK")), "{answer}");
        eprintln!("{command}: {a_took:?}; the other session's NOOP {b_took:?}");
        assert!(
            b_took < Duration::from_secs(1),
            "{command}: the other session waited {b_took:?}"
        );
        let line = lines[0];
        if tag == "t" {
            // the duplicates of one Message-ID are messages of their own, all children of
            // the chain's last (missing) id: one dummy at the top holding them, then the
            // message with no references
            let mut want = String::from("* THREAD (");
            for i in 1..=N {
                want.push_str(&format!("({i})"));
            }
            want.push_str(&format!(")({})", N + 1));
            assert_eq!(line, want);
        } else {
            let want: Vec<String> = std::iter::once(N + 1).chain(1..=N).map(|i| i.to_string()).collect();
            assert_eq!(line, format!("* SORT {}", want.join(" ")));
        }
    }
}
