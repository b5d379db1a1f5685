//! imapd's QUOTA (RFC 9208), UIDONLY (RFC 9586), CONTEXT=SEARCH / CONTEXT=SORT
//! (RFC 5267), CATENATE (RFC 4469) and NOTIFY (RFC 5465) under the real master, with auth,
//! driven from Python over plain sockets so exact response lines are asserted — CONTEXT,
//! UIDONLY and NOTIFY with a second session delivering, changing flags, expunging and
//! creating folders, and an idling one told.

use postern_tests::Instance;
use postern_tests::imap_script;

/// The test's Python helpers: alice's quota usage as local delivery and imapd count it
/// (S= in the file name, else the file's size, in new/ and cur/ of every folder), in
/// units of 1024 bytes rounded up; a message of exactly `n` bytes; a LITERAL+ APPEND;
/// reading an unsolicited line.
const PRELUDE: &str = r#"
def usage_kib():
    total = 0
    dirs = [MAILDIR] + [os.path.join(MAILDIR, d) for d in os.listdir(MAILDIR) if d.startswith('.') and os.path.isdir(os.path.join(MAILDIR, d, 'cur'))]
    for d in dirs:
        for sub in ('new', 'cur'):
            for f in os.listdir(os.path.join(d, sub)):
                if f.startswith('.'):
                    continue
                m = re.search(r',S=(\d+)', f)
                total += int(m.group(1)) if m else os.path.getsize(os.path.join(d, sub, f))
    return (total + 1023) // 1024
def message(n, subject='q'):
    m = b'Subject: ' + subject.encode() + b'\r\n\r\n'
    return m + b'x' * (n - len(m) - 2) + b'\r\n'
def append(r, box, msg, flags=b''):
    return r.cmd(b'APPEND ' + box + b' ' + flags + b'{%d+}\r\n' % len(msg) + msg)
def eq(got, want):
    assert got == want, (got, want)
def unsolicited(r):
    return r.f.readline().rstrip(b'\r\n').decode()
"#;

