//! imapd's OBJECTID (RFC 8474), SAVEDATE (RFC 8514), CREATE-SPECIAL-USE (RFC 6154) and
//! PREVIEW (RFC 8970) under the real master, with auth, driven from Python over a plain
//! socket so exact response lines are asserted.

use postern_tests::Instance;
use postern_tests::imap_script;

/// The test's Python helpers: the uidlist header, the index's message records and GUIDs by
/// UID, an IMAP date.
const PRELUDE: &str = r#"
def header(folder):
    name = 'dovecot-uidlist' if folder == 'INBOX' else '.%s/dovecot-uidlist' % folder
    return open(os.path.join(MAILDIR, name)).readline().split()
def index(folder):
    # the index's message records (M uid guid modseq info size date saved), by UID
    name = 'postern-index' if folder == 'INBOX' else '.%s/postern-index' % folder
    out = {}
    for l in open(os.path.join(MAILDIR, name)).read().splitlines()[1:]:
        f = l.split()
        if f[0] == 'M':
            out[int(f[1])] = f
    return out
def imap_date(t):
    return time.strftime('%d-%b-%Y %H:%M:%S +0000', time.gmtime(t))
def guids(folder):
    # the message GUIDs of the index, by UID
    return {uid: f[2] for uid, f in index(folder).items()}
"#;

/// Runs `body` against a fresh instance ([`imap_script::run`]).
fn run(body: &str) -> Instance {
    imap_script::run("Alice-Ext2-Pw1", PRELUDE, body)
}

const OBJECTID: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext2-Pw1')
assert ' OBJECTID' in R.ok(b'CAPABILITY')[0]
# MAILBOXID: F and the uidlist's mailbox GUID
got = R.ok(b'STATUS INBOX (MESSAGES MAILBOXID)')
inbox = 'F' + header('INBOX')[3][1:]
assert len(inbox) == 33, inbox
assert got == ['* STATUS INBOX (MESSAGES 2 MAILBOXID (%s))' % inbox], got
lines, done = R.cmd(b'CREATE Work')
work = 'F' + header('Work')[3][1:]
assert done.decode() == 'OK [MAILBOXID (%s)] CREATE completed' % work, done
assert work != inbox
assert R.ok(b'STATUS Work (MAILBOXID)') == ['* STATUS Work (MAILBOXID (%s))' % work]
assert '* OK [MAILBOXID (%s)] Ok' % inbox in R.ok(b'EXAMINE INBOX')
# the id survives RENAME; a folder created again under the old name gets a new one
R.ok(b'RENAME Work Play')
assert R.ok(b'STATUS Play (MAILBOXID)') == ['* STATUS Play (MAILBOXID (%s))' % work]
R.cmd(b'CREATE Work')
again = R.ok(b'STATUS Work (MAILBOXID)')[0]
assert again != '* STATUS Work (MAILBOXID (%s))' % work, again
# EMAILID: M and the index's message GUID; THREADID NIL
g = guids('INBOX')
R.ok(b'SELECT INBOX')
got = R.ok(b'FETCH 1:2 (EMAILID THREADID)')
assert got == ['* 1 FETCH (EMAILID (M%s) THREADID NIL)' % g[1], '* 2 FETCH (EMAILID (M%s) THREADID NIL)' % g[2]], got
assert g[1] != g[2]
# the same EMAILID after COPY and after MOVE
lines, done = R.cmd(b'UID COPY 1 Play')
assert done.startswith(b'OK [COPYUID'), done
lines, done = R.cmd(b'UID MOVE 2 Play')
assert done.startswith(b'OK'), done
R.ok(b'SELECT Play')
got = R.ok(b'UID FETCH 1:* (EMAILID)')
assert got == ['* 1 FETCH (UID 1 EMAILID (M%s))' % g[1], '* 2 FETCH (UID 2 EMAILID (M%s))' % g[2]], got
# SEARCH EMAILID finds it, an unknown or malformed id nothing, THREADID nothing
assert R.ok(b'SEARCH EMAILID M%s' % g[2].encode()) == ['* SEARCH 2']
assert R.ok(b'SEARCH EMAILID M%s' % (b'0' * 32)) == ['* SEARCH']
assert R.ok(b'SEARCH EMAILID nonsense') == ['* SEARCH']
assert R.ok(b'SEARCH THREADID T1') == ['* SEARCH']
assert R.ok(b'SEARCH NOT EMAILID M%s' % g[2].encode()) == ['* SEARCH 1']
assert R.reply(b'SEARCH EMAILID').startswith('BAD')
assert R.reply(b'STATUS Play (MAILBOXID BOGUS)').startswith('BAD')
"#;

