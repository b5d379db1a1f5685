//! The brute-force penalty, as Dovecot's `auth_penalty`: failed attempts are counted per
//! client address, and every further attempt from an address with failures waits before
//! its password is even checked — [`INITIAL_PENALTY`] after the first failure, doubling
//! with each one up to `auth_penalty_max` (Dovecot: 2, 4, 8, 15 s). A success from the
//! address clears its count (so a shared address, an office behind NAT, is not punished
//! for long by one user's typo), and a count is forgotten `auth_failure_window` after
//! its last failure.
//!
//! Nothing here ever refuses an attempt: a correct password is accepted from every
//! address, at worst after the penalty of its own address. There is no per-user count —
//! any per-user rule would let anyone slow or lock out a user they can name.
//!
//! Addresses are keyed as Dovecot does, except that an IPv6 client counts by its /64 (one
//! subscriber's whole allocation; otherwise a guesser could use a fresh address for
//! every attempt), and an IPv4-mapped IPv6 address counts as the IPv4 address.
//!
//! A failure that repeats the address's previous failed attempt exactly (same user, same
//! password: a mail client retrying a saved wrong password) does not raise the penalty,
//! as in Dovecot; only a keyed hash of the attempt is kept, never the password.
//!
//! The table holds at most [`MAX_ENTRIES`] addresses; when full, forgotten entries go
//! first, then the entry whose last failure is oldest.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most client addresses remembered.
pub const MAX_ENTRIES: usize = 10_000;

/// The penalty after the first failure; each further failure doubles it, up to the cap.
pub const INITIAL_PENALTY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    attempt: u64,
}

/// The penalty state of one auth process.
#[derive(Debug)]
pub struct Penalty {
    max: Duration,
    memory: Duration,
    map: HashMap<String, Entry>,
    hasher: RandomState,
}

/// The key an address is counted under (see the module doc); `None` for no address.
pub fn key(client: Option<&str>) -> Option<String> {
    let client = client?.trim();
    if client.is_empty() {
        return None;
    }
    Some(match client.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => client.to_string(),
    })
}

impl Penalty {
    /// A penalty growing up to `max`, forgotten `memory` after an address's last failure.
    pub fn new(max: Duration, memory: Duration) -> Penalty {
        Penalty {
            max,
            memory,
            map: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// A keyed hash of one attempt (user and password), to notice a repeated attempt.
    pub fn attempt(&self, user: &str, password: &str) -> u64 {
        self.hasher.hash_one((user, password))
    }

    fn failures(&self, key: &str, now: Instant) -> u32 {
        match self.map.get(key) {
            Some(e) if now.saturating_duration_since(e.last) < self.memory => e.failures,
            _ => 0,
        }
    }

    /// How long an attempt from `client` waits before it is checked.
    pub fn delay(&self, client: Option<&str>, now: Instant) -> Duration {
        let Some(k) = key(client) else {
            return Duration::ZERO;
        };
        self.penalty_for(self.failures(&k, now))
    }

    /// The penalty after `failures` failures.
    pub fn penalty_for(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = (failures - 1).min(16);
        INITIAL_PENALTY.saturating_mul(1u32 << shift).min(self.max)
    }

    /// Records a failed attempt from `client` (`attempt` from [`Penalty::attempt`]);
    /// returns the address's failure count.
    pub fn fail(&mut self, client: Option<&str>, attempt: u64, now: Instant) -> u32 {
        let Some(k) = key(client) else { return 0 };
        let before = self.failures(&k, now);
        let repeated = before > 0 && self.map.get(&k).is_some_and(|e| e.attempt == attempt);
        let failures = if repeated { before } else { before.saturating_add(1) };
        if !self.map.contains_key(&k) && self.map.len() >= MAX_ENTRIES {
            let memory = self.memory;
            self.map.retain(|_, e| now.saturating_duration_since(e.last) < memory);
            if self.map.len() >= MAX_ENTRIES
                && let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(
            k,
            Entry {
                failures,
                last: now,
                attempt,
            },
        );
        failures
    }

    /// Records a success from `client`: its penalty ends.
    pub fn succeed(&mut self, client: Option<&str>) {
        if let Some(k) = key(client) {
            self.map.remove(&k);
        }
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<&str> = Some("192.0.2.1");

    #[test]
    fn penalty_doubles_up_to_the_cap_as_dovecot() {
        let mut p = Penalty::new(Duration::from_secs(15), Duration::from_secs(3600));
        let now = Instant::now();
        assert_eq!(p.delay(A, now), Duration::ZERO);
        let mut seen = Vec::new();
        for i in 0..6u64 {
            p.fail(A, i, now);
            seen.push(p.delay(A, now).as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 15, 15, 15]);
        assert_eq!(
            p.delay(Some("192.0.2.2"), now),
            Duration::ZERO,
            "other addresses untouched"
        );
        assert_eq!(p.delay(None, now), Duration::ZERO, "local requests have no address");
    }

    #[test]
    fn success_clears_and_time_forgets() {
        let mut p = Penalty::new(Duration::from_secs(15), Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..3u64 {
            p.fail(A, i, now);
        }
        assert_eq!(p.delay(A, now + Duration::from_secs(59)), Duration::from_secs(8));
        assert_eq!(p.delay(A, now + Duration::from_secs(61)), Duration::ZERO);
        p.succeed(A);
        assert_eq!(p.delay(A, now), Duration::ZERO);
        assert!(p.is_empty());
    }

    #[test]
    fn a_repeated_attempt_does_not_raise_the_penalty() {
        let mut p = Penalty::new(Duration::from_secs(15), Duration::from_secs(3600));
        let now = Instant::now();
        let same = p.attempt("alice", "old-password");
        for _ in 0..5 {
            p.fail(A, same, now);
        }
        assert_eq!(p.delay(A, now), Duration::from_secs(2));
        p.fail(A, p.attempt("alice", "other"), now);
        assert_eq!(p.delay(A, now), Duration::from_secs(4));
        assert_ne!(p.attempt("alice", "x"), p.attempt("alicex", ""));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_as_ipv4() {
        assert_eq!(key(Some("2001:db8:1:2:aa::1")).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(key(Some("2001:db8:1:2:bb::7")), key(Some("2001:db8:1:2::9")));
        assert_ne!(key(Some("2001:db8:1:3::1")), key(Some("2001:db8:1:2::1")));
        assert_eq!(key(Some("::ffff:192.0.2.1")).as_deref(), Some("192.0.2.1"));
        assert_eq!(key(Some("")), None);
        assert_eq!(key(None), None);
    }

    #[test]
    fn table_stays_bounded() {
        let mut p = Penalty::new(Duration::from_secs(15), Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES + 50) {
            let a = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            p.fail(Some(&a), 1, now + Duration::from_millis(i as u64));
        }
        assert_eq!(p.len(), MAX_ENTRIES);
        assert_eq!(p.delay(Some("10.0.0.0"), now), Duration::ZERO, "the oldest went first");
    }
}
