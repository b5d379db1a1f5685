//! One delivery job to one nexthop: find the addresses ([`crate::lookup`]), try them in
//! order until one takes the transaction ([`crate::session`]), and give every recipient an
//! outcome: the server's reply (2xx sent, 4xx deferred, 5xx bounced), or — when no
//! address could be used — the last error, deferred unless every server refused with
//! 5xx. The remote reply is kept word for word for the log and the bounce. The nexthop's
//! TLS policy comes from [`crate::policy`]; a policy that cannot be met (TLS required but
//! not offered, a certificate that does not verify) defers, as in Postfix.

use crate::lookup::{Dns, LookupError, Nexthop};
use crate::session::{Params, Session, SessionError};
use crate::tls::Policy;
use postern_lib::agent::Job;
use postern_lib::dsn::Dsn;
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

/// Keeps `session` for the next job to `nexthop`, or says goodbye when the cache is off.
fn park(cache: &mut Option<Cached>, nexthop: &str, session: Session, limit: Duration) {
    if limit.is_zero() {
        session.quit();
        return;
    }
    *cache = Some(Cached {
        nexthop: nexthop.to_string(),
        session,
        since: Instant::now(),
    });
}

/// The connection cache and its time limit.
pub struct Cache<'a> {
    /// The kept session.
    pub slot: &'a mut Option<Cached>,
    /// `smtp_connection_cache_time_limit`.
    pub limit: Duration,
}

/// Delivers the pending recipients of `job` under the nexthop's TLS `policy` (or defers
/// them with the policy error), reusing the cached session when it goes to the same
/// nexthop and leaving the session there afterwards.
pub fn deliver(job: &mut Job, dns: &Dns, params: &Params, policy: Result<Policy, String>, cache: Cache<'_>) {
    let pending = job.pending();
    if pending.is_empty() {
        return;
    }
    let relay_none = "none";
    let policy = match policy {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(queue_id = %job.req.queue_id, "{e}");
            for p in pending {
                job.complete(
                    p,
                    451,
                    Dsn::CRYPTO_FAILURE,
                    &format!("TLS policy lookup error: {e}"),
                    relay_none,
                );
            }
            return;
        }
    };
    let Cache { slot: cache, limit } = cache;
    let nexthop = job.req.nexthop.clone();
    if let Some(session) = reuse(cache, &nexthop, limit) {
        match attempt(job, &pending, session, (cache, limit), &nexthop) {
            Attempt::Done => return,
            // The cached connection broke before anything was sent: start afresh.
            Attempt::NotStarted(_) => {}
        }
    }
    let parsed = Nexthop::parse_for(&nexthop, params.lmtp);
    let name = match &parsed {
        Ok(Nexthop::Domain(d)) | Ok(Nexthop::Host(d, _)) => d.clone(),
        _ => String::new(),
    };
    let targets = match parsed.and_then(|n| dns.targets(&n)) {
        Ok(t) => t,
        Err(e) => {
            let (code, dsn) = match &e {
                LookupError::Temporary(..) => (451, Dsn::DIRECTORY_FAILURE),
                LookupError::NullMx(..) => (556, Dsn::NULL_MX),
                LookupError::NotFound(..) | LookupError::BadNexthop(_) => (550, Dsn::UNABLE_TO_ROUTE),
            };
            for p in pending {
                job.complete(p, code, dsn, &e.to_string(), relay_none);
            }
            return;
        }
    };
    // The last failure and its text for the log and the bounce.
    let mut last: Option<(SessionError, String)> = None;
    let mut all_refused_permanently = true;
    for target in &targets {
        let session = match Session::open(target, params, &policy, &name) {
            Ok(s) => s,
            Err(e) => {
                let text = match &e {
                    SessionError::Refused(r) => {
                        format!("host {} refused to talk to me: {}", target.name(), r.one_line())
                    }
                    other => other.to_string(),
                };
                tracing::info!(queue_id = %job.req.queue_id, "{text}");
                all_refused_permanently &= !e.is_temporary();
                last = Some((e, text));
                continue;
            }
        };
        match attempt(job, &pending, session, (cache, limit), &nexthop) {
            Attempt::Done => return,
            Attempt::NotStarted(e) => {
                all_refused_permanently &= !e.is_temporary();
                let text = e.to_string();
                last = Some((e, text));
            }
        }
    }
    let (code, dsn, text) = match last {
        Some((SessionError::Refused(r), text)) if all_refused_permanently => (r.code, r.dsn(), text),
        Some((SessionError::Tls(t), _)) if t.contains("was not offered") => (451, Dsn::TLS_UNAVAILABLE, t),
        Some((SessionError::Tls(t), _)) => (451, Dsn::CRYPTO_FAILURE, t),
        Some((_, text)) => (451, Dsn::NO_ANSWER, text),
        None => (451, Dsn::NO_ANSWER, "no address to connect to".to_string()),
    };
    for p in pending {
        job.complete(p, code, dsn, &text, relay_none);
    }
}