#[test]
fn objectid_mailbox_ids_survive_rename_and_email_ids_survive_copy_and_move() {
    run(OBJECTID);
}

const SAVEDATE: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext2-Pw1')
assert ' SAVEDATE' in R.ok(b'CAPABILITY')[0]
R.ok(b'CREATE Old')
# an old internal date, saved now
lines, done = R.cmd(b'APPEND Old (\\Seen) "01-Jan-2020 10:00:00 +0000" {20}\r\nSubject: x\r\n\r\nbody\r\n')
assert done.startswith(b'OK'), (lines, done)
R.ok(b'SELECT Old')
saved = int(index('Old')[1][7])
assert abs(saved - time.time()) < 60, saved
got = R.ok(b'FETCH 1 (INTERNALDATE SAVEDATE)')
assert got == ['* 1 FETCH (INTERNALDATE "01-Jan-2020 10:00:00 +0000" SAVEDATE "%s")' % imap_date(saved)], got
today = time.strftime('%d-%b-%Y', time.gmtime(saved)).encode()
tomorrow = time.strftime('%d-%b-%Y', time.gmtime(saved + 86400)).encode()
assert R.ok(b'SEARCH SAVEDON ' + today) == ['* SEARCH 1']
assert R.ok(b'SEARCH SAVEDSINCE ' + today) == ['* SEARCH 1']
assert R.ok(b'SEARCH SAVEDBEFORE ' + today) == ['* SEARCH']
assert R.ok(b'SEARCH SAVEDSINCE ' + tomorrow) == ['* SEARCH']
assert R.ok(b'SEARCH SAVEDBEFORE ' + tomorrow) == ['* SEARCH 1']
assert R.ok(b'SEARCH SAVEDATESUPPORTED') == ['* SEARCH 1']
# the internal date is another thing
assert R.ok(b'SEARCH SINCE ' + today) == ['* SEARCH']
assert R.ok(b'SEARCH ON 1-Jan-2020') == ['* SEARCH 1']
assert R.reply(b'SEARCH SAVEDON yesterday').startswith('BAD')
# a copy has its own save date, from the index of the folder it went to
R.ok(b'COPY 1 INBOX')
R.ok(b'SELECT INBOX')
rec = index('INBOX')
got = R.ok(b'UID FETCH 3 (SAVEDATE)')
assert got == ['* 3 FETCH (UID 3 SAVEDATE "%s")' % imap_date(int(rec[3][7]))], got
"#;

#[test]
fn savedate_is_kept_per_message_and_searched_by_day() {
    run(SAVEDATE);
}

const CREATE_SPECIAL_USE: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext2-Pw1')
assert ' CREATE-SPECIAL-USE' in R.ok(b'CAPABILITY')[0]
lines, done = R.cmd(b'CREATE Old-Mail (USE (\\Archive))')
assert done.startswith(b'OK [MAILBOXID (F') and done.endswith(b')] CREATE completed'), done
assert R.ok(b'LIST "" Old-Mail') == ['* LIST (\\HasNoChildren \\Archive) "." Old-Mail']
assert open(os.path.join(MAILDIR, '.Old-Mail/postern-special-use')).read() == '\\Archive\n'
# two uses at once, in any case
R.ok(b'CREATE Outbox (USE (\\sent \\Drafts))')
assert R.ok(b'LIST "" Outbox') == ['* LIST (\\HasNoChildren \\Drafts \\Sent) "." Outbox']
# the special-use selection lists them beside the folders special by name
got = R.ok(b'LIST (SPECIAL-USE) "" "*"')
assert got == [
    '* LIST (\\HasNoChildren \\Archive) "." Archive',
    '* LIST (\\HasNoChildren \\Drafts) "." Drafts',
    '* LIST (\\HasNoChildren \\Junk) "." Junk',
    '* LIST (\\HasNoChildren \\Archive) "." Old-Mail',
    '* LIST (\\HasNoChildren \\Drafts \\Sent) "." Outbox',
    '* LIST (\\HasNoChildren \\Sent) "." Sent',
    '* LIST (\\HasNoChildren \\Trash) "." Trash',
], got
# the use goes with the folder on RENAME
R.ok(b'RENAME Old-Mail Older')
assert R.ok(b'LIST "" Older') == ['* LIST (\\HasNoChildren \\Archive) "." Older']
# uses the store does not keep: NO [USEATTR], nothing created; bad syntax: BAD
assert R.reply(b'CREATE Everything (USE (\\All))') == 'NO [USEATTR] Unsupported special-use attribute'
assert R.reply(b'CREATE Stars (USE (\\Archive \\Flagged))') == 'NO [USEATTR] Unsupported special-use attribute'
assert not os.path.exists(os.path.join(MAILDIR, '.Everything'))
assert not os.path.exists(os.path.join(MAILDIR, '.Stars'))
assert R.ok(b'LIST "" Everything') == []
assert R.reply(b'CREATE Odd (FOO (\\Archive))').startswith('BAD')
assert R.reply(b'CREATE Odd (USE \\Archive)').startswith('BAD')
assert R.reply(b'CREATE Odd (USE (Archive))').startswith('BAD')
assert R.reply(b'CREATE Odd extra').startswith('BAD')
# a plain CREATE has no use
R.ok(b'CREATE Plain')
assert R.ok(b'LIST "" Plain') == ['* LIST (\\HasNoChildren) "." Plain']
"#;

