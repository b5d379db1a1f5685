//! imapd's extensions under the real master, with auth, driven from Python (imaplib, and a
//! plain socket where exact response lines are asserted): STATUS with every item,
//! LIST-EXTENDED selection and return options, several patterns, LIST-STATUS, ENABLE
//! IMAP4rev2 (SELECT without RECENT, ESEARCH answers, `[CLOSED]`), ESEARCH on IMAP4rev1,
//! MULTIAPPEND (all or nothing) and RENAME of INBOX.

use postern_tests::Instance;
use postern_tests::imap_script::{self, maildir};

/// Runs `body` against a fresh instance ([`imap_script::run`]).
fn run(body: &str) -> Instance {
    imap_script::run("Alice-Ext-Pw1", "", body)
}

const STATUS_LIST: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext-Pw1')
caps = R.ok(b'CAPABILITY')[0]
for c in ['IMAP4rev2', 'LIST-EXTENDED', 'LIST-STATUS', 'ESEARCH', 'MULTIAPPEND', 'BINARY', 'STATUS=SIZE', 'SPECIAL-USE', 'CHILDREN', 'CONDSTORE']:
    assert ' %s' % c in caps, caps
# CRLF sizes: 'first' was delivered with LF line ends
size = len(b'From: Bob <bob@example.test>\r\nSubject: first\r\n\r\nhello\r\n') + len(b'From: Carol <carol@example.test>\r\nSubject: second\r\n\r\nthere\r\n')
got = R.ok(b'STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE DELETED)')
validity = open(os.path.join(MAILDIR, 'dovecot-uidlist')).readline().split()[1][1:]
# RECENT 2: delivered, and no session has selected INBOX yet
assert got == ['* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY %s UNSEEN 1 SIZE %d DELETED 0)' % (validity, size)], got
assert R.reply(b'STATUS INBOX ()').startswith('BAD'), 'empty STATUS list'
assert R.reply(b'STATUS INBOX (BOGUS)').startswith('BAD')
assert R.reply(b'STATUS Nope (MESSAGES)') == 'NO [NONEXISTENT] No such mailbox'
# the selected folder's STATUS is its current state
R.ok(b'SELECT INBOX')
R.ok(b'STORE 1 +FLAGS (\\Deleted)')
assert R.ok(b'STATUS INBOX (DELETED UNSEEN)') == ['* STATUS INBOX (DELETED 1 UNSEEN 1)']
R.ok(b'STORE 1 -FLAGS (\\Deleted)')
R.ok(b'CREATE Projects.rust')
R.ok(b'SUBSCRIBE Projects.rust')
R.ok(b'SUBSCRIBE Gone')
# plain RFC 3501 LIST: a level that is no folder is \Noselect (listed for a final %)
got = R.ok(b'LIST "" "%"')
assert got == [
    '* LIST (\\HasNoChildren) "." INBOX',
    '* LIST (\\HasNoChildren \\Archive) "." Archive',
    '* LIST (\\HasNoChildren \\Drafts) "." Drafts',
    '* LIST (\\HasNoChildren \\Junk) "." Junk',
    '* LIST (\\Noselect \\HasChildren) "." Projects',
    '* LIST (\\HasNoChildren \\Sent) "." Sent',
    '* LIST (\\HasNoChildren \\Trash) "." Trash',
], got
# SUBSCRIBED selection: subscribed names, a missing one \NonExistent
got = R.ok(b'LIST (SUBSCRIBED) "" "*"')
assert got == [
    '* LIST (\\HasNoChildren \\Subscribed) "." INBOX',
    '* LIST (\\HasNoChildren \\Archive \\Subscribed) "." Archive',
    '* LIST (\\HasNoChildren \\Drafts \\Subscribed) "." Drafts',
    '* LIST (\\NonExistent \\Subscribed) "." Gone',
    '* LIST (\\HasNoChildren \\Junk \\Subscribed) "." Junk',
    '* LIST (\\HasNoChildren \\Subscribed) "." Projects.rust',
    '* LIST (\\HasNoChildren \\Sent \\Subscribed) "." Sent',
    '* LIST (\\HasNoChildren \\Trash \\Subscribed) "." Trash',
], got
# RECURSIVEMATCH: an unsubscribed parent of a subscribed folder, with CHILDINFO
got = R.ok(b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "P%" RETURN (CHILDREN)')
assert got == ['* LIST (\\NonExistent \\HasChildren) "." Projects ("CHILDINFO" ("SUBSCRIBED"))'], got
got = R.ok(b'LIST (SPECIAL-USE REMOTE) "" "*" RETURN (SPECIAL-USE)')
assert got == [
    '* LIST (\\HasNoChildren \\Archive) "." Archive',
    '* LIST (\\HasNoChildren \\Drafts) "." Drafts',
    '* LIST (\\HasNoChildren \\Junk) "." Junk',
    '* LIST (\\HasNoChildren \\Sent) "." Sent',
    '* LIST (\\HasNoChildren \\Trash) "." Trash',
], got
# several patterns, RETURN (SUBSCRIBED)
got = R.ok(b'LIST "" ("inbox" "S*" "Proj%") RETURN (SUBSCRIBED)')
assert got == [
    '* LIST (\\HasNoChildren \\Subscribed) "." INBOX',
    '* LIST (\\NonExistent \\HasChildren) "." Projects',
    '* LIST (\\HasNoChildren \\Sent \\Subscribed) "." Sent',
], got
# LIST-STATUS: a STATUS after each selectable folder's LIST line
got = R.ok(b'LIST "" ("INBOX" "Proj*") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))')
assert got == [
    '* LIST (\\HasNoChildren) "." INBOX',
    '* STATUS INBOX (MESSAGES 2 UNSEEN 1)',
    '* LIST (\\HasNoChildren) "." Projects.rust',
    '* STATUS Projects.rust (MESSAGES 0 UNSEEN 0)',
], got
got = R.ok(b'LSUB "" "G*"')
assert got == ['* LSUB (\\Noselect) "." Gone'], got
for bad in [b'LIST (BOGUS) "" "*"', b'LIST (RECURSIVEMATCH) "" "*"', b'LIST "" "*" RETURN (BOGUS)',
            b'LIST "" "*" RETURN (STATUS ())', b'LIST ""', b'LSUB (SUBSCRIBED) "" "*"']:
    assert R.reply(bad).startswith('BAD'), bad
assert R.ok(b'LIST "" ""') == ['* LIST (\\Noselect) "." ""']
R.ok(b'LOGOUT')
"#;

#[test]
fn status_items_list_extended_and_list_status() {
    run(STATUS_LIST).stop();
}

const REV2: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext-Pw1')
# IMAP4rev1 with ESEARCH: RETURN options, and the old answer without them
R.ok(b'EXAMINE INBOX')
assert R.ok(b'SEARCH RETURN (MIN MAX COUNT) ALL') == ['* ESEARCH (TAG "x3") MIN 1 MAX 2 COUNT 2']
assert R.ok(b'UID SEARCH RETURN () SEEN') == ['* ESEARCH (TAG "x4") UID ALL 2']
assert R.ok(b'SEARCH RETURN (COUNT ALL) SUBJECT nothing') == ['* ESEARCH (TAG "x5") COUNT 0']
assert R.ok(b'SEARCH ALL') == ['* SEARCH 1 2']
# SAVE (SEARCHRES, RFC 5182) alone answers nothing untagged
assert R.ok(b'SEARCH RETURN (SAVE) ALL') == []
assert R.reply(b'SEARCH RETURN ALL').startswith('BAD')
R.ok(b'UNSELECT')
# IMAP4rev2
assert R.ok(b'ENABLE IMAP4rev2 X-UNKNOWN-EXT') == ['* ENABLED IMAP4rev2']
assert R.ok(b'ENABLE IMAP4rev2') == ['* ENABLED']
validity = open(os.path.join(MAILDIR, 'dovecot-uidlist')).readline().split()[1][1:]
lines, done = R.cmd(b'SELECT inbox')
assert [l.decode() for l in lines] == [
    '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)',
    '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted',
    '* 2 EXISTS',
    '* LIST () "." INBOX',
    '* OK [UIDVALIDITY %s] UIDs valid' % validity,
    '* OK [UIDNEXT 3] Predicted next UID',
    '* OK [MAILBOXID (F%s)] Ok' % open(os.path.join(MAILDIR, 'dovecot-uidlist')).readline().split()[3][1:],
], lines
assert done == b'OK [READ-WRITE] SELECT completed', done
assert R.ok(b'SEARCH UNSEEN') == ['* ESEARCH (TAG "x13") ALL 1']
assert R.ok(b'UID SEARCH ALL') == ['* ESEARCH (TAG "x14") UID ALL 1:2']
assert R.ok(b'SEARCH SUBJECT nothing') == ['* ESEARCH (TAG "x15")']
assert R.ok(b'SEARCH RETURN (COUNT) ALL') == ['* ESEARCH (TAG "x16") COUNT 2']
# selecting again closes the old selection first
lines = R.ok(b'EXAMINE Sent')
assert lines[0] == '* OK [CLOSED] Previous mailbox closed' and '* LIST () "." Sent' in lines, lines
assert not any('RECENT' in l for l in lines), lines
R.ok(b'UNSELECT')
assert R.reply(b'FETCH 1 FLAGS').startswith('BAD')
R.ok(b'CREATE Zed.B')
assert R.ok(b'LIST "" "Z%"') == ['* LIST (\\NonExistent \\HasChildren) "." Zed']
assert R.ok(b'LIST "" "Z*"') == ['* LIST (\\HasNoChildren) "." Zed.B']
R.ok(b'LOGOUT')
# imaplib, as a client program uses it, on an IMAP4rev2 session
M = imaplib.IMAP4('127.0.0.1', PORT)
assert 'IMAP4REV2' in M.capabilities, M.capabilities
M.login('alice', 'Alice-Ext-Pw1')
typ, data = M.enable('IMAP4rev2')
assert typ == 'OK', data
typ, data = M.select('INBOX')
assert typ == 'OK' and data == [b'2'], data
typ, data = M.status('INBOX', '(SIZE MESSAGES)')
assert typ == 'OK' and b'MESSAGES 2' in data[0], data
M.logout()
"#;

#[test]
fn imap4rev2_and_esearch() {
    run(REV2).stop();
}

const MULTIAPPEND: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext-Pw1')
validity = None
m1 = b'Subject: one\r\n\r\nfirst body\r\n'
m2 = b'Subject: two\r\n\r\nsecond body\r\n'
lines, done = R.cmd(b'APPEND Archive (\\Seen) {%d+}\r\n%s (\\Flagged $Todo) "01-Jan-2024 10:00:00 +0000" {%d+}\r\n%s' % (len(m1), m1, len(m2), m2))
v = open(os.path.join(MAILDIR, '.Archive', 'dovecot-uidlist')).readline().split()[1][1:]
assert done == b'OK [APPENDUID %s 1:2] Append completed' % v.encode(), done
R.ok(b'EXAMINE Archive')
got = R.ok(b'FETCH 1:2 (FLAGS BODY.PEEK[])')
assert got[0] == '* 1 FETCH (FLAGS (\\Seen) BODY[] {%d}\r\n%s)' % (len(m1), m1.decode()), got
assert got[1] == '* 2 FETCH (FLAGS (\\Flagged $Todo) BODY[] {%d}\r\n%s)' % (len(m2), m2.decode()), got
assert R.ok(b'FETCH 2 INTERNALDATE') == ['* 2 FETCH (INTERNALDATE "01-Jan-2024 10:00:00 +0000")']
# a bad second message: nothing of the command is appended
assert R.reply(b'APPEND Archive {%d+}\r\n%s (\\Bogus) {%d+}\r\n%s' % (len(m1), m1, len(m2), m2)).startswith('BAD')
assert R.reply(b'APPEND Archive {%d+}\r\n%s (\\Seen)' % (len(m1), m1)).startswith('BAD')
assert R.ok(b'STATUS Archive (MESSAGES)') == ['* STATUS Archive (MESSAGES 2)']
assert R.reply(b'APPEND Nope {%d+}\r\n%s' % (len(m1), m1)) == 'NO [TRYCREATE] No such mailbox'
# BINARY: decoded parts, a literal8 both ways, an unknown encoding refused
mm = (b'Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n'
      b'Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nend\r\n--b\r\n'
      b'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n'
      b'--b\r\nContent-Transfer-Encoding: x-uue\r\n\r\nzz\r\n--b--\r\n')
R.ok(b'APPEND Drafts ~{%d+}\r\n%s' % (len(mm), mm))
R.ok(b'SELECT Drafts')
got = R.ok(b'FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[]<0.12>)')
assert got == ['* 1 FETCH (BINARY.SIZE[1] 9 BINARY[1] {9}\r\ncaf\u00e9 end BINARY.SIZE[2] 3 BINARY[]<0> {12}\r\nContent-Type)'], got
assert R.ok(b'FETCH 1 (BINARY[2])') == ['* 1 FETCH (BINARY[2] ~{3}\r\n\x00\x01\x02 FLAGS (\\Seen \\Recent))']
assert R.reply(b'FETCH 1 (BINARY.PEEK[3])').startswith('NO [UNKNOWN-CTE]')
assert R.ok(b'FETCH 1 (BINARY.PEEK[7])') == ['* 1 FETCH (BINARY[7] NIL)']
assert R.reply(b'FETCH 1 (BINARY[HEADER])').startswith('BAD')
# RENAME INBOX: the messages move with their flags, INBOX stays and takes new mail
R.ok(b'UNSELECT')
R.ok(b'RENAME INBOX Old')
assert R.ok(b'STATUS INBOX (MESSAGES)') == ['* STATUS INBOX (MESSAGES 0)']
assert R.ok(b'STATUS Old (MESSAGES UNSEEN)') == ['* STATUS Old (MESSAGES 2 UNSEEN 1)']
R.ok(b'EXAMINE Old')
got = sorted(l.split(' ', 2)[2] for l in R.ok(b'FETCH 1:2 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])'))
assert got == ['FETCH (FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: first\r\n\r\n)',
               'FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: second\r\n\r\n)'], got
assert R.reply(b'RENAME Old INBOX') == 'NO [ALREADYEXISTS] Mailbox already exists'
assert R.reply(b'RENAME INBOX Old') == 'NO [ALREADYEXISTS] Mailbox already exists'
R.ok(b'LOGOUT')
M = imaplib.IMAP4('127.0.0.1', PORT)
M.login('alice', 'Alice-Ext-Pw1')
typ, data = M.rename('INBOX', 'Older')
assert typ == 'OK', data
typ, data = M.select('INBOX')
assert typ == 'OK' and data == [b'0'], data
M.logout()
"#;

#[test]
fn multiappend_and_rename_inbox() {
    let mut inst = run(MULTIAPPEND);
    // RENAME INBOX left Dovecot's layout: the messages are files in .Old/cur
    let old = maildir(&inst).join(".Old/cur");
    assert_eq!(std::fs::read_dir(old).expect("Old/cur").count(), 2);
    let older = maildir(&inst).join(".Older/cur");
    assert_eq!(
        std::fs::read_dir(older).expect("Older/cur").count(),
        0,
        "INBOX was empty"
    );
    inst.stop();
}
