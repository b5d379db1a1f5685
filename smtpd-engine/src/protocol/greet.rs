//! HELO/EHLO (the extension list), and STARTTLS (RFC 3207).

use super::reply::{Reply, common};
use super::{Action, Phase, Session, Wait};
use crate::settings::TlsLevel;
use postern_lib::dsn::Dsn;

impl Session {
    /// Whether AUTH is offered now: enabled, and under TLS unless the client is on
    /// loopback or `smtpd_tls_auth_only = false`.
    pub(super) fn auth_offered(&self) -> bool {
        self.cfg.auth_enabled && (self.tls.is_some() || self.loopback || !self.cfg.tls_auth_only)
    }

    fn starttls_offered(&self) -> bool {
        self.cfg.tls_available && self.cfg.tls_level != TlsLevel::None && self.tls.is_none()
    }

    pub(super) fn helo(&mut self, name: String, esmtp: bool) {
        if !self.junk() {
            return;
        }
        self.abort_message();
        self.tx = None;
        self.helo = Some(name);
        self.esmtp = esmtp;
        let host = self.cfg.hostname.clone();
        if !esmtp {
            self.send(Reply::plain(250, vec![host]));
            return;
        }
        let mut lines = vec![
            host,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.message_size_limit),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.extend(
            ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
                .iter()
                .map(|s| s.to_string()),
        );
        self.send(Reply::plain(250, lines));
    }

    pub(super) fn starttls(&mut self) {
        if self.tls.is_some() {
            return self.send(common::sequence("TLS already active"));
        }
        if !self.starttls_offered() {
            return self.send(Reply::new(454, Dsn::SECURITY.temporary(), "TLS not available"));
        }
        if self.tx.is_some() {
            return self.send(common::sequence("MAIL transaction in progress"));
        }
        self.send(Reply::new(220, Dsn::OK, "Ready to start TLS"));
        // RFC 3207: forget everything learned in the clear.
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.tx = None;
        self.phase = Phase::Command;
        self.out.push(Action::StartTls);
        self.wait = Wait::Tls;
    }
}
