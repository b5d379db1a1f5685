//! Postfix's log line for a refusal by policy, so pflogsumm's reject report and
//! fail2ban's `postfix` filter read Postern's log as Postfix's:
//!
//! `NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <bob@example.test>:
//! Recipient address rejected: User unknown in local recipient table;
//! from=<a@example.org> to=<bob@example.test> proto=ESMTP helo=<client.example>`
//!
//! `NOQUEUE` becomes the queue ID once cleanup has named one (end of message). As in
//! Postfix, `from=` and `to=` appear when known and `helo=` once HELO/EHLO was given;
//! `proto=` is `SMTP` or `ESMTP`. Logged for the restriction lists (evaluated at RCPT, as
//! Postfix does with `smtpd_delay_reject = yes`; the DATA and end-of-data lists at those
//! stages), unknown recipients, temporary look-up failures, the sender login check and
//! MAIL's size and free-space checks — not for syntax or sequence errors, which Postfix
//! does not log either. Text from the client is shown with control characters replaced.

use super::Session;
use super::reply::Reply;

/// The stage of a rejection, named as in Postfix's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectStage {
    /// At connection time.
    Connect,
    /// HELO or EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA or the first BDAT.
    Data,
    /// The end of the message.
    EndOfMessage,
}

impl RejectStage {
    /// Postfix's name of the stage.
    pub fn name(self) -> &'static str {
        match self {
            RejectStage::Connect => "CONNECT",
            RejectStage::Helo => "HELO",
            RejectStage::Mail => "MAIL",
            RejectStage::Rcpt => "RCPT",
            RejectStage::Data => "DATA",
            RejectStage::EndOfMessage => "END-OF-MESSAGE",
        }
    }
}

/// Longest piece of client text put in the line.
const MAX_FIELD: usize = 300;

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_FIELD)
        .collect()
}

impl Session {
    /// Logs the rejection in Postfix's form and sends `reply`. `from` is the sender when
    /// the transaction has none yet (MAIL); `to` the recipient being refused.
    pub(super) fn reject(&mut self, stage: RejectStage, reply: Reply, from: Option<&str>, to: Option<&str>) {
        tracing::info!("{}", self.reject_line(stage, &reply, from, to));
        self.send(reply);
    }

    /// The log line for a rejection (see the module doc).
    pub(super) fn reject_line(
        &self,
        stage: RejectStage,
        reply: &Reply,
        from: Option<&str>,
        to: Option<&str>,
    ) -> String {
        let id = self
            .tx
            .as_ref()
            .and_then(|t| t.queue_id.as_deref())
            .unwrap_or("NOQUEUE");
        let text = reply.lines.first().map(String::as_str).unwrap_or_default();
        let mut line = format!(
            "{id}: reject: {} from {}[{}]: {} {};",
            stage.name(),
            clean(&self.client.name),
            self.client.addr,
            reply.code,
            clean(text)
        );
        let sender = from.map(str::to_string).or_else(|| {
            self.tx
                .as_ref()
                .map(|t| t.mail.path.as_ref().map(|p| p.to_string()).unwrap_or_default())
        });
        if let Some(s) = sender {
            line.push_str(&format!(" from=<{}>", clean(&s)));
        }
        if let Some(r) = to {
            line.push_str(&format!(" to=<{}>", clean(r)));
        }
        line.push_str(if self.esmtp { " proto=ESMTP" } else { " proto=SMTP" });
        if let Some(h) = &self.helo {
            line.push_str(&format!(" helo=<{}>", clean(h)));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientInfo;
    use crate::settings::Settings;
    use postern_lib::dsn::Dsn;
    use postern_lib::line::LineBuffer;
    use std::sync::Arc;

    fn session(input: &[u8]) -> Session {
        let cfg = Arc::new(Settings::for_tests());
        let client = ClientInfo {
            addr: "192.0.2.1".parse().expect("address"),
            name: "unknown".into(),
        };
        let mut s = Session::new(cfg.clone(), client, None);
        s.start();
        let mut buf = LineBuffer::new(cfg.line_limit, 65536);
        buf.push(input).expect("push");
        s.process(&mut buf);
        s
    }

    #[test]
    fn rcpt_rejection_as_postfix_logs_it() {
        let s = session(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n");
        let r = Reply::new(
            550,
            Dsn::BAD_MAILBOX,
            "<bob@example.test>: Recipient address rejected: User unknown in local recipient table",
        );
        assert_eq!(
            s.reject_line(RejectStage::Rcpt, &r, None, Some("bob@example.test")),
            "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <bob@example.test>: Recipient \
             address rejected: User unknown in local recipient table; from=<a@example.org> \
             to=<bob@example.test> proto=ESMTP helo=<client.example>"
        );
    }

    #[test]
    fn end_of_message_rejection_names_the_queue_id() {
        let mut s =
            session(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<root@example.test>\r\nDATA\r\n");
        s.cleanup_started(Some("4Vxq3Yk9c0012345".into()));
        let r = Reply::new(554, Dsn::NOT_AUTHORIZED, "Data command rejected: Access denied");
        assert_eq!(
            s.reject_line(RejectStage::EndOfMessage, &r, None, None),
            "4Vxq3Yk9c0012345: reject: END-OF-MESSAGE from unknown[192.0.2.1]: 554 5.7.1 Data command \
             rejected: Access denied; from=<a@example.org> proto=ESMTP helo=<client.example>"
        );
    }

    #[test]
    fn mail_rejection_names_the_sender_and_plain_smtp() {
        let s = session(b"HELO [192.0.2.1]\r\n");
        let r = Reply::new(552, Dsn::TOO_BIG, "Message size exceeds fixed limit");
        assert_eq!(
            s.reject_line(RejectStage::Mail, &r, Some(""), None),
            "NOQUEUE: reject: MAIL from unknown[192.0.2.1]: 552 5.3.4 Message size exceeds fixed limit; \
             from=<> proto=SMTP helo=<[192.0.2.1]>"
        );
        let s = session(b"");
        assert_eq!(
            s.reject_line(RejectStage::Data, &r, None, None),
            "NOQUEUE: reject: DATA from unknown[192.0.2.1]: 552 5.3.4 Message size exceeds fixed limit; proto=SMTP"
        );
    }
}
