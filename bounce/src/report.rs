//! Building the report itself: a `multipart/report; report-type=delivery-status` message
//! (RFC 3464, RFC 6522) with three parts — a human-readable explanation, the
//! `message/delivery-status` part (one per-message block, one block per recipient), and
//! the original message (`message/rfc822`) or only its header (`text/rfc822-headers`) as
//! RET and `bounce_size_limit` decide.
//!
//! Written by hand rather than with a MIME builder because every byte of it is fixed by
//! the RFCs and must not be re-encoded: the delivery-status part and the returned message
//! go out as they are (7bit/8bit), never base64. Lines end in LF like every queue file;
//! the SMTP client adds CR.

use postern_lib::dsn::Dsn;
use postern_lib::proto::bounce::NoticeKind;

/// What the report says about one recipient.
pub struct Entry {
    /// Final-Recipient.
    pub address: String,
    /// Original-Recipient (ORCPT), when the client gave one.
    pub orcpt: Option<String>,
    /// Status.
    pub dsn: Dsn,
    /// Diagnostic-Code text.
    pub text: String,
    /// Remote-MTA.
    pub remote_mta: Option<String>,
}

/// Everything the report needs.
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, From).
    pub hostname: &'a str,
    /// The kind.
    pub kind: NoticeKind,
    /// The original message's queue ID.
    pub queue_id: &'a str,
    /// The original envelope sender.
    pub sender: &'a str,
    /// Who receives the report.
    pub to: &'a str,
    /// Arrival-Date (RFC 5322 form).
    pub arrival: String,
    /// Date of the report.
    pub date: String,
    /// DSN ENVID.
    pub envid: Option<&'a str>,
    /// The recipients.
    pub entries: Vec<Entry>,
    /// The original message (possibly only its header).
    pub original: &'a [u8],
    /// Whether `original` is the header only.
    pub headers_only: bool,
    /// A unique tag for Message-ID and the boundary.
    pub unique: String,
}

impl Report<'_> {
    fn subject(&self) -> &'static str {
        match self.kind {
            NoticeKind::Failure => "Undelivered Mail Returned to Sender",
            NoticeKind::Delay => "Delayed Mail (still being retried)",
            NoticeKind::Success | NoticeKind::Relayed => "Successful Mail Delivery Report",
        }
    }

    fn action(&self) -> &'static str {
        match self.kind {
            NoticeKind::Failure => "failed",
            NoticeKind::Delay => "delayed",
            NoticeKind::Success => "delivered",
            NoticeKind::Relayed => "relayed",
        }
    }

    fn explanation(&self) -> String {
        let intro = match self.kind {
            NoticeKind::Failure => {
                "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients. It's attached below."
            }
            NoticeKind::Delay => {
                "####################################################################\n# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n####################################################################\n\nYour message could not be delivered for some time. It will be retried\nuntil it is too old; the mail system will tell you if it gives up."
            }
            NoticeKind::Success => "Your message was successfully delivered to the destination(s)\nlisted below.",
            NoticeKind::Relayed => {
                "Your message was handed on to the destination(s) listed below, which do not\nreport on delivery. You may still receive notifications of delivery errors\nfrom other systems."
            }
        };
        let mut out = format!(
            "This is the mail system at host {}.\n\n{intro}\n\nFor further assistance, please send mail to postmaster.\n\n                   The mail system\n",
            self.hostname
        );
        for e in &self.entries {
            out.push_str(&format!("\n<{}>: {}\n", e.address, wrap(&e.text)));
        }
        out
    }

    /// The complete message, header and body, LF line endings.
    pub fn render(&self) -> Vec<u8> {
        let boundary = format!("{}/{}", self.unique, self.hostname);
        let mut o = String::new();
        o.push_str(&format!(
            "From: MAILER-DAEMON@{} (Mail Delivery System)\n",
            self.hostname
        ));
        o.push_str(&format!("To: <{}>\n", self.to));
        o.push_str(&format!("Subject: {}\n", self.subject()));
        o.push_str(&format!("Date: {}\n", self.date));
        o.push_str(&format!("Message-ID: <{}@{}>\n", self.unique, self.hostname));
        o.push_str("Auto-Submitted: auto-replied\n");
        o.push_str("MIME-Version: 1.0\n");
        o.push_str(&format!(
            "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"
        ));
        o.push_str("Content-Transfer-Encoding: 8bit\n\n");
        o.push_str("This is a MIME-encapsulated message.\n\n");
        o.push_str(&format!(
            "--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; charset=utf-8\n\n"
        ));
        o.push_str(&self.explanation());
        o.push_str(&format!(
            "\n--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n"
        ));
        o.push_str(&format!("Reporting-MTA: dns; {}\n", self.hostname));
        o.push_str(&format!("X-Postern-Queue-ID: {}\n", self.queue_id));
        o.push_str(&format!("X-Postern-Sender: rfc822; {}\n", self.sender));
        if let Some(envid) = self.envid {
            o.push_str(&format!("Original-Envelope-Id: {envid}\n"));
        }
        o.push_str(&format!("Arrival-Date: {}\n", self.arrival));
        for e in &self.entries {
            o.push_str(&format!("\nFinal-Recipient: rfc822; {}\n", e.address));
            if let Some(orcpt) = &e.orcpt {
                let orcpt = orcpt
                    .split_once(';')
                    .map(|(t, a)| format!("{t}; {a}"))
                    .unwrap_or_else(|| format!("rfc822; {orcpt}"));
                o.push_str(&format!("Original-Recipient: {orcpt}\n"));
            }
            o.push_str(&format!("Action: {}\n", self.action()));
            o.push_str(&format!("Status: {}\n", e.dsn));
            if let Some(mta) = &e.remote_mta {
                o.push_str(&format!("Remote-MTA: dns; {mta}\n"));
            }
            let kind = if e.remote_mta.is_some() { "smtp" } else { "x-postern" };
            o.push_str(&format!("Diagnostic-Code: {kind}; {}\n", one_line(&e.text)));
        }
        let (desc, ctype) = if self.headers_only {
            ("Undelivered Message Headers", "text/rfc822-headers")
        } else {
            ("Undelivered Message", "message/rfc822")
        };
        let desc = if self.kind == NoticeKind::Failure {
            desc
        } else {
            desc.trim_start_matches("Undelivered ")
        };
        o.push_str(&format!(
            "\n--{boundary}\nContent-Description: {desc}\nContent-Type: {ctype}\n\n"
        ));
        let mut bytes = o.into_bytes();
        bytes.extend_from_slice(self.original);
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
        bytes
    }
}

