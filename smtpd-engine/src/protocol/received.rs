//! The `Received:` header smtpd puts first in every message, in Postfix's layout:
//!
//! ```text
//! Received: from helo.name (unknown [192.0.2.1])
//!         (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
//!         (No client certificate requested)
//!         (Authenticated sender: alice)
//!         by mail.example.test (Postern) with ESMTPSA id 0Vxq3Yk9c0012345
//!         for <bob@example.test>; Sun, 22 Nov 2026 18:13:03 +0000 (UTC)
//! ```
//!
//! The `id` is the queue ID cleanup names when the message begins
//! ([`postern_lib::proto::cleanup::CleanupStarted`]); a session without one (`sendmail
//! -bs`) writes no `id` clause. `for <...>` is written when the message has exactly one
//! recipient, as Postfix does.

use super::TlsInfo;

/// What the header says.
pub struct ReceivedFacts<'a> {
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The client's reverse name (`unknown`).
    pub client_name: &'a str,
    /// The client's address.
    pub client_addr: &'a str,
    /// TLS, when used.
    pub tls: Option<&'a TlsInfo>,
    /// The SASL user, when authenticated.
    pub sasl_user: Option<&'a str>,
    /// Our host name.
    pub hostname: &'a str,
    /// SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA.
    pub protocol: &'a str,
    /// The queue ID, when known.
    pub queue_id: Option<&'a str>,
    /// The one recipient, if exactly one.
    pub single_rcpt: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: u64,
}

/// The header, folded, ending in CRLF.
pub fn header(f: &ReceivedFacts<'_>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() || c == '(' || c == ')' { '?' } else { c })
            .take(255)
            .collect()
    };
    let mut h = format!(
        "Received: from {} ({} [{}])\r\n",
        clean(f.helo),
        clean(f.client_name),
        f.client_addr
    );
    if let Some(t) = f.tls {
        h.push_str(&format!("\t(using {} with cipher {})\r\n", t.version, t.cipher));
        h.push_str("\t(No client certificate requested)\r\n");
    }
    if let Some(u) = f.sasl_user {
        h.push_str(&format!("\t(Authenticated sender: {})\r\n", clean(u)));
    }
    h.push_str(&format!("\tby {} (Postern) with {}", f.hostname, f.protocol));
    if let Some(id) = f.queue_id {
        h.push_str(&format!(" id {}", clean(id)));
    }
    match f.single_rcpt {
        Some(r) => h.push_str(&format!("\r\n\tfor <{}>; {}\r\n", clean(r), rfc5322_date(f.now))),
        None => h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(f.now))),
    }
    h
}

/// `Sun, 22 Nov 2026 18:13:03 +0000 (UTC)`.
pub fn rfc5322_date(secs: u64) -> String {
    format!("{} (UTC)", postern_lib::date::rfc5322_secs(secs))
}
