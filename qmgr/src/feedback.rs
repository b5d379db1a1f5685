//! Slow start and back-off per destination, as Postfix's qmgr does it.
//!
//! A destination starts with a window of `initial_destination_concurrency` parallel
//! deliveries (`smtp_initial_destination_concurrency` for smtp), never more than its
//! concurrency limit. Each delivery that reached the destination widens the window by one,
//! up to the limit. Each delivery that failed at the site level — the destination could
//! not be reached or would not talk (a connect failure, a greeting refused, a timeout, TLS
//! that cannot be had: every recipient deferred with an RFC 3463 `4.4.x` network or
//! routing status, or `4.7.4`/`4.7.5` for TLS) — narrows it by `1/window` and adds
//! `1/window` to the failed cohorts, so a whole window's worth of failures with no success
//! in between is one cohort. When the failed cohorts reach
//! `default_destination_concurrency_failed_cohort_limit`, the destination is throttled
//! "dead" for `minimal_backoff_time`: its mail is deferred at once with "delivery
//! temporarily suspended: <the last reason>", without a new connection. A success (from a
//! delivery still in flight), the end of the dead time or a flush (`postqueue -f`) opens
//! it again with the initial window.
//!
//! Unlike Postfix, which forgets a destination's failures as soon as it has no mail
//! queued, a destination that failed is remembered for `minimal_backoff_time` after its
//! last failure even when its queue runs empty, so mail that trickles in one message at a
//! time still adds up to a failed cohort.

use postern_lib::dsn::{Class, Dsn};
use postern_lib::proto::deliver::DeliverReply;
use std::time::{Duration, Instant};

/// The concurrency window of one destination.
#[derive(Debug, Clone)]
pub struct Window {
    window: f64,
    fail_cohorts: f64,
    dead_until: Option<Instant>,
    /// Until when failures are remembered without mail queued.
    forget_at: Option<Instant>,
    /// The last site failure: (dsn, reason).
    pub reason: (Dsn, String),
}

impl Window {
    /// A fresh window of `initial` deliveries.
    pub fn new(initial: usize) -> Window {
        Window {
            window: initial as f64,
            fail_cohorts: 0.0,
            dead_until: None,
            forget_at: None,
            reason: (Dsn::MAIL_SYSTEM, String::new()),
        }
    }

    /// How many deliveries may run at once now (0 while dead), at most `limit`.
    pub fn allowed(&mut self, now: Instant, initial: usize, limit: usize) -> usize {
        if let Some(until) = self.dead_until {
            if until > now {
                return 0;
            }
            *self = Window::new(initial);
        }
        (self.window.floor() as usize).clamp(1, limit.max(1))
    }

    /// Whether the destination is throttled now.
    pub fn dead(&self, now: Instant) -> bool {
        self.dead_until.is_some_and(|t| t > now)
    }

    /// Whether the window must be kept although no mail is queued: the destination is
    /// dead or failed recently.
    pub fn remembered(&self, now: Instant) -> bool {
        self.dead(now) || self.forget_at.is_some_and(|t| t > now)
    }

    /// A delivery reached the destination.
    pub fn success(&mut self, initial: usize, limit: usize) {
        if self.dead_until.take().is_some() {
            self.window = initial as f64;
        }
        self.window = (self.window + 1.0).min(limit as f64);
        self.fail_cohorts = 0.0;
        self.forget_at = None;
    }

    /// A delivery failed at the site level; true when this makes the destination dead
    /// (for `dead_time` from `now`).
    pub fn failure(&mut self, dsn: Dsn, reason: &str, cohort_limit: f64, dead_time: Duration, now: Instant) -> bool {
        self.reason = (dsn, reason.to_string());
        self.forget_at = Some(now + dead_time);
        if self.dead(now) {
            return false;
        }
        let w = self.window.max(1.0);
        self.fail_cohorts += 1.0 / w;
        self.window = (w - 1.0 / w).max(1.0);
        if self.fail_cohorts >= cohort_limit - 1e-9 {
            self.dead_until = Some(now + dead_time);
            return true;
        }
        false
    }
}

/// Whether a job's reply says the destination itself failed: every recipient deferred with
/// a network/routing (`4.4.x`) or TLS (`4.7.4`, `4.7.5`) status. Returns (dsn, reason).
pub fn site_failure(reply: &DeliverReply) -> Option<(Dsn, String)> {
    let site = |dsn: Dsn| {
        (dsn.class() == Class::Transient && dsn.subject() == 4)
            || dsn == Dsn::TLS_UNAVAILABLE
            || dsn == Dsn::CRYPTO_FAILURE
    };
    let all = !reply.results.is_empty() && reply.results.iter().all(|r| r.code / 100 == 4 && site(r.dsn));
    let first = reply.results.first()?;
    all.then(|| (first.dsn, first.text.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::proto::deliver::RecipientResult;

    #[test]
    fn slow_start_grows_to_the_limit() {
        let now = Instant::now();
        let mut w = Window::new(1);
        assert_eq!(w.allowed(now, 1, 3), 1);
        w.success(1, 3);
        assert_eq!(w.allowed(now, 1, 3), 2);
        w.success(1, 3);
        w.success(1, 3);
        assert_eq!(w.allowed(now, 1, 3), 3, "never above the limit");
    }

    #[test]
    fn a_failed_cohort_makes_the_destination_dead_for_a_while() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut w = Window::new(2);
        assert!(!w.remembered(now));
        assert!(!w.failure(Dsn::NO_ANSWER, "refused", 1.0, hour, now));
        assert!(w.remembered(now) && !w.dead(now), "a failure is remembered");
        assert_eq!(w.allowed(now, 2, 5), 1, "the window narrows");
        assert!(
            w.failure(Dsn::NO_ANSWER, "refused", 1.0, hour, now),
            "a window's worth of failures"
        );
        assert!(w.dead(now));
        assert_eq!(w.allowed(now, 2, 5), 0);
        assert!(!w.failure(Dsn::NO_ANSWER, "again", 1.0, hour, now), "already dead");
        assert_eq!(w.reason.1, "again");
        let later = now + hour + Duration::from_secs(1);
        assert_eq!(w.allowed(later, 2, 5), 2, "open again with the initial window");
        assert!(!w.remembered(later));
        // A success in between resets the failed cohorts.
        let mut w = Window::new(1);
        w.success(1, 5);
        w.success(1, 5);
        assert!(!w.failure(Dsn::NO_ANSWER, "x", 1.0, hour, now));
        w.success(1, 5);
        assert!(!w.failure(Dsn::NO_ANSWER, "x", 1.0, hour, now));
    }

    #[test]
    fn only_network_failures_of_every_recipient_count() {
        let r = |code: u16, dsn: &str| RecipientResult {
            index: 0,
            address: "a@b".into(),
            code,
            dsn: dsn.parse().unwrap(),
            text: "t".into(),
            handoff: Default::default(),
        };
        let reply = |v: Vec<RecipientResult>| DeliverReply { results: v };
        assert!(site_failure(&reply(vec![r(451, "4.4.1"), r(451, "4.4.1")])).is_some());
        assert!(site_failure(&reply(vec![r(451, "4.7.4")])).is_some());
        assert!(
            site_failure(&reply(vec![r(450, "4.2.0")])).is_none(),
            "a busy mailbox is not the site"
        );
        assert!(site_failure(&reply(vec![r(451, "4.4.1"), r(250, "2.0.0")])).is_none());
        assert!(site_failure(&reply(vec![])).is_none());
    }
}
