//! One delivery job to one nexthop: find the addresses ([`crate::lookup`]), try them in
//! order until one takes the transaction ([`crate::session`]), and give every recipient an
//! outcome: the server's reply (2xx sent, 4xx deferred, 5xx bounced), or — when no
//! address could be used — the last error, deferred unless every server refused with
//! 5xx. The remote reply is kept word for word for the log and the bounce.

use crate::lookup::{Dns, LookupError, Nexthop};
use crate::session::{Params, Session, SessionError};
use postern_lib::agent::Job;
use postern_lib::queue_file::attr;

/// Delivers the pending recipients of `job`.
pub fn deliver(job: &mut Job, dns: &Dns, params: &Params) {
    let pending = job.pending();
    if pending.is_empty() {
        return;
    }
    let nexthop = job.req.nexthop.clone();
    let relay_none = "none";
    let targets = match Nexthop::parse(&nexthop).and_then(|n| dns.targets(&n)) {
        Ok(t) => t,
        Err(e) => {
            let (code, dsn) = match &e {
                LookupError::Temporary(..) => (451, "4.4.3"),
                LookupError::NullMx(..) => (556, "5.1.10"),
                LookupError::NotFound(..) | LookupError::BadNexthop(_) => (550, "5.4.4"),
            };
            for p in pending {
                job.complete(p, code, dsn, &e.to_string(), relay_none);
            }
            return;
        }
    };
    let recipients: Vec<String> = pending.iter().map(|&p| job.req.recipients[p].address.clone()).collect();
    let size = job.qf.content_len();
    let mut last: Option<SessionError> = None;
    let mut all_refused_permanently = true;
    for target in &targets {
        let mut session = match Session::open(target, params) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(queue_id = %job.req.queue_id, "connect to {}[{}]: {e}", target.host, target.addr);
                all_refused_permanently &= !e.is_temporary();
                last = Some(e);
                continue;
            }
        };
        let relay = format!("{}[{}]:{}", target.host, target.addr.ip(), target.addr.port());
        if let Some(limit) = session.size_limit()
            && size > limit
        {
            let text = format!("message size {size} exceeds size limit {limit} of server {relay}");
            for &p in &pending {
                job.complete(p, 552, "5.3.4", &text, &relay);
            }
            session.quit();
            return;
        }
        let params_text = mail_params(job, &session, size);
        let mut content = match job.content() {
            Ok(c) => c,
            Err(e) => {
                for &p in &pending {
                    job.complete(p, 451, "4.3.0", &format!("cannot read queue file: {e}"), &relay);
                }
                return;
            }
        };
        match session.transaction(&job.req.sender.clone(), &params_text, &recipients, &mut content) {
            Ok(replies) => {
                for (&p, reply) in pending.iter().zip(&replies) {
                    let text = if reply.is_positive() {
                        reply.one_line()
                    } else {
                        format!("host {}[{}] said: {}", target.host, target.addr.ip(), reply.one_line())
                    };
                    let code = if reply.is_positive() || reply.is_transient() || reply.code >= 500 {
                        reply.code
                    } else {
                        451
                    };
                    job.complete(p, code, &reply.dsn(), &text, &relay);
                }
                session.quit();
                return;
            }
            Err(e) => {
                // The session broke in the middle: nothing can be known for sure, so
                // defer all (the server may or may not have taken the message; a
                // possible duplicate beats a possible loss).
                let text = format!("lost connection with {relay} while sending: {e}");
                for &p in &pending {
                    job.complete(p, 451, "4.4.2", &text, &relay);
                }
                return;
            }
        }
    }
    let (code, dsn, text) = match last {
        Some(SessionError::Refused(r)) if all_refused_permanently => (r.code, r.dsn(), r.one_line()),
        Some(SessionError::Tls(t)) => (451, "4.7.5".to_string(), format!("TLS is required, but {t}")),
        Some(e) => (451, "4.4.1".to_string(), e.to_string()),
        None => (451, "4.4.1".to_string(), "no address to connect to".to_string()),
    };
    for p in pending {
        job.complete(p, code, &dsn, &text, relay_none);
    }
}

/// `SIZE=`, `BODY=8BITMIME` and `SMTPUTF8` as the server supports them.
fn mail_params(job: &Job, session: &Session, size: u64) -> String {
    let mut out = String::new();
    if session.has("SIZE") {
        out.push_str(&format!(" SIZE={size}"));
    }
    let attrs = &job.qf.envelope.attributes;
    if attrs
        .get(attr::BODY)
        .is_some_and(|b| b.eq_ignore_ascii_case("8BITMIME"))
        && session.has("8BITMIME")
    {
        out.push_str(" BODY=8BITMIME");
    }
    if attrs.contains_key(attr::SMTPUTF8) && session.has("SMTPUTF8") {
        out.push_str(" SMTPUTF8");
    }
    out
}