/// `SIZE=`, `BODY=8BITMIME`, `SMTPUTF8` and the DSN parameters as the server supports them.
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
    if session.has("DSN") {
        out.push_str(&crate::dsn::mail_params(&job.qf.envelope));
    }
    out
}

/// Each pending recipient with its RCPT parameters (DSN, when the server supports it).
fn rcpt_args(job: &Job, pending: &[usize], session: &Session) -> Vec<(String, String)> {
    let dsn = session.has("DSN");
    pending
        .iter()
        .map(|&p| {
            let r = &job.req.recipients[p];
            let params = match job.qf.recipients.get(r.index) {
                Some(rec) if dsn => crate::dsn::rcpt_params(&rec.spec),
                _ => String::new(),
            };
            (r.address.clone(), params)
        })
        .collect()
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
    (cache, cache_limit): (&mut Option<Cached>, Duration),
    nexthop: &str,
) -> Attempt {
    let reused = session.reused;
    let target = session.target.clone();
    let relay = target.relay();
    let size = job.qf.content_len();
    if let Some(limit) = session.size_limit()
        && size > limit
    {
        let text = format!("message size {size} exceeds size limit {limit} of server {relay}");
        for &p in pending {
            job.complete(p, 552, Dsn::TOO_BIG, &text, &relay);
        }
        park(cache, nexthop, session, cache_limit);
        return Attempt::Done;
    }
    let params_text = mail_params(job, &session, size);
    let mut content = match job.content() {
        Ok(c) => c,
        Err(e) => {
            for &p in pending {
                job.complete(
                    p,
                    451,
                    Dsn::MAIL_SYSTEM,
                    &format!("cannot read queue file: {e}"),
                    &relay,
                );
            }
            return Attempt::Done;
        }
    };
    let recipients = rcpt_args(job, pending, &session);
    let handoff = crate::dsn::handoff(&session, &target.host);
    match session.transaction(&job.req.sender.clone(), &params_text, &recipients, &mut content) {
        Ok(replies) => {
            for (&p, reply) in pending.iter().zip(&replies) {
                let text = if reply.is_positive() {
                    reply.one_line()
                } else {
                    format!("host {} said: {}", target.name(), reply.one_line())
                };
                let code = if reply.is_positive() || reply.is_transient() || reply.code >= 500 {
                    reply.code
                } else {
                    451
                };
                job.complete_handoff(p, code, reply.dsn(), &text, &relay, handoff.clone());
            }
            session.reused = true;
            park(cache, nexthop, session, cache_limit);
            Attempt::Done
        }
        Err(e) if reused => Attempt::NotStarted(e),
        Err(e) => {
            let text = format!("lost connection with {relay} while sending: {e}");
            for &p in pending {
                job.complete(p, 451, Dsn::BAD_CONNECTION, &text, &relay);
            }
            Attempt::Done
        }
    }
}
