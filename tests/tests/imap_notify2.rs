//! NOTIFY (RFC 5465) with two sessions under the real master, exact response lines from
//! Python over plain sockets: MessageNew's fetch attributes for the selected mailbox
//! (§5.2: an untagged FETCH with them after EXISTS, while idling and at NOOP, PEEK
//! leaving `\Seen` alone and a plain BODY[...] setting it, at most 1,000 messages at one
//! EXISTS), and MailboxName telling a RENAME as one LIST with RFC 5258's OLDNAME extended
//! data item (§5.4) — children included — where a DELETE and CREATE, even within one
//! check, stay two LISTs.

use postern_tests::Instance;
use postern_tests::imap_script;

/// The test's Python helpers: a LITERAL+ APPEND, an equality check that shows both sides,
/// reading one untagged response (its literals included), an IDLE that waits for what
/// another session's action makes the server tell.
const PRELUDE: &str = r#"
def append(r, box, msg):
    return r.cmd(b'APPEND ' + box + b' {%d+}\r\n' % len(msg) + msg)
def lit(text):
    # an IMAP literal of `text` as a response line holds it
    return '{%d}\r\n%s' % (len(text), text)
def eq(got, want):
    assert got == want, (got, want)
def untagged(r):
    l = r.f.readline()
    assert l, 'connection closed'
    l = l.rstrip(b'\r\n')
    while True:
        m = re.search(rb'\{(\d+)\}$', l)
        if not m:
            break
        l += b'\r\n' + r.f.read(int(m.group(1))) + r.f.readline().rstrip(b'\r\n')
    return l.decode()
def idle_told(r, action, n):
    r.n += 1
    r.s.sendall(b'x%d IDLE\r\n' % r.n)
    eq(untagged(r), '+ idling')
    t = time.time()
    action()
    got = [untagged(r) for _ in range(n)]
    took = time.time() - t
    r.s.sendall(b'DONE\r\n')
    eq(untagged(r), 'x%d OK Idle completed' % r.n)
    assert took < 5, took
    return got
"#;

fn run(body: &str) -> Instance {
    imap_script::run("Alice-Notify2-Pw1", PRELUDE, body)
}

const MESSAGE_NEW: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Notify2-Pw1')
S = Raw(PORT)
S.ok(b'LOGIN alice Alice-Notify2-Pw1')
# alice's two messages are \\Recent to R, the first to select INBOX
assert '* 2 RECENT' in R.ok(b'SELECT INBOX')
eq(R.ok(b'NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From Subject)]) MessageExpunge))'), [])
third = b'From: Dave <dave@example.test>\r\nTo: alice@example.test\r\nSubject: third\r\n\r\nbody 3\r\n'
eq(idle_told(R, lambda: append(S, b'INBOX', third), 3), [
    '* 3 EXISTS', '* 3 RECENT',
    '* 3 FETCH (UID 3 BODY[HEADER.FIELDS (FROM SUBJECT)] %s)'
    % lit('From: Dave <dave@example.test>\r\nSubject: third\r\n\r\n')])
# PEEK: not seen
eq(R.ok(b'FETCH 3 (FLAGS)'), ['* 3 FETCH (FLAGS (\\Recent))'])
# two at once, told at NOOP: EXISTS for both, then a FETCH each
append(S, b'INBOX', b'Subject: fourth\r\n\r\nbody 4\r\n')
append(S, b'INBOX', b'From: Erin <erin@example.test>\r\n\r\nbody 5\r\n')
eq(R.ok(b'NOOP'), [
    '* 5 EXISTS', '* 5 RECENT',
    '* 4 FETCH (UID 4 BODY[HEADER.FIELDS (FROM SUBJECT)] %s)' % lit('Subject: fourth\r\n\r\n'),
    '* 5 FETCH (UID 5 BODY[HEADER.FIELDS (FROM SUBJECT)] %s)' % lit('From: Erin <erin@example.test>\r\n\r\n')])
# without PEEK the message becomes \Seen, and its FLAGS are told with it
eq(R.ok(b'NOTIFY SET (SELECTED (MessageNew (BODY[HEADER.FIELDS (Subject)]) MessageExpunge))'), [])
append(S, b'INBOX', b'Subject: sixth\r\n\r\nbody 6\r\n')
eq(R.ok(b'NOOP'), [
    '* 6 EXISTS', '* 6 RECENT',
    '* 6 FETCH (BODY[HEADER.FIELDS (SUBJECT)] %s FLAGS (\\Seen \\Recent))' % lit('Subject: sixth\r\n\r\n')])
# envelope and size of a message another session delivers while a second folder is watched
R.ok(b'CREATE Work')
eq(R.ok(b'NOTIFY SET (SELECTED (MessageNew (UID RFC822.SIZE ENVELOPE) MessageExpunge)) (MAILBOXES Work (MessageNew MessageExpunge))'), [])
seventh = b'From: Frank <frank@example.test>\r\nSubject: seventh\r\n\r\nbody 7\r\n'
got = idle_told(R, lambda: append(S, b'INBOX', seventh), 3)
eq(got[:2], ['* 7 EXISTS', '* 7 RECENT'])
eq(got[2], '* 7 FETCH (UID 7 RFC822.SIZE %d ENVELOPE (NIL "seventh" (("Frank" NIL "frank" "example.test")) '
   '(("Frank" NIL "frank" "example.test")) (("Frank" NIL "frank" "example.test")) NIL NIL NIL NIL NIL))' % len(seventh))
