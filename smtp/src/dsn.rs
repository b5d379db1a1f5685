//! DSN parameters onward (RFC 3461): when the next hop announces `DSN`, the envelope's
//! `RET=` and `ENVID=` go on MAIL FROM and each recipient's `NOTIFY=` and `ORCPT=` on
//! RCPT TO, from what cleanup kept in the queue file. A recipient without an ORCPT gets
//! `ORCPT=rfc822;<the address it was queued for>` (as Postfix's smtp does), so the final
//! report names the address the sender used even after aliasing. Values are xtext-encoded.
//!
//! When the next hop does not announce DSN, nothing is sent (RFC 3461 section 4.1), and the
//! request ends here: a delivered recipient's result says [`Handoff::Relayed`], and qmgr
//! has the bounce daemon send a NOTIFY=SUCCESS recipient's sender a "relayed" notice
//! (RFC 3461 section 6.2.2). When it does announce DSN, the result says
//! [`Handoff::DsnPassed`] and no notice comes from us: the next hop reports. As Postfix
//! (with `lmtp_assume_final = no`, its default), an LMTP server without DSN counts as
//! "relayed" too.

use crate::session::Session;
use postern_lib::proto::deliver::Handoff;
use postern_lib::queue_file::{Envelope, Notify, RecipientSpec, attr};

/// Where a message accepted over `session` went, for success notices.
pub fn handoff(session: &Session, host: &str) -> Handoff {
    if session.has("DSN") {
        Handoff::DsnPassed
    } else {
        Handoff::Relayed {
            remote_mta: host.to_string(),
        }
    }
}

/// RFC 3461 section 4: characters outside `!`..`~`, `+` and `=` as `+HH`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// ` RET=... ENVID=...` for MAIL FROM (empty when neither was given).
pub fn mail_params(env: &Envelope) -> String {
    let mut out = String::new();
    if let Some(ret) = env.attributes.get(attr::DSN_RET) {
        let ret = ret.to_ascii_uppercase();
        if ret == "FULL" || ret == "HDRS" {
            out.push_str(&format!(" RET={ret}"));
        }
    }
    if let Some(envid) = env.attributes.get(attr::DSN_ENVID).filter(|e| !e.is_empty()) {
        out.push_str(&format!(" ENVID={}", xtext(envid)));
    }
    out
}

/// The NOTIFY keyword list, when NOTIFY was given.
fn notify(n: Notify) -> Option<String> {
    if n.never() {
        return Some("NEVER".into());
    }
    let words: Vec<&str> = [(n.success(), "SUCCESS"), (n.failure(), "FAILURE"), (n.delay(), "DELAY")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
    (!words.is_empty()).then(|| words.join(","))
}

/// ` NOTIFY=... ORCPT=...` for RCPT TO of `spec`.
pub fn rcpt_params(spec: &RecipientSpec) -> String {
    let mut out = String::new();
    if let Some(n) = notify(spec.notify) {
        out.push_str(&format!(" NOTIFY={n}"));
    }
    let orcpt = match &spec.orcpt {
        Some(o) if o.contains(';') => o.clone(),
        _ => format!("rfc822;{}", spec.address),
    };
    out.push_str(&format!(" ORCPT={}", xtext(&orcpt)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::queue_file::Arrival;
    use postern_lib::queue_id::QueueId;

    #[test]
    fn xtext_escapes_plus_equals_and_controls() {
        assert_eq!(xtext("a+b=c d\u{7f}"), "a+2Bb+3Dc+20d+7F");
        assert_eq!(xtext("rfc822;bob@x.test"), "rfc822;bob@x.test");
    }

    #[test]
    fn parameters_from_the_queue_file() {
        let mut env = Envelope {
            queue_id: QueueId::new(),
            arrival: Arrival { secs: 0, micros: 0 },
            sender: "a@x.test".into(),
            attributes: Default::default(),
        };
        assert_eq!(mail_params(&env), "");
        env.attributes.insert(attr::DSN_RET.into(), "hdrs".into());
        env.attributes.insert(attr::DSN_ENVID.into(), "id+1".into());
        assert_eq!(mail_params(&env), " RET=HDRS ENVID=id+2B1");
        let spec = RecipientSpec {
            address: "b@y.test".into(),
            orcpt: None,
            notify: Notify::new(true, true, false),
        };
        assert_eq!(rcpt_params(&spec), " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test");
        let spec = RecipientSpec {
            address: "b@y.test".into(),
            orcpt: Some("rfc822;list+x@z.test".into()),
            notify: Notify::NEVER,
        };
        assert_eq!(rcpt_params(&spec), " NOTIFY=NEVER ORCPT=rfc822;list+2Bx@z.test");
        let spec = RecipientSpec {
            address: "b@y.test".into(),
            orcpt: None,
            notify: Notify::UNSPECIFIED,
        };
        assert_eq!(rcpt_params(&spec), " ORCPT=rfc822;b@y.test");
    }
}
