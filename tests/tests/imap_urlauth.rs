//! imapd's URLAUTH (RFC 4467) under the real master, with auth, driven from Python over
//! plain sockets so exact response lines are asserted: GENURLAUTH's token checked
//! against HMAC-SHA256 of the URL under the key file alice's Maildir holds, URLFETCH of a
//! whole message and of a section, and NIL for a tampered token, an expired URL, a URL
//! fetched by another user and every URL made before RESETKEY; URLAUTH=BINARY (RFC 5524):
//! BODYPARTSTRUCTURE, BINARY (a base64 part with NULs as literal8) and BODY.

use postern_tests::imap_script;

/// The test's Python helpers: the host name imapd's greeting gives (URLs must name it),
/// the token of a URL under alice's key file, comparison.
const PRELUDE: &str = r#"
import socket, hmac, hashlib, stat
def greeting_host():
    s = socket.create_connection(('127.0.0.1', PORT), timeout=30)
    g = s.makefile('rb').readline().decode()
    s.close()
    return g.split()[-4]
def key_file():
    return os.path.join(MAILDIR, 'postern-urlauth-key')
def token(rump):
    key = bytes.fromhex(open(key_file()).read().strip())
    return hmac.new(key, rump.encode(), hashlib.sha256).hexdigest()[:32]
def eq(got, want):
    assert got == want, (got, want)
def q(url):
    return b'"' + url.encode() + b'"'
"#;

const URLAUTH: &str = r#"
HOST = greeting_host()
M2 = 'From: Carol <carol@example.test>\r\nSubject: second\r\n\r\nthere\r\n'
R = Raw(PORT)
R.ok(b'LOGIN alice Alice-Url-Pw1')
caps = R.ok(b'CAPABILITY')[0]
assert ' URLAUTH ' in caps and ' URLAUTH=BINARY' in caps, caps
v = int(R.ok(b'STATUS INBOX (UIDVALIDITY)')[0].split()[-1].rstrip(')'))
base = 'imap://alice@%s/INBOX;UIDVALIDITY=%d/;UID=2' % (HOST, v)
assert not os.path.exists(key_file())
# GENURLAUTH: the URL, :internal: and 128 bits of HMAC-SHA256 of it under the key made now
whole = base + ';URLAUTH=user+alice'
eq(R.ok(b'GENURLAUTH ' + q(whole) + b' INTERNAL'), ['* GENURLAUTH "%s:internal:%s"' % (whole, token(whole))])
eq(stat.S_IMODE(os.stat(key_file()).st_mode), 0o600)
eq(len(open(key_file()).read().strip()), 64)
sect = base + '/;SECTION=TEXT;EXPIRE=2099-01-01T00:00:00Z;URLAUTH=authuser'
part = base + '/;PARTIAL=6.5;URLAUTH=submit+alice'
eq(R.ok(b'GENURLAUTH ' + q(sect) + b' INTERNAL ' + q(part) + b' internal'),
   ['* GENURLAUTH "%s:internal:%s" "%s:internal:%s"' % (sect, token(sect), part, token(part))])
W, S, P = [u + ':internal:' + token(u) for u in (whole, sect, part)]
# URLFETCH: the whole message, a section and a partial, in one answer
eq(R.ok(b'URLFETCH ' + q(W) + b' ' + q(S) + b' ' + q(P)),
   ['* URLFETCH "%s" {%d}\r\n%s "%s" {7}\r\nthere\r\n "%s" {5}\r\nCarol' % (W, len(M2), M2, S, P)])
R.ok(b'SELECT INBOX')
eq(R.ok(b'URLFETCH ' + q(S)), ['* URLFETCH "%s" {7}\r\nthere\r\n' % S])
# a tampered token, a token of another URL, no token, a wrong mechanism, garbage: NIL
bad_tok = W[:-1] + ('0' if W[-1] != '0' else '1')
other = W.replace('UID=2', 'UID=1')
for u in [bad_tok, other, whole, W.replace(':internal:', ':other:'), 'imap://x', 'INBOX']:
    eq(R.ok(b'URLFETCH ' + q(u)), ['* URLFETCH "%s" NIL' % u])
# EXPIRE in the past: GENURLAUTH refuses it; signed with the right key anyway, it is NIL
past = base + ';EXPIRE=2020-01-01T00:00:00Z;URLAUTH=user+alice'
eq(R.reply(b'GENURLAUTH ' + q(past) + b' INTERNAL'), 'NO [BADURL %s] the URL has expired' % past)
P2 = past + ':internal:' + token(past)
eq(R.ok(b'URLFETCH ' + q(P2)), ['* URLFETCH "%s" NIL' % P2])
# GENURLAUTH refusals
for url, why in [
    (base + ';URLAUTH=anonymous', 'anonymous access is not offered'),
    (base.replace('alice@', 'bob@') + ';URLAUTH=authuser', "the URL is not the logged-in user's"),
    (base.replace(HOST, 'elsewhere.example') + ';URLAUTH=authuser', "the URL is not this server's"),
    (base.replace('UID=2', 'UID=99') + ';URLAUTH=authuser', 'no such message'),
    (base + '/;SECTION=4;URLAUTH=authuser', 'no such section'),
    (base.replace('UIDVALIDITY=%d' % v, 'UIDVALIDITY=%d' % (v + 1)) + ';URLAUTH=authuser', "UIDVALIDITY is not the mailbox's"),
    (W, 'the URL already has a URLAUTH verifier'),
    ('/INBOX/;UID=1', 'not an absolute IMAP URL (imap://user@host/...)'),
    (base.replace(';UIDVALIDITY=%d' % v, '') + ';URLAUTH=authuser', "a URLAUTH URL needs the mailbox's UIDVALIDITY"),
    (base + ';URLAUTH=root', 'bad URLAUTH access'),
]:
    eq(R.reply(b'GENURLAUTH ' + q(url) + b' INTERNAL'), 'NO [BADURL %s] %s' % (url, why))
