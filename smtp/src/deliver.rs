//! One delivery job to one nexthop: find the addresses ([`crate::lookup`]), try them in
//! order until one takes the transaction ([`crate::session`]), and give every recipient an
//! outcome: the server's reply (2xx sent, 4xx deferred, 5xx bounced), or — when no
//! address could be used — the last error, deferred unless every server refused with
//! 5xx. The remote reply is kept word for word for the log and the bounce.

use crate::lookup::{Dns, LookupError, Nexthop};
use crate::session::{Params, Session, SessionError};
use postern_lib::agent::Job;
use postern_lib::queue_file::attr;
use std::time::{Duration, Instant};

/// A session kept open after a job, for the next job to the same nexthop (Postfix's
/// connection cache, per process: one session, reused within `smtp_connection_cache_time_limit`).
pub struct Cached {
    nexthop: String,
    session: Session,
    since: Instant,
}

/// Takes the cached session for `nexthop` if it is fresh and answers RSET; any other
/// cached session is closed.
fn reuse(cache: &mut Option<Cached>, nexthop: &str, limit: Duration) -> Option<Session> {
    let c = cache.take()?;
    if c.nexthop == nexthop && c.since.elapsed() < limit {
        let mut s = c.session;
        if s.reset() {
            return Some(s);
        }
        return None;
    }
    c.session.quit();
    None
}

/// Delivers the pending recipients of `job`, reusing `cache` when it holds a session to the
/// same nexthop and leaving the session there afterwards.
pub fn deliver(job: &mut Job, dns: &Dns, params: &Params, cache: &mut Option<Cached>, cache_limit: Duration) {
    let pending = job.pending();
    if pending.is_empty() {
        return;
    }
    let nexthop = job.req.nexthop.clone();
    if let Some(session) = reuse(cache, &nexthop, cache_limit) {
        let target = session.target.clone();
        match attempt(job, &pending, session, &target, cache, &nexthop) {
            Attempt::Done => return,
            // The cached connection broke before anything was sent: start afresh.
            Attempt::NotStarted(_) => {}
        }
    }
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
    let mut last: Option<SessionError> = None;
    let mut all_refused_permanently = true;
    for target in &targets {
        let session = match Session::open(target, params) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(queue_id = %job.req.queue_id, "connect to {}[{}]: {e}", target.host, target.addr);
                all_refused_permanently &= !e.is_temporary();
                last = Some(e);
                continue;
            }
        };
        match attempt(job, &pending, session, target, cache, &nexthop) {
            Attempt::Done => return,
            Attempt::NotStarted(e) => {
                all_refused_permanently &= !e.is_temporary();
                last = Some(e);
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

/// How one attempt over one session ended.
enum Attempt {
    /// Every pending recipient has its outcome.
    Done,
    /// The session failed before a transaction result; try the next address.
    NotStarted(SessionError),
}

/// One transaction over `session` for the pending recipients. A fresh session that breaks
/// mid-transaction defers everything (the server may or may not have the message: a
/// possible duplicate beats a possible loss); a reused one is reported as not started so
/// that a fresh connection is tried at once, with the same duplicate risk as a retry.
fn attempt(
    job: &mut Job,
    pending: &[usize],
    mut session: Session,
    target: &crate::lookup::Target,
    cache: &mut Option<Cached>,
    nexthop: &str,
) -> Attempt {
    let reused = session.reused;
    let relay = format!("{}[{}]:{}", target.host, target.addr.ip(), target.addr.port());
    let size = job.qf.content_len();
    if let Some(limit) = session.size_limit()
        && size > limit
    {
        let text = format!("message size {size} exceeds size limit {limit} of server {relay}");
        for &p in pending {
            job.complete(p, 552, "5.3.4", &text, &relay);
        }
        *cache = Some(Cached {
            nexthop: nexthop.to_string(),
            session,
            since: Instant::now(),
        });
        return Attempt::Done;
    }
    let params_text = mail_params(job, &session, size);
    let mut content = match job.content() {
        Ok(c) => c,
        Err(e) => {
            for &p in pending {
                job.complete(p, 451, "4.3.0", &format!("cannot read queue file: {e}"), &relay);
            }
            return Attempt::Done;
        }
    };
    let recipients: Vec<String> = pending.iter().map(|&p| job.req.recipients[p].address.clone()).collect();
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
            session.reused = true;
            *cache = Some(Cached {
                nexthop: nexthop.to_string(),
                session,
                since: Instant::now(),
            });
            Attempt::Done
        }
        Err(e) if reused => Attempt::NotStarted(e),
        Err(e) => {
            let text = format!("lost connection with {relay} while sending: {e}");
            for &p in pending {
                job.complete(p, 451, "4.4.2", &text, &relay);
            }
            Attempt::Done
        }
    }
}
