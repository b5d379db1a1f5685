//! The brute-force throttle: failed attempts counted per client address and per user in
//! bounded maps, a delay before a failure is answered that grows with recent failures
//! (capped at `auth_failure_delay`), and a lockout once `auth_failure_limit` failures
//! happened within `auth_failure_window` — lasting until the window has passed since the
//! last failure. Attempts refused by the lockout are not counted, so the lockout ends one
//! window after the attacker's last real try. A success clears the user's count (not the
//! address's: a valid account must not launder an address that guesses others).
//!
//! Each map holds at most [`MAX_ENTRIES`]; when full, expired entries go first, then the
//! entry whose last failure is oldest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most addresses (and, separately, most user names) remembered.
pub const MAX_ENTRIES: usize = 10_000;

/// The first failure's delay; each further failure doubles it, up to the cap.
pub const BASE_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    last: Instant,
}

#[derive(Debug, Default)]
struct Counter {
    map: HashMap<String, Entry>,
}

impl Counter {
    fn current(&self, key: &str, now: Instant, window: Duration) -> u32 {
        match self.map.get(key) {
            Some(e) if now.saturating_duration_since(e.last) < window => e.count,
            _ => 0,
        }
    }

    fn fail(&mut self, key: &str, now: Instant, window: Duration) -> u32 {
        let count = self.current(key, now, window).saturating_add(1);
        if !self.map.contains_key(key) && self.map.len() >= MAX_ENTRIES {
            self.map.retain(|_, e| now.saturating_duration_since(e.last) < window);
            if self.map.len() >= MAX_ENTRIES
                && let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key.to_string(), Entry { count, last: now });
        count
    }

    fn clear(&mut self, key: &str) {
        self.map.remove(key);
    }
}

/// The throttle state of one auth process.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    max_delay: Duration,
    clients: Counter,
    users: Counter,
}

impl Throttle {
    /// A throttle locking out after `limit` failures within `window`, delaying failures by
    /// at most `max_delay`.
    pub fn new(limit: u32, window: Duration, max_delay: Duration) -> Throttle {
        Throttle {
            limit: limit.max(1),
            window,
            max_delay,
            clients: Counter::default(),
            users: Counter::default(),
        }
    }

    /// Whether an attempt for `user` from `client` is refused without looking at the password.
    pub fn locked(&self, user: &str, client: Option<&str>, now: Instant) -> bool {
        let by_user = self.users.current(user, now, self.window) >= self.limit;
        let by_client = client.is_some_and(|c| self.clients.current(c, now, self.window) >= self.limit);
        by_user || by_client
    }

    /// Records a failure; returns the delay before it is answered.
    pub fn fail(&mut self, user: &str, client: Option<&str>, now: Instant) -> Duration {
        let u = self.users.fail(user, now, self.window);
        let c = client.map(|c| self.clients.fail(c, now, self.window)).unwrap_or(0);
        self.delay_for(u.max(c))
    }

    /// The delay for an attempt refused by the lockout (the cap).
    pub fn locked_delay(&self) -> Duration {
        self.max_delay
    }

    /// Records a success.
    pub fn succeed(&mut self, user: &str) {
        self.users.clear(user);
    }

    fn delay_for(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        BASE_DELAY.saturating_mul(1u32 << shift).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_locks_out() {
        let mut t = Throttle::new(3, Duration::from_secs(60), Duration::from_secs(2));
        let now = Instant::now();
        assert_eq!(t.fail("alice", Some("192.0.2.1"), now), Duration::from_millis(250));
        assert_eq!(t.fail("alice", Some("192.0.2.1"), now), Duration::from_millis(500));
        assert!(!t.locked("alice", Some("192.0.2.1"), now));
        assert_eq!(t.fail("alice", Some("192.0.2.1"), now), Duration::from_secs(1));
        assert!(t.locked("alice", Some("192.0.2.1"), now));
        assert!(t.locked("bob", Some("192.0.2.1"), now), "address locked for every user");
        assert!(
            t.locked("alice", Some("192.0.2.9"), now),
            "user locked from every address"
        );
        assert!(!t.locked("bob", Some("192.0.2.9"), now));
        let later = now + Duration::from_secs(61);
        assert!(
            !t.locked("alice", Some("192.0.2.1"), later),
            "lockout ends after the window"
        );
    }

    #[test]
    fn delay_is_capped_and_success_clears_user() {
        let mut t = Throttle::new(100, Duration::from_secs(60), Duration::from_secs(2));
        let now = Instant::now();
        let mut d = Duration::ZERO;
        for _ in 0..20 {
            d = t.fail("carol", None, now);
        }
        assert_eq!(d, Duration::from_secs(2));
        t.succeed("carol");
        assert_eq!(t.fail("carol", None, now), Duration::from_millis(250));
    }

    #[test]
    fn maps_stay_bounded() {
        let mut t = Throttle::new(5, Duration::from_secs(60), Duration::from_secs(1));
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES + 50) {
            t.fail(&format!("u{i}"), Some(&format!("10.0.{}.{}", i / 256, i % 256)), now);
        }
        assert!(t.users.map.len() <= MAX_ENTRIES);
        assert!(t.clients.map.len() <= MAX_ENTRIES);
    }
}