#[test]
fn create_special_use_keeps_the_use_with_the_folder() {
    run(CREATE_SPECIAL_USE);
}

const PREVIEW: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext2-Pw1')
assert ' PREVIEW' in R.ok(b'CAPABILITY')[0]
def append(msg):
    lines, done = R.cmd(b'APPEND INBOX {%d+}\r\n' % len(msg) + msg)
    assert done.startswith(b'OK'), done
# 3: quoted-printable Latin-1 with a quote and folded white space
append(b'Subject: qp\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nBonjour,\r\n\r\n  le caf=E9   est=20pr=EAt.\r\n> vieux texte\r\n-- \r\nZo=E9\r\n')
# 4: HTML only
append(b'Subject: html\r\nContent-Type: text/html\r\n\r\n<html><head><title>T</title></head><body><p>Hi&nbsp;<b>there</b></p><p>second</p></body></html>\r\n')
# 5: an attachment first, then the text; base64
append(b'Subject: mixed\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--zz\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nU2VlIHRoZSBhdHRhY2hlZCBmaWxlLg==\r\n--zz--\r\n')
# 6: a long text: cut at 256 characters
append(b'Subject: long\r\n\r\n' + b'word ' * 400 + b'\r\n')
# 7: a 3 MB message: its start is read, not all of it
append(b'Subject: big\r\n\r\nBig start.\r\n' + b'x' * 76 + b'\r\n' + (b'y' * 76 + b'\r\n') * 40000)
# 8: headers only
append(b'Subject: empty\r\n\r\n')
R.ok(b'SELECT INBOX')
got = R.ok(b'FETCH 1:8 (PREVIEW)')
exp = ['* 1 FETCH (PREVIEW "hello")', '* 2 FETCH (PREVIEW "there")']
le = 'Bonjour, le caf\u00e9 est pr\u00eat. -- Zo\u00e9'.encode()
exp.append('* 3 FETCH (PREVIEW {%d}\r\n%s)' % (len(le), le.decode()))
exp.append('* 4 FETCH (PREVIEW "Hi there second")')
exp.append('* 5 FETCH (PREVIEW "See the attached file.")')
exp.append('* 6 FETCH (PREVIEW "%s")' % ' '.join(['word'] * 52)[:256])
exp.append('* 7 FETCH (PREVIEW "%s")' % ('Big start. ' + 'x' * 76 + ' ' + ' '.join(['y' * 76] * 10))[:256])
exp.append('* 8 FETCH (PREVIEW "")')
assert got == exp, (got, exp)
assert len(got[5]) - len('* 6 FETCH (PREVIEW "")') == 256
# LAZY is answered all the same; other modifiers are BAD; with other items too
assert R.ok(b'FETCH 4 (PREVIEW (LAZY))') == ['* 4 FETCH (PREVIEW "Hi there second")']
assert R.ok(b'FETCH 2 (UID PREVIEW (lazy) RFC822.SIZE)') == ['* 2 FETCH (UID 2 PREVIEW "there" RFC822.SIZE %d)' % len(b'From: Carol <carol@example.test>\r\nSubject: second\r\n\r\nthere\r\n')]
assert R.reply(b'FETCH 4 (PREVIEW (FOO))').startswith('BAD')
assert R.ok(b'FETCH 1 (PREVIEW BODY.PEEK[TEXT])') == ['* 1 FETCH (PREVIEW "hello" BODY[TEXT] {7}\r\nhello\r\n)']
assert R.ok(b'FETCH 2 (BODY.PEEK[] PREVIEW)')[0].endswith(' PREVIEW "there")')
# the 3 MB message's preview read at most 32 KB of it (the imapd's read bytes; the only
# imapd child of this master serves this session)
def child_imapd(p):
    try:
        stat = open('/proc/%s/stat' % p).read()
        return stat.rsplit(') ', 1)[1].split()[1] == str(MASTER) and open('/proc/%s/comm' % p).read().strip() == 'imapd'
    except OSError:
        return False