eq(R.reply(b'GENURLAUTH ' + q(whole) + b' PLAIN'), 'BAD Unknown URLAUTH mechanism (INTERNAL is offered)')
eq(R.reply(b'GENURLAUTH ' + q(whole)), 'BAD GENURLAUTH needs URL and mechanism pairs')
eq(R.reply(b'URLFETCH'), 'BAD URLFETCH needs URLs')
eq(R.reply(b'URLFETCH' + b' "x"' * 65), 'BAD [LIMIT] More than 64 URLs')
# URLAUTH=BINARY (RFC 5524): a part's structure, its data decoded (NULs: literal8), as is
MP = b'From: a@example.test\r\nSubject: att\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECaGVsbG8=\r\n--b--\r\n'
lines, done = R.cmd(b'APPEND INBOX {%d+}\r\n' % len(MP) + MP)
assert done.startswith(b'OK [APPENDUID'), done
uid3 = int(done.split()[3].rstrip(b']'))
mbase = 'imap://alice@%s/INBOX;UIDVALIDITY=%d/;UID=%d' % (HOST, v, uid3)
urls = [mbase + s + ';URLAUTH=user+alice' for s in ('/;SECTION=2', '', '/;SECTION=1', '/;SECTION=HEADER')]
eq(R.ok(b'GENURLAUTH ' + b' '.join(q(u) + b' INTERNAL' for u in urls)),
   ['* GENURLAUTH ' + ' '.join('"%s:internal:%s"' % (u, token(u)) for u in urls)])
A, M, T, H = [u + ':internal:' + token(u) for u in urls]
bs = R.ok(b'UID FETCH %d BODYSTRUCTURE' % uid3)[0]
whole_bs = re.fullmatch(r'\* \d+ FETCH \(UID \d+ BODYSTRUCTURE (\(.*\))\)', bs).group(1)
part2 = '("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 12 NIL NIL NIL NIL)'
got = R.ok(b'URLFETCH (' + q(A) + b' BINARY BODYPARTSTRUCTURE) (' + q(M) + b' BODYPARTSTRUCTURE) (' + q(T) + b' BODY) (' + q(H) + b' BODYPARTSTRUCTURE) (' + q(H) + b' BINARY) ' + q(A))
eq(got, ['* URLFETCH "%s" (BODYPARTSTRUCTURE %s BINARY ~{8}\r\n\x00\x01\x02hello) "%s" (BODYPARTSTRUCTURE %s) "%s" (BODY {2}\r\nhi) "%s" NIL "%s" (BINARY {%d}\r\n%s) "%s" {12}\r\nAAECaGVsbG8=' % (A, part2, M, whole_bs, T, H, H, MP.index(b'\r\n\r\n') + 4, MP[:MP.index(b'\r\n\r\n') + 4].decode(), A)])
assert part2 in whole_bs, whole_bs
eq(R.reply(b'URLFETCH (' + q(A) + b' BODY BINARY)'), 'BAD URLFETCH takes BODY or BINARY, not both')
eq(R.reply(b'URLFETCH (' + q(A) + b' FOO)'), 'BAD Unknown URLFETCH parameter (BODYPARTSTRUCTURE, BODY, BINARY)')
eq(R.reply(b'URLFETCH (' + q(A) + b' BODY BODY)'), 'BAD Repeated URLFETCH parameter')
eq(R.ok(b'URLFETCH (' + q(bad_tok) + b' BINARY)'), ['* URLFETCH "%s" NIL' % bad_tok])
# another user: bob gets NIL for alice's URLs, whatever their access
B = Raw(PORT)
B.ok(b'LOGIN bob Bob-Url-Pw1')
eq(B.ok(b'URLFETCH ' + q(W) + b' ' + q(S)), ['* URLFETCH "%s" NIL "%s" NIL' % (W, S)])
# RESETKEY: a new key; every earlier URL is NIL; a new one works
old = open(key_file()).read()
eq(R.reply(b'RESETKEY Nowhere'), 'NO [NONEXISTENT] No such mailbox')
eq(R.reply(b'RESETKEY INBOX PLAIN'), 'BAD Unknown URLAUTH mechanism (INTERNAL is offered)')
eq(open(key_file()).read(), old)
eq(R.reply(b'RESETKEY INBOX INTERNAL'), 'OK [URLMECH INTERNAL] RESETKEY completed')
assert open(key_file()).read() != old
eq(stat.S_IMODE(os.stat(key_file()).st_mode), 0o600)
eq(R.ok(b'URLFETCH ' + q(W) + b' ' + q(S)), ['* URLFETCH "%s" NIL "%s" NIL' % (W, S)])
W2 = whole + ':internal:' + token(whole)
assert W2 != W
eq(R.ok(b'GENURLAUTH ' + q(whole) + b' INTERNAL'), ['* GENURLAUTH "%s"' % W2])
eq(R.ok(b'URLFETCH ' + q(W2)), ['* URLFETCH "%s" {%d}\r\n%s' % (W2, len(M2), M2)])
eq(R.reply(b'RESETKEY'), 'OK [URLMECH INTERNAL] RESETKEY completed')
eq(R.ok(b'URLFETCH ' + q(W2)), ['* URLFETCH "%s" NIL' % W2])
"#;

#[test]
fn urlauth_generates_fetches_and_refuses_tampered_expired_foreign_and_reset_urls() {
    imap_script::run_with("Alice-Url-Pw1", PRELUDE, URLAUTH, |inst| {
        postern_tests::add_user(inst, "bob", "Bob-Url-Pw1");
    });
}
