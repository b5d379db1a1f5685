//! smtpd with Python's smtplib as the client: every advertised extension with its
//! parameters reaching cleanup, STARTTLS with a certificate made by rcgen, a failed TLS
//! handshake, AUTH PLAIN/LOGIN against the real auth daemon on a submission-style service
//! (`permit_sasl_authenticated, reject`, TLS required), AUTH without auth (454), and
//! implicit TLS (smtps).

mod smtpd_common;

use smtpd_common::*;

const TLS_CTX: &str = r#"
import smtplib, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
if ctx:
    ctx.check_hostname = False
"#;

#[test]
fn every_extension_with_smtplib() {
    let s = start(&[], "", "");
    let script = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo('client.test')
for e in ['pipelining', 'size', '8bitmime', 'enhancedstatuscodes', 'smtputf8', 'dsn', 'chunking']:
    assert s.has_extn(e), e
assert not s.has_extn('starttls'), 'no certificate configured'
assert not s.has_extn('auth'), 'AUTH is off by default'
assert s.esmtp_features['size'] == '10240000'
msg = 'Subject: caf\u00e9\r\n\r\n8bit body: \u00e9\u00e8\r\n'.encode('utf-8')
r = s.sendmail('j\u00f6rg@b\u00fccher.test', ['root@example.test'], msg,
               mail_options=['SMTPUTF8', 'BODY=8BITMIME', 'RET=HDRS', 'ENVID=env+2Bid'],
               rcpt_options=['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;root+40example.test'])
assert r == {}, r
code, text = s.vrfy('alice')
print('vrfy', code)
code, text = s.noop()
print('noop', code)
s.quit()
"#;
    let out = python(script, &[&s.port.to_string()]);
    assert!(out.contains("vrfy 252") && out.contains("noop 250"), "{out}");
    let got = s.received();
    assert_eq!(got.len(), 1);
    let (env, msg) = &got[0];
    assert!(env.starts_with("sender jörg@bücher.test\n"), "{env}");
    assert!(
        env.contains("rcpt root@example.test notify=SUCCESS,FAILURE orcpt=rfc822;root@example.test"),
        "{env}"
    );
    for a in [
        "attr body=8BITMIME",
        "attr envid=env+id",
        "attr ret=HDRS",
        "attr smtputf8=yes",
        "attr helo=client.test",
    ] {
        assert!(env.contains(a), "{a} in {env}");
    }
    assert!(String::from_utf8_lossy(msg).contains("8bit body: éè"));
}