imapd = [p for p in os.listdir('/proc') if p.isdigit() and child_imapd(p)]
assert len(imapd) == 1, imapd
def rchar():
    return int([l for l in open('/proc/%s/io' % imapd[0]).read().splitlines() if l.startswith('rchar:')][0].split()[1])
before = rchar()
assert R.ok(b'FETCH 7 (PREVIEW)')[0].startswith('* 7 FETCH (PREVIEW "Big start.')
read = rchar() - before
assert read < 200 * 1024, read
# PREVIEW does not set \Seen
assert R.ok(b'FETCH 1 (FLAGS)') == ['* 1 FETCH (FLAGS (\\Recent))']
"#;

#[test]
fn preview_is_the_first_text_decoded_and_collapsed_from_a_bounded_read() {
    run(PREVIEW);
}

const REPLACE: &str = r#"
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Ext2-Pw1')
assert ' REPLACE' in R.ok(b'CAPABILITY')[0]
assert R.reply(b'REPLACE 1 INBOX {3+}\r\nx\r\n').startswith('BAD')
validity = None
R.ok(b'SELECT INBOX')
validity = header('INBOX')[1][1:]
# a draft saved again into the same folder: the new one appended, the old one expunged
new = b'Subject: draft v2\r\n\r\nmore text\r\n'
lines, done = R.cmd(b'REPLACE 1 INBOX (\\Seen) {%d+}\r\n' % len(new) + new)
lines = [l.decode() for l in lines]
assert done == b'OK REPLACE completed', (lines, done)
assert lines == ['* OK [APPENDUID %s 3] Replacement Message ID' % validity, '* 1 EXPUNGE', '* 2 EXISTS', '* 2 RECENT'], lines
assert R.ok(b'UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])') == [
    '* 1 FETCH (UID 2 FLAGS (\\Seen \\Recent) BODY[HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: second\r\n\r\n)',
    '* 2 FETCH (UID 3 FLAGS (\\Seen \\Recent) BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: draft v2\r\n\r\n)',
], R.ok(b'UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
# UID REPLACE into another folder, with flags and a date
drafts_new = b'Subject: draft v3\r\n\r\nfinal\r\n'
lines, done = R.cmd(b'UID REPLACE 3 Drafts (\\Draft) "01-Feb-2021 12:00:00 +0000" {%d+}\r\n' % len(drafts_new) + drafts_new)
lines = [l.decode() for l in lines]
assert done == b'OK REPLACE completed', (lines, done)
assert lines == ['* OK [APPENDUID %s 1] Replacement Message ID' % header('Drafts')[1][1:], '* 2 EXPUNGE'], lines
assert R.ok(b'STATUS Drafts (MESSAGES)') == ['* STATUS Drafts (MESSAGES 1)']
R2 = Raw(PORT)
R2.ok(b'LOGIN alice Alice-Ext2-Pw1')
R2.ok(b'EXAMINE Drafts')
assert R2.ok(b'FETCH 1 (FLAGS INTERNALDATE)') == ['* 1 FETCH (FLAGS (\\Draft) INTERNALDATE "01-Feb-2021 12:00:00 +0000")']
# failures leave the original: no such folder, a missing message, read-only, two messages
one = b'Subject: x\r\n\r\ny\r\n'
assert R.reply(b'REPLACE 1 Nowhere {%d+}\r\n' % len(one) + one) == 'NO [TRYCREATE] No such mailbox'
assert R.reply(b'REPLACE 9 INBOX {%d+}\r\n' % len(one) + one).startswith('BAD')
assert R.reply(b'UID REPLACE 99 INBOX {%d+}\r\n' % len(one) + one) == 'NO [NONEXISTENT] No such message'
assert R.reply(b'REPLACE 1 INBOX {%d+}\r\n%s {%d+}\r\n%s' % (len(one), one, len(one), one)).startswith('BAD')
assert R.reply(b'REPLACE 1:2 INBOX {%d+}\r\n' % len(one) + one).startswith('BAD')
assert R.ok(b'UID FETCH 1:* (UID)') == ['* 1 FETCH (UID 2)']
assert R.ok(b'STATUS INBOX (MESSAGES)') == ['* STATUS INBOX (MESSAGES 1)']
assert R2.reply(b'REPLACE 1 Drafts {%d+}\r\n' % len(one) + one) == 'NO [READ-ONLY] Mailbox is read-only'
assert R2.ok(b'STATUS Drafts (MESSAGES)') == ['* STATUS Drafts (MESSAGES 1)']
"#;

#[test]
fn replace_appends_then_expunges_the_original_and_fails_whole() {
    run(REPLACE);
}
