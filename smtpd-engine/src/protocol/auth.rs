//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms. The password goes to
//! the auth daemon and nowhere else; it is held in a zeroizing buffer and never logged.
//! Auth does the brute-force throttling; smtpd adds no delay of its own.

use super::command::Mech;
use super::reply::{Reply, common};
use super::{Action, Phase, Session, VerifyResult, Wait};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_lib::dsn::Dsn;
use zeroize::Zeroizing;

fn decode(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if text == b"=" {
        return Some(Zeroizing::new(Vec::new()));
    }
    STANDARD.decode(text).ok().map(Zeroizing::new)
}

impl Session {
    pub(super) fn auth(&mut self, mech: Mech, initial: Option<String>) {
        if !self.auth_offered() {
            return self.send(common::sequence("authentication not enabled"));
        }
        if self.tls_required() {
            return self.send(Reply::new(530, Dsn::SECURITY, "Must issue a STARTTLS command first"));
        }
        if self.auth_user.is_some() {
            return self.send(common::sequence("already authenticated"));
        }
        if self.tx.is_some() {
            return self.send(common::sequence("MAIL transaction in progress"));
        }
        self.sasl_method = match mech {
            Mech::Plain => "PLAIN",
            Mech::Login => "LOGIN",
        };
        match (mech, initial) {
            (Mech::Plain, Some(i)) => self.plain(i.as_bytes()),
            (Mech::Plain, None) => {
                self.send(Reply::plain(334, vec![String::new()]));
                self.phase = Phase::AuthPlain;
            }
            (Mech::Login, Some(i)) => self.login_user(i.as_bytes()),
            (Mech::Login, None) => {
                self.send(Reply::plain(334, vec!["VXNlcm5hbWU6".into()]));
                self.phase = Phase::AuthLoginUser;
            }
        }
    }

    /// A continuation line while an AUTH exchange is in progress.
    pub(super) fn auth_line(&mut self, line: &[u8]) {
        let phase = std::mem::replace(&mut self.phase, Phase::Command);
        if line == b"*" {
            return self.send(Reply::new(501, Dsn::SECURITY, "Authentication aborted"));
        }
        match phase {
            Phase::AuthPlain => self.plain(line),
            Phase::AuthLoginUser => self.login_user(line),
            Phase::AuthLoginPass(user) => match decode(line) {
                Some(p) => {
                    let password = Zeroizing::new(String::from_utf8_lossy(&p).into_owned());
                    self.verify(user, password);
                }
                None => self.bad_base64(),
            },
            _ => {}
        }
    }

    fn bad_base64(&mut self) {
        self.send(Reply::new(
            501,
            Dsn::SYNTAX_ERROR,
            "Error: malformed authentication response",
        ));
    }

    fn plain(&mut self, b64: &[u8]) {
        let Some(raw) = decode(b64) else {
            return self.bad_base64();
        };
        let mut parts = raw.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.bad_base64();
        };
        if !authz.is_empty() && authz != authc {
            return self.send(Reply::new(535, Dsn::BAD_CREDENTIALS, "Error: authentication failed"));
        }
        let user = String::from_utf8_lossy(authc).into_owned();
        let password = Zeroizing::new(String::from_utf8_lossy(pass).into_owned());
        self.verify(user, password);
    }

    fn login_user(&mut self, b64: &[u8]) {
        let Some(raw) = decode(b64) else {
            return self.bad_base64();
        };
        let user = String::from_utf8_lossy(&raw).into_owned();
        self.send(Reply::plain(334, vec!["UGFzc3dvcmQ6".into()]));
        self.phase = Phase::AuthLoginPass(user);
    }

    fn verify(&mut self, user: String, password: Zeroizing<String>) {
        if user.is_empty() || user.len() > 256 || user.contains(['\r', '\n', '\0']) {
            return self.send(Reply::new(535, Dsn::BAD_CREDENTIALS, "Error: authentication failed"));
        }
        self.out.push(Action::Verify { user, password });
        self.wait = Wait::Verify;
    }

    pub(super) fn auth_result(&mut self, result: VerifyResult) {
        match result {
            VerifyResult::Ok(user) => {
                tracing::info!(
                    "client={}[{}], sasl_method={}, sasl_username={user}",
                    self.client.name,
                    self.client.addr,
                    self.sasl_method
                );
                self.auth_user = Some(user);
                self.send(Reply::new(235, Dsn::SECURITY_OK, "Authentication successful"));
            }
            VerifyResult::Fail => {
                // Postfix's words, which fail2ban's postfix filter (mode auth) looks for.
                tracing::warn!(
                    "{}[{}]: SASL {} authentication failed: authentication failure",
                    self.client.name,
                    self.client.addr,
                    self.sasl_method
                );
                self.send(Reply::new(535, Dsn::BAD_CREDENTIALS, "Error: authentication failed"));
            }
            VerifyResult::TempFail => self.send(Reply::new(
                454,
                Dsn::SECURITY.temporary(),
                "Temporary authentication failure",
            )),
        }
    }
}