/// Runs `body` against a fresh instance ([`imap_script::run_with`]), `quota` bytes for
/// alice when given.
fn run(body: &str, quota: Option<u64>) -> Instance {
    imap_script::run_with("Alice-Ext3-Pw1", PRELUDE, body, |inst| {
        if let Some(q) = quota {
            let out = inst.postern(&["user", "quota", "alice", &q.to_string()]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    })
}

const QUOTA: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext3-Pw1')
caps = R.ok(b'CAPABILITY')[0]
assert ' QUOTA ' in caps and ' QUOTA=RES-STORAGE' in caps and 'QUOTASET' not in caps, caps
# one quota root "", in units of 1024 bytes: 6000 bytes is a limit of 5
used = usage_kib()
assert used == 1, used
eq(R.ok(b'GETQUOTAROOT INBOX'), ['* QUOTAROOT INBOX ""', '* QUOTA "" (STORAGE 1 5)'])
eq(R.ok(b'GETQUOTAROOT Trash'), ['* QUOTAROOT Trash ""', '* QUOTA "" (STORAGE 1 5)'])
eq(R.ok(b'GETQUOTA ""'), ['* QUOTA "" (STORAGE 1 5)'])
eq(R.reply(b'GETQUOTA "User quota"'), 'NO [NONEXISTENT] No such quota root')
eq(R.reply(b'GETQUOTAROOT Nowhere'), 'NO [NONEXISTENT] No such mailbox')
eq(R.reply(b'GETQUOTA'), 'BAD GETQUOTA needs one quota root')
eq(R.reply(b'GETQUOTAROOT INBOX Trash'), 'BAD GETQUOTAROOT needs one mailbox name')
# SETQUOTA: well-formed, refused; malformed, BAD
eq(R.reply(b'SETQUOTA "" (STORAGE 512)'), 'NO [NOPERM] Quotas are set by the administrator (postern user quota)')
eq(R.reply(b'SETQUOTA "" (STORAGE many)'), 'BAD Invalid SETQUOTA arguments')
eq(R.reply(b'SETQUOTA "" (STORAGE)'), 'BAD Invalid SETQUOTA arguments')
eq(R.reply(b'SETQUOTA ""'), 'BAD SETQUOTA needs a quota root and a list of limits')
# an APPEND that fits raises the usage; the next does not fit: OVERQUOTA, nothing written
lines, done = append(R, b'INBOX', message(3000))
assert done.startswith(b'OK [APPENDUID'), done
used = usage_kib()
assert used == 4, used
eq(R.ok(b'GETQUOTA ""'), ['* QUOTA "" (STORAGE 4 5)'])
lines, done = append(R, b'INBOX', message(3000))
assert done == b'NO [OVERQUOTA] Quota exceeded', done
eq(usage_kib(), 4)
R.ok(b'SELECT INBOX')
eq(R.reply(b'COPY 3 Trash'), 'NO [OVERQUOTA] Quota exceeded')
# DELETED-STORAGE: what an EXPUNGE would free
eq(R.ok(b'STATUS INBOX (DELETED DELETED-STORAGE)'), ['* STATUS INBOX (DELETED 0 DELETED-STORAGE 0)'])
R.ok(b'STORE 3 +FLAGS.SILENT (\\Deleted)')
eq(R.ok(b'STATUS INBOX (DELETED DELETED-STORAGE)'), ['* STATUS INBOX (DELETED 1 DELETED-STORAGE 3)'])
eq(R.ok(b'STATUS Trash (DELETED-STORAGE)'), ['* STATUS Trash (DELETED-STORAGE 0)'])
# MOVE adds nothing: it works over quota too
lines, done = R.cmd(b'MOVE 3 Trash')
assert done.startswith(b'OK'), done
eq(R.ok(b'STATUS Trash (DELETED-STORAGE MESSAGES)'), ['* STATUS Trash (DELETED-STORAGE 3 MESSAGES 1)'])
"#;

#[test]
fn quota_roots_usage_setquota_refused_and_deleted_storage() {
    run(QUOTA, Some(6000));
}

const NO_QUOTA_UIDONLY: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext3-Pw1')
# an account without a quota has no quota root
eq(R.ok(b'GETQUOTAROOT INBOX'), ['* QUOTAROOT INBOX'])
eq(R.reply(b'GETQUOTA ""'), 'NO [NONEXISTENT] No such quota root')
assert ' UIDONLY' in R.ok(b'CAPABILITY')[0]
eq(R.ok(b'ENABLE UIDONLY'), ['* ENABLED UIDONLY'])
eq(R.ok(b'ENABLE UIDONLY'), ['* ENABLED'])
R.ok(b'SELECT INBOX')
REQ = 'BAD [UIDREQUIRED] Message sequence numbers are not allowed after ENABLE UIDONLY'
for c in [b'FETCH 1 FLAGS', b'STORE 1 +FLAGS (\\Seen)', b'SEARCH ALL', b'COPY 1 Trash', b'MOVE 1 Trash',
          b'SORT (DATE) UTF-8 ALL', b'THREAD REFERENCES UTF-8 ALL', b'UID SEARCH 1:2', b'UID SEARCH NOT 2']:
    eq(R.reply(c), REQ)
# by UID: UIDFETCH responses, named by UID
eq(R.ok(b'UID SEARCH UID 1:2'), ['* SEARCH 1 2'])
eq(R.ok(b'UID FETCH 1:* (FLAGS)'), ['* 1 UIDFETCH (UID 1 FLAGS (\\Recent))', '* 2 UIDFETCH (UID 2 FLAGS (\\Seen \\Recent))'])
eq(R.ok(b'UID STORE 1 +FLAGS (\\Flagged)'), ['* 1 UIDFETCH (UID 1 FLAGS (\\Flagged \\Recent))'])
R.ok(b'UID STORE 1 -FLAGS.SILENT (\\Flagged)')
# another session (sequence numbers as ever) delivers and expunges: VANISHED, not EXPUNGE
S = Raw(PORT)
S.ok(b'LOGIN alice Alice-Ext3-Pw1')
S.ok(b'SELECT INBOX')
eq(S.ok(b'FETCH 1 (FLAGS)'), ['* 1 FETCH (FLAGS ())'])
append(S, b'INBOX', message(200, 'third'))
S.ok(b'UID STORE 2 +FLAGS.SILENT (\\Deleted)')
S.ok(b'EXPUNGE')
eq(R.ok(b'NOOP'), ['* VANISHED 2', '* 2 EXISTS', '* 1 RECENT'])
S.ok(b'UID STORE 1 +FLAGS.SILENT (\\Answered)')
eq(R.ok(b'NOOP'), ['* 1 UIDFETCH (UID 1 FLAGS (\\Answered \\Recent))'])
# its own expunge too
R.ok(b'UID STORE 3 +FLAGS.SILENT (\\Deleted)')
eq(R.ok(b'UID EXPUNGE 3'), ['* VANISHED 3'])
eq(R.ok(b'UID FETCH 1:* (UID RFC822.SIZE)'), ['* 1 UIDFETCH (UID 1 RFC822.SIZE 55)'])
# QRESYNC's sequence-match data names sequence numbers too
R.ok(b'ENABLE QRESYNC')
eq(R.reply(b'SELECT INBOX (QRESYNC (1 1 1:9 (1:2 1:2)))'), REQ)
# refused before the mailbox changes: still selected
got = R.ok(b'UID FETCH 1 (FLAGS)')
assert len(got) == 1 and got[0].startswith('* 1 UIDFETCH (UID 1 FLAGS (\\Answered \\Recent) MODSEQ ('), got
R.ok(b'SELECT INBOX (QRESYNC (1 1 1:9))')
"#;

#[test]
fn uidonly_names_messages_by_uid_and_refuses_sequence_numbers() {
    run(NO_QUOTA_UIDONLY, None);
}

const CONTEXT: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext3-Pw1')
caps = R.ok(b'CAPABILITY')[0]
assert ' CONTEXT=SEARCH' in caps and ' CONTEXT=SORT' in caps, caps
R.ok(b'SELECT INBOX')
# INBOX: 1 "first" unseen, 2 "second" seen
eq(R.ok(b'UID SEARCH RETURN (UPDATE ALL) UNSEEN'), ['* ESEARCH (TAG "x4") UID ALL 1'])
eq(R.ok(b'UID SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 ALL'), ['* ESEARCH (TAG "x5") UID ALL 2,1'])
eq(R.ok(b'SEARCH RETURN (UPDATE COUNT) SEEN'), ['* ESEARCH (TAG "x6") COUNT 1'])
# another session delivers: "middle" sorts between the two
S = Raw(PORT)
S.ok(b'LOGIN alice Alice-Ext3-Pw1')
append(S, b'INBOX', message(100, 'middle'))
eq(R.ok(b'NOOP'), ['* 3 EXISTS', '* 3 RECENT',
    '* ESEARCH (TAG "x4") UID ADDTO (0 3)', '* ESEARCH (TAG "x5") UID ADDTO (2 3)'])
# ... changes flags: 1 leaves UNSEEN and joins SEEN (by sequence number)
S.ok(b'SELECT INBOX')
S.ok(b'UID STORE 1 +FLAGS.SILENT (\\Seen)')
eq(R.ok(b'NOOP'), ['* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))',
    '* ESEARCH (TAG "x4") UID REMOVEFROM (0 1)', '* ESEARCH (TAG "x6") ADDTO (0 1)'])
# ... expunges 2: the removals come before the EXPUNGE, numbered as the client knows them
S.ok(b'UID STORE 2 +FLAGS.SILENT (\\Deleted)')
S.ok(b'EXPUNGE')
eq(R.ok(b'NOOP'), ['* ESEARCH (TAG "x5") UID REMOVEFROM (1 2)', '* ESEARCH (TAG "x6") REMOVEFROM (0 2)',
    '* 2 EXPUNGE'])
# CANCELUPDATE ends a context; an unknown tag is BAD
R.ok(b'CANCELUPDATE "x4"')
eq(R.reply(b'CANCELUPDATE "x4"'), 'BAD No update context x4')
eq(R.reply(b'CANCELUPDATE'), 'BAD CANCELUPDATE needs a tag')
S.ok(b'UID STORE 3 +FLAGS.SILENT (\\Seen)')
eq(R.ok(b'NOOP'), ['* 2 FETCH (UID 3 FLAGS (\\Seen \\Recent))', '* ESEARCH (TAG "x6") ADDTO (0 2)'])
# an idling session is told as it happens (S not selected: the new message is R's \\Recent)
S.ok(b'UNSELECT')
R.n += 1
R.s.sendall(b'x%d IDLE\r\n' % R.n)
eq(unsolicited(R), '+ idling')
append(S, b'INBOX', message(100, 'zulu'), b'(\\Seen) ')
got = [unsolicited(R) for _ in range(4)]
eq(got, ['* 3 EXISTS', '* 3 RECENT', '* ESEARCH (TAG "x5") UID ADDTO (1 4)', '* ESEARCH (TAG "x6") ADDTO (0 3)'])
R.s.sendall(b'DONE\r\n')
eq(unsolicited(R), 'x%d OK Idle completed' % R.n)
# bad input
eq(R.reply(b'SEARCH RETURN (UPDATE MIN) ALL'), 'BAD UPDATE cannot be combined with MIN, MAX, SAVE or PARTIAL')
eq(R.reply(b'SEARCH RETURN (UPDATE SAVE) ALL'), 'BAD UPDATE cannot be combined with MIN, MAX, SAVE or PARTIAL')
eq(R.reply(b'SEARCH RETURN (UPDATE) 1:2'), 'BAD UPDATE cannot be used with message sequence numbers as keys')
eq(R.reply(b'SEARCH RETURN (BOGUS) ALL'), 'BAD Unknown RETURN option')
eq(R.reply(b'SORT RETURN (UPDATE) (FOO) UTF-8 ALL'), 'BAD Unknown sort criterion FOO')
eq(R.reply(b'SEARCH CHARSET KOI8-R ALL'), 'NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset')
# PARTIAL of a sort
got = R.ok(b'UID SORT RETURN (PARTIAL 1:2) (SUBJECT) UTF-8 ALL')
eq(got, ['* ESEARCH (TAG "x%d") UID PARTIAL (1:2 1,3)' % R.n])
# at most 8 contexts: then NOUPDATE, and the search answers anyway
for i in range(6):
    R.ok(b'UID SEARCH RETURN (UPDATE) DELETED')
got = R.ok(b'UID SEARCH RETURN (UPDATE) DELETED')
eq(got, ['* NO [NOUPDATE "x%d"] Too many update contexts, this result is not updated' % R.n,
    '* ESEARCH (TAG "x%d") UID' % R.n])
# a new SELECT ends them all
R.ok(b'SELECT INBOX')
S.ok(b'SELECT INBOX')
S.ok(b'UID STORE 1 +FLAGS.SILENT (\\Deleted)')
eq(R.ok(b'NOOP'), ['* 1 FETCH (UID 1 FLAGS (\\Seen \\Deleted))'])
"#;

#[test]
fn context_updates_follow_another_sessions_deliveries_flags_and_expunges() {
    run(CONTEXT, None);
}

const CATENATE: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext3-Pw1')
assert ' CATENATE' in R.ok(b'CAPABILITY')[0]
v = int(re.search(r'UIDVALIDITY (\d+)', R.ok(b'STATUS INBOX (UIDVALIDITY)')[0]).group(1))
R.ok(b'CREATE Work')
R.ok(b'SELECT INBOX')
def body(box_uid):
    R.ok(b'SELECT Work')
    got = R.ok(b'UID FETCH %d BODY.PEEK[]' % box_uid)
    R.ok(b'SELECT INBOX')
    return got[0].split('}\r\n', 1)[1].rsplit(')', 1)[0]
hdr1 = R.ok(b'FETCH 1 BODY.PEEK[HEADER]')[0].split('}\r\n', 1)[1].rsplit(')', 1)[0]
# a header from a URL and a text
lines, done = R.cmd(b'APPEND Work CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" TEXT {7+}\r\nbody1\r\n)')
assert done.decode() == 'OK [APPENDUID %s 1] Append completed' % re.search(r'APPENDUID (\d+)', done.decode()).group(1), done
eq(body(1), hdr1 + 'body1\r\n')
# with the right UIDVALIDITY, a TEXT section, a text, a PARTIAL, %-encoding; flags too
url = b'/INBOX;UIDVALIDITY=%d/;UID=2/;SECTION=TEXT' % v
lines, done = R.cmd(b'APPEND Work (\\Seen) CATENATE (TEXT {19+}\r\nSubject: built\r\n\r\nA URL "' + url + b'" TEXT {6+}\r\nmore\r\n URL "/%49NBOX/;UID=1/;PARTIAL=0.4")')
assert done.startswith(b'OK [APPENDUID'), done
eq(body(2), 'Subject: built\r\n\r\nAthere\r\nmore\r\nFrom')
R.ok(b'SELECT Work')
eq(R.ok(b'FETCH 2 FLAGS'), ['* 2 FETCH (FLAGS (\\Seen))'])
R.ok(b'SELECT INBOX')
# MULTIAPPEND of two built messages
lines, done = R.cmd(b'APPEND Work CATENATE (URL "/INBOX/;UID=2") CATENATE (TEXT {9+}\r\nHi: x\r\n\r\n)')
assert done.startswith(b'OK [APPENDUID') and done.decode().split()[3] == '3:4]', done
# bad URLs: NO [BADURL], nothing appended
for url, why in [
    (b'/INBOX;UIDVALIDITY=%d/;UID=1' % (v + 1), "UIDVALIDITY is not the mailbox's"),
    (b'/INBOX/;UID=99', 'no such message'),
    (b'/INBOX/;UID=1/;SECTION=3', 'no such section'),
    (b'/Nope/;UID=1', 'no such mailbox'),
    (b'imap://alice@localhost/INBOX/;UID=1', 'only URLs relative to this server are accepted (no URLAUTH)'),
    (b'/INBOX/;UID=x', 'bad UID'),
    (b'INBOX', 'not an IMAP URL (/mailbox/;UID=n)'),
]:
    got = R.reply(b'APPEND Work CATENATE (TEXT {5+}\r\nx\r\n\r\n URL "' + url + b'")')
    eq(got, 'NO [BADURL %s] %s' % (url.decode(), why))
eq(R.ok(b'STATUS Work (MESSAGES)'), ['* STATUS Work (MESSAGES 4)'])
# the destination first: TRYCREATE whatever the URLs
eq(R.reply(b'APPEND Nowhere CATENATE (URL "/INBOX/;UID=99")'), 'NO [TRYCREATE] No such mailbox')
eq(R.reply(b'APPEND Work CATENATE (FOO "x")'), 'BAD CATENATE parts are TEXT literal or URL "url"')
eq(R.reply(b'APPEND Work CATENATE ()'), 'BAD CATENATE needs TEXT and URL parts')
eq(R.reply(b'APPEND Work CATENATE'), 'BAD CATENATE needs a list of parts')
"#;

#[test]
fn catenate_builds_messages_from_texts_and_urls_and_refuses_bad_urls() {
    run(CATENATE, None);
}

const NOTIFY: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext3-Pw1')
assert ' NOTIFY' in R.ok(b'CAPABILITY')[0]
R.ok(b'CREATE Work')
R.ok(b'SELECT INBOX')
# (STATUS): the watched mailboxes now (not the selected one)
v = int(re.search(r'UIDVALIDITY (\d+)', R.ok(b'STATUS Work (UIDVALIDITY)')[0]).group(1))
def work(messages, uidnext):
    # with FlagChange, HIGHESTMODSEQ too: the folder's, as STATUS says it
    h = re.search(r'HIGHESTMODSEQ (\d+)', S.ok(b'STATUS Work (HIGHESTMODSEQ)')[0]).group(1)
    return ['* STATUS Work (MESSAGES %d UIDNEXT %d UIDVALIDITY %d HIGHESTMODSEQ %s)' % (messages, uidnext, v, h)]
S = Raw(PORT)
S.ok(b'LOGIN alice Alice-Ext3-Pw1')
eq(R.ok(b'NOTIFY SET STATUS (SELECTED (MessageNew MessageExpunge)) (MAILBOXES Work (MessageNew MessageExpunge FlagChange)) (PERSONAL (MailboxName SubscriptionChange))'),
   work(0, 1))
def idle_told(action, n):
    R.n += 1
    R.s.sendall(b'x%d IDLE\r\n' % R.n)
    eq(unsolicited(R), '+ idling')
    t = time.time()
    action()
    got = [unsolicited(R) for _ in range(n)]
    took = time.time() - t
    R.s.sendall(b'DONE\r\n')
    eq(unsolicited(R), 'x%d OK Idle completed' % R.n)
    assert took < 5, took
    return got
# another session delivers to, changes flags in and expunges from a mailbox not selected
eq(idle_told(lambda: append(S, b'Work', message(100, 'w1')), 1), work(1, 2))
S.ok(b'SELECT Work')
eq(idle_told(lambda: S.ok(b'STORE 1 +FLAGS (\\Seen)'), 1), work(1, 2))
def expunge():
    S.ok(b'STORE 1 +FLAGS.SILENT (\\Deleted)')
    S.ok(b'EXPUNGE')
eq(idle_told(expunge, 1), work(0, 2))
# folders created, subscribed, deleted
eq(idle_told(lambda: S.ok(b'CREATE Projects'), 1), ['* LIST () "." Projects'])
eq(idle_told(lambda: S.ok(b'SUBSCRIBE Projects'), 1), ['* LIST (\\Subscribed) "." Projects'])
eq(sorted(idle_told(lambda: (S.ok(b'UNSUBSCRIBE Projects'), S.ok(b'DELETE Projects')), 2)),
   ['* LIST () "." Projects', '* LIST (\\NonExistent) "." Projects'])
# the selected mailbox as ever
eq(idle_told(lambda: append(S, b'INBOX', message(100, 'i1')), 2), ['* 3 EXISTS', '* 3 RECENT'])
# at NOOP too; NOTIFY NONE ends it
append(S, b'Work', message(100, 'w2'))
eq(R.ok(b'NOOP'), work(1, 3))
R.ok(b'NOTIFY NONE')
append(S, b'Work', message(100, 'w3'))
eq(R.ok(b'NOOP'), [])
# bad input
eq(R.reply(b'NOTIFY SET (PERSONAL (AnnotationChange))'),
   'NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Unsupported NOTIFY event')
eq(R.reply(b'NOTIFY SET (PERSONAL (MessageNew))'), 'BAD MessageNew and MessageExpunge go together, and FlagChange needs both')
eq(R.reply(b'NOTIFY SET (ANYWHERE (MailboxName))'), 'BAD Unknown NOTIFY filter')
eq(R.reply(b'NOTIFY SET'), 'BAD NOTIFY SET needs 1 to 32 event groups')
eq(R.reply(b'NOTIFY'), 'BAD NOTIFY SET or NOTIFY NONE')
"#;

#[test]
fn notify_tells_an_idling_session_of_other_mailboxes_changes() {
    run(NOTIFY, None);
}