# the other folder is told as STATUS, without FETCH
v = int(re.search(r'UIDVALIDITY (\d+)', R.ok(b'STATUS Work (UIDVALIDITY)')[0]).group(1))
eq(idle_told(R, lambda: append(S, b'Work', b'Subject: w\r\n\r\nw\r\n'), 1),
   ['* STATUS Work (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d)' % v])
# expunge as ever, then NOTIFY NONE: EXISTS alone again
S.ok(b'SELECT INBOX')
S.ok(b'STORE 1 +FLAGS.SILENT (\\Deleted)')
S.ok(b'EXPUNGE')
eq(R.ok(b'NOOP'), ['* 1 EXPUNGE'])
R.ok(b'NOTIFY NONE')
append(S, b'INBOX', b'Subject: eighth\r\n\r\nbody 8\r\n')
# (S has INBOX selected now: the eighth is \\Recent to S, not to R)
eq(R.ok(b'NOOP'), ['* 7 EXISTS', '* 6 RECENT'])
# bad input
eq(R.reply(b'NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))'),
   "BAD MessageNew's fetch attributes are for the selected mailbox only")
eq(R.reply(b'NOTIFY SET (SELECTED (MessageNew () MessageExpunge))'), 'BAD Invalid fetch items')
eq(R.reply(b'NOTIFY SET (SELECTED (MessageNew (UID FOO) MessageExpunge))'), 'BAD Unknown FETCH item FOO')
eq(R.reply(b'NOTIFY SET (SELECTED (MessageNew (UID) (FLAGS) MessageExpunge))'), 'BAD Invalid NOTIFY event')
"#;

#[test]
fn message_new_fetch_attributes_are_told_for_the_selected_mailbox() {
    run(MESSAGE_NEW);
}

const MANY_NEW: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Notify2-Pw1')
S = Raw(PORT)
S.ok(b'LOGIN alice Alice-Notify2-Pw1')
R.ok(b'SELECT INBOX')
eq(R.ok(b'NOTIFY SET (SELECTED (MessageNew (UID) MessageExpunge))'), [])
# 1,001 messages in one MULTIAPPEND: one EXISTS, a FETCH for the first 1,000 only
msg = b'Subject: many\r\n\r\nx\r\n'
parts = b''.join(b' {%d+}\r\n' % len(msg) + msg for _ in range(1001))
S.ok(b'APPEND INBOX' + parts)
got = R.ok(b'NOOP')
eq(got[:2], ['* 1003 EXISTS', '* 1003 RECENT'])
eq(got[2:], ['* %d FETCH (UID %d)' % (n, n) for n in range(3, 1003)])
"#;

#[test]
fn message_new_fetches_at_most_a_thousand_messages_at_one_exists() {
    run(MANY_NEW);
}

const RENAME: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Notify2-Pw1')
S = Raw(PORT)
S.ok(b'LOGIN alice Alice-Notify2-Pw1')
R.ok(b'CREATE Work')
R.ok(b'CREATE Work.2024')
R.ok(b'CREATE Other')
eq(R.ok(b'NOTIFY SET (PERSONAL (MailboxName))'), [])
# a rename, its child moved with it: one LIST each, with the old name
eq(sorted(idle_told(R, lambda: S.ok(b'RENAME Work Projects'), 2)), [
    '* LIST () "." Projects ("OLDNAME" (Work))',
    '* LIST () "." Projects.2024 ("OLDNAME" (Work.2024))'])
# a name that needs quoting
eq(idle_told(R, lambda: S.ok(b'RENAME Other "Old stuff"'), 1),
   ['* LIST () "." "Old stuff" ("OLDNAME" (Other))'])
# a delete and a create within one check are two LISTs, not a rename
def delete_create():
    S.ok(b'DELETE "Old stuff"')
    S.ok(b'CREATE Fresh')
eq(sorted(idle_told(R, delete_create, 2)), ['* LIST () "." Fresh', '* LIST (\\NonExistent) "." "Old stuff"'])
# renaming INBOX moves its messages to a new folder; INBOX stays: a create
eq(idle_told(R, lambda: S.ok(b'RENAME INBOX Saved'), 1), ['* LIST () "." Saved'])
# with MailboxName for one subtree only: a rename out of it is told, one elsewhere not
eq(R.ok(b'NOTIFY SET (SUBTREE Projects (MailboxName))'), [])
S.ok(b'RENAME Fresh Elsewhere')
eq(R.ok(b'NOOP'), [])
S.ok(b'RENAME Projects.2024 Archive2024')
eq(R.ok(b'NOOP'), ['* LIST () "." Archive2024 ("OLDNAME" (Projects.2024))'])
"#;

#[test]
fn mailbox_rename_is_told_with_its_old_name() {
    run(RENAME);
}