/// A diagnostic on one line (DSN fields are single-line here; folding is optional).
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Wraps the human-readable diagnostic at about 72 columns.
fn wrap(s: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in one_line(s).split(' ').filter(|w| !w.is_empty()) {
        if col > 0 && col + word.len() > 68 {
            out.push_str("\n    ");
            col = 4;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}

/// The header block of a message (up to and including the empty line).
pub fn header_of(content: &[u8]) -> &[u8] {
    let mut at = 0;
    while at < content.len() {
        let end = content[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| at + p + 1)
            .unwrap_or(content.len());
        let line = &content[at..end];
        if line == b"\n" || line == b"\r\n" {
            return &content[..at];
        }
        at = end;
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn report(kind: NoticeKind, original: &[u8], headers_only: bool) -> Vec<u8> {
        Report {
            hostname: "mail.example.test",
            kind,
            queue_id: "0ABCDEFGHIJKLMNO",
            sender: "alice@example.test",
            to: "alice@example.test",
            arrival: "Sun, 22 Nov 2026 17:49:46 +0000".into(),
            date: "Sun, 22 Nov 2026 18:00:00 +0000".into(),
            envid: Some("QQ314159"),
            entries: vec![Entry {
                address: "bob@remote.test".into(),
                orcpt: Some("rfc822;Bob@remote.test".into()),
                dsn: Dsn::BAD_MAILBOX,
                text: "host mx.remote.test said: 550 5.1.1 <bob@remote.test>: user unknown".into(),
                remote_mta: Some("mx.remote.test".into()),
            }],
            original,
            headers_only,
            unique: "0ABCDEFGHIJKLMNO.1".into(),
        }
        .render()
    }

    #[test]
    fn a_real_mime_parser_reads_a_multipart_report() {
        let original = b"From: alice@example.test\nTo: bob@remote.test\nSubject: lunch\n\nsee you\n";
        let bytes = report(NoticeKind::Failure, original, false);
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        let ct = msg.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(msg.parts.len(), 4, "the multipart and its three parts");
        let status = String::from_utf8_lossy(msg.parts[2].contents()).into_owned();
        assert!(status.contains("Final-Recipient: rfc822; bob@remote.test"), "{status}");
        assert!(
            status.contains("Original-Recipient: rfc822; Bob@remote.test"),
            "{status}"
        );
        assert!(
            status.contains("Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.remote.test"),
            "{status}"
        );
        assert!(status.contains("Original-Envelope-Id: QQ314159"));
        let returned = msg.parts[3].message().expect("message/rfc822 part");
        assert_eq!(returned.subject(), Some("lunch"));
        assert!(
            String::from_utf8_lossy(msg.parts[1].contents()).contains("<bob@remote.test>: host mx.remote.test said")
        );
    }

    #[test]
    fn success_notices_say_delivered_or_relayed() {
        let head = header_of(b"Subject: hi\n\nbody\n");
        for (kind, action) in [(NoticeKind::Success, "delivered"), (NoticeKind::Relayed, "relayed")] {
            let bytes = report(kind, head, true);
            let msg = MessageParser::default().parse(&bytes).expect("parses");
            assert_eq!(msg.subject(), Some("Successful Mail Delivery Report"));
            let status = String::from_utf8_lossy(msg.parts[2].contents()).into_owned();
            assert!(status.contains(&format!("Action: {action}\n")), "{status}");
            let ct = msg.parts[3].content_type().expect("ct");
            assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("rfc822-headers")));
            assert_eq!(
                msg.parts[3].content_description(),
                Some("Message Headers"),
                "not called undelivered"
            );
        }
    }

    #[test]
    fn delay_notice_and_headers_only() {
        let original = b"Subject: big\nX-A: b\n\n";
        let bytes = report(
            NoticeKind::Delay,
            header_of(b"Subject: big\nX-A: b\n\nbody body\n"),
            true,
        );
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
        let ct = msg.parts[3].content_type().expect("ct");
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("rfc822-headers")));
        assert!(String::from_utf8_lossy(&bytes).contains("Action: delayed"));
        assert_eq!(
            header_of(b"Subject: big\nX-A: b\n\nbody body\n"),
            &original[..original.len() - 1]
        );
    }
}
