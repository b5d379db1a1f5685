//! The AUTHORIZATION state: CAPA (RFC 2449), USER/PASS (RFC 1939), AUTH PLAIN (RFC 5034,
//! RFC 4616), STLS (RFC 2595) and UTF8 (RFC 6856: names and passwords in USER, PASS and
//! AUTH PLAIN are UTF-8, whether or not the client sent UTF8 first; messages are sent as
//! stored either way — Postern does not downgrade). Cleartext passwords are refused
//! unless the connection is TLS, from a trusted network, or `pop3d_allow_plaintext` is
//! set.

use crate::session::{Action, Session, State, err, ok};
use base64::Engine;
use zeroize::Zeroizing;

const PLAINTEXT_REFUSED: &str = "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections";

/// The CAPA reply.
pub fn capa(s: &Session) -> Action {
    let mut text =
        String::from("+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    let in_auth = matches!(s.state, State::Authorization { .. });
    if in_auth && (s.security.tls || s.security.plaintext_ok) {
        text.push_str("USER\r\nSASL PLAIN\r\n");
    }
    if in_auth && s.security.tls_available && !s.security.tls {
        text.push_str("STLS\r\n");
    }
    // RFC 6856: UTF8, with USER when USER and PASS take UTF-8 names and passwords here
    text.push_str(if in_auth && (s.security.tls || s.security.plaintext_ok) {
        "UTF8 USER\r\n"
    } else {
        "UTF8\r\n"
    });
    text.push_str("IMPLEMENTATION Postern\r\n.\r\n");
    Action::Send(text.into_bytes())
}

fn cleartext_ok(s: &Session) -> bool {
    s.security.tls || s.security.plaintext_ok
}

/// A command in the AUTHORIZATION state.
pub fn command(s: &mut Session, verb: &str, args: &[&str], line: &str) -> Vec<Action> {
    match verb {
        "USER" => {
            let [name] = args else {
                return vec![err("Usage: USER name")];
            };
            if !cleartext_ok(s) {
                return vec![err(PLAINTEXT_REFUSED)];
            }
            s.state = State::Authorization {
                user: Some(name.chars().take(256).collect()),
            };
            vec![ok("Send your password")]
        }
        "PASS" => {
            let user = match &s.state {
                State::Authorization { user: Some(u) } => u.clone(),
                _ => return vec![err("USER first")],
            };
            if !cleartext_ok(s) {
                return vec![err(PLAINTEXT_REFUSED)];
            }
            // The password is the rest of the line: it may hold spaces.
            let password = Zeroizing::new(line.get(5..).unwrap_or_default().to_string());
            s.state = State::Verifying;
            vec![Action::Verify { user, password }]
        }
        "AUTH" => match args {
            [] => vec![Action::Send(b"+OK\r\nPLAIN\r\n.\r\n".to_vec())],
            [mech, rest @ ..] if mech.eq_ignore_ascii_case("PLAIN") => {
                if !cleartext_ok(s) {
                    return vec![err(PLAINTEXT_REFUSED)];
                }
                match rest {
                    [] => {
                        s.state = State::SaslContinue;
                        vec![Action::Send(b"+ \r\n".to_vec())]
                    }
                    [initial] => plain(s, initial.as_bytes()),
                    _ => vec![err("Usage: AUTH PLAIN [initial-response]")],
                }
            }
            _ => vec![err("Unsupported authentication mechanism")],
        },
        "STLS" => {
            if s.security.tls {
                vec![err("TLS is already active")]
            } else if !s.security.tls_available {
                vec![err("TLS is not available")]
            } else if !args.is_empty() {
                vec![err("Usage: STLS")]
            } else {
                vec![ok("Begin TLS negotiation now"), Action::StartTls]
            }
        }
        "UTF8" if !args.is_empty() => vec![err("Usage: UTF8")],
        "UTF8" => {
            s.utf8 = true;
            vec![ok("UTF8 enabled")]
        }
        "QUIT" => {
            s.state = State::Done;
            vec![ok("Bye"), Action::Close]
        }
        "NOOP" | "STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" => vec![err("Log in first")],
        _ => vec![err("Unknown command")],
    }
}

/// The line after `+ ` in AUTH PLAIN.
pub fn sasl_response(s: &mut Session, line: &[u8]) -> Vec<Action> {
    s.state = State::Authorization { user: None };
    if line == b"*" {
        return vec![err("[AUTH] Authentication cancelled")];
    }
    plain(s, line)
}

fn plain(s: &mut Session, b64: &[u8]) -> Vec<Action> {
    let decoded = match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(d) => Zeroizing::new(d),
        Err(_) => return vec![err("[AUTH] Invalid base64 data")],
    };
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pass), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return vec![err("[AUTH] Invalid PLAIN response")];
    };
    let (Ok(authz), Ok(authc), Ok(pass)) = (
        std::str::from_utf8(authz),
        std::str::from_utf8(authc),
        std::str::from_utf8(pass),
    ) else {
        return vec![err("[AUTH] Invalid PLAIN response")];
    };
    s.state = State::Verifying;
    // an authorization identity other than the login: a master-user login (auth decides)
    vec![Action::Verify {
        user: postern_lib::proto::auth::plain_login(authz, authc),
        password: Zeroizing::new(pass.to_string()),
    }]
}