#[test]
fn starttls_with_a_generated_certificate() {
    let s = start_full(&TLS_SETTINGS, "", "", true, &|i| {
        write_cert(i);
    });
    let crt = s.inst.etc().join("smtpd.crt");
    let script = format!(
        "{TLS_CTX}{}",
        r#"
s = smtplib.SMTP('127.0.0.1', port)
s.ehlo('tls.test')
assert s.has_extn('starttls')
code, _ = s.starttls(context=ctx)
assert code == 220, code
s.ehlo('tls.test')
assert not s.has_extn('starttls'), 'not offered twice'
print('version', s.sock.version())
s.sendmail('a@remote.test', ['root@example.test'], b'Subject: over tls\r\n\r\nsecret\r\n')
s.quit()
"#
    );
    let out = python(&script, &[&s.port.to_string(), crt.to_str().unwrap()]);
    assert!(out.contains("version TLSv1.3"), "{out}");
    let got = s.received();
    assert_eq!(got.len(), 1);
    let msg = String::from_utf8_lossy(&got[0].1);
    assert!(
        msg.starts_with("Received: from tls.test (unknown [127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_"),
        "{msg}"
    );
    assert!(
        msg.contains("(No client certificate requested)\r\n\tby mail.example.test (Postern) with ESMTPS"),
        "{msg}"
    );
    assert!(got[0].0.contains("attr protocol=ESMTPS"));

    // A handshake that fails (garbage instead of a ClientHello) costs only that client.
    let mut c = s.client();
    c.cmd("EHLO c.test");
    assert_eq!(c.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS\r\n");
    c.send(b"this is not TLS\r\n\r\n\r\n\r\n\r\n");
    assert!(c.closed());
    let mut c = s.client();
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    // Commands pipelined after STARTTLS in the clear are discarded, never executed.
    let script = format!(
        "{TLS_CTX}{}",
        r#"
import socket
raw = socket.create_connection(('127.0.0.1', port))
f = raw.makefile('rb')
f.readline()
raw.sendall(b'EHLO x\r\n')
while f.readline()[3:4] == b'-': pass
raw.sendall(b'STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n')
assert f.readline().startswith(b'220')
t = ctx.wrap_socket(raw, server_hostname='mail.example.test')
tf = t.makefile('rb')
t.sendall(b'RCPT TO:<root@example.test>\r\n')
print(tf.readline().decode().strip())
"#
    );
    let out = python(&script, &[&s.port.to_string(), crt.to_str().unwrap()]);
    assert_eq!(out.trim(), "503 5.5.1 Error: need MAIL command");
}

#[test]
fn submission_requires_tls_and_auth() {
    let extra = r#"options = { smtpd_sasl_auth_enable = true, smtpd_tls_security_level = "encrypt", smtpd_client_restrictions = ["permit_sasl_authenticated", "reject"] }"#;
    let s = start_full(
        &[&TLS_SETTINGS[..], &["mynetworks=[\"127.0.0.2/32\"]"]].concat(),
        extra,
        "",
        true,
        &|i| {
            write_cert(i);
        },
    );
    let crt = s.inst.etc().join("smtpd.crt");
    let mut c = s.client();
    c.cmd("EHLO c.test");
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXB3"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let script = format!(
        "{TLS_CTX}{}",
        r#"
s = smtplib.SMTP('127.0.0.1', port)
s.starttls(context=ctx)
s.ehlo('sub.test')
assert 'PLAIN' in s.esmtp_features['auth'] and 'LOGIN' in s.esmtp_features['auth']
s.mail('alice@example.test')
code, text = s.rcpt('friend@remote.test')
print('unauth', code, text.decode())
s.rset()
try:
    s.login('alice', 'wrong')
    print('wrong accepted')
except smtplib.SMTPAuthenticationError as e:
    print('wrong', e.smtp_code)
s.quit()
s = smtplib.SMTP('127.0.0.1', port)
s.starttls(context=ctx)
s.ehlo('sub.test')
s.auth_method = None
s.user, s.password = 'alice', 'alice-pw'
code, text = s.auth('LOGIN', s.auth_login)
print('login', code)
r = s.sendmail('alice@example.test', ['friend@remote.test'], b'Subject: submitted\r\n\r\nhi\r\n')
assert r == {}, r
s.quit()
"#
    );
    let out = python(&script, &[&s.port.to_string(), crt.to_str().unwrap()]);
    assert!(
        out.contains("unauth 554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"),
        "{out}"
    );
    assert!(out.contains("wrong 535"), "{out}");
    assert!(out.contains("login 235"), "{out}");
    let got = s.received();
    assert_eq!(got.len(), 1);
    let (env, msg) = &got[0];
    assert!(
        env.contains("attr sasl_username=alice") && env.contains("attr protocol=ESMTPSA"),
        "{env}"
    );
    let msg = String::from_utf8_lossy(msg);
    assert!(
        msg.contains("(Authenticated sender: alice)\r\n\tby mail.example.test (Postern) with ESMTPSA id "),
        "{msg}"
    );
    // Postfix's line for an authenticated message, under the queue ID of its Received:.
    let id = msg
        .split(" with ESMTPSA id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .trim_end_matches(';');
    assert_eq!(
        s.inst.log_count(&format!(
            "{id}: client=unknown[127.0.0.1], sasl_method=LOGIN, sasl_username=alice"
        )),
        1,
        "{}",
        s.inst.log()
    );
}

#[test]
fn auth_without_the_auth_daemon_is_454() {
    let s = start_full(&["smtpd_sasl_auth_enable=true"], "", "", false, &|_| {});
    let mut c = s.client();
    assert!(
        c.cmd("EHLO c.test").contains("250-AUTH PLAIN LOGIN"),
        "loopback may authenticate without TLS"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXB3"),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    // Recipient validation cannot ask either: a temporary failure, not a 550.
    c.cmd("MAIL FROM:<a@b.test>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "451 4.3.0 <alice@example.test>: Temporary lookup failure\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<root@example.test>"),
        "250 2.1.5 Ok\r\n",
        "aliases need no auth"
    );
}

#[test]
fn smtps_implicit_tls() {
    let s = start_full(
        &TLS_SETTINGS,
        "options = { smtpd_tls_wrappermode = true }",
        "",
        true,
        &|i| {
            write_cert(i);
        },
    );
    let crt = s.inst.etc().join("smtpd.crt");
    let script = format!(
        "{TLS_CTX}{}",
        r#"
s = smtplib.SMTP_SSL('127.0.0.1', port, context=ctx)
s.ehlo('wrapped.test')
assert not s.has_extn('starttls')
s.sendmail('a@remote.test', ['root@example.test'], b'Subject: smtps\r\n\r\nhi\r\n')
s.quit()
print('ok')
"#
    );
    assert_eq!(
        python(&script, &[&s.port.to_string(), crt.to_str().unwrap()]).trim(),
        "ok"
    );
    let got = s.received();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].1).contains("with ESMTPS"));
}
