//! A small, short-lived memory of local mailboxes that auth said exist, shared by the
//! connections of one smtpd process, so a burst of mail to the same users does not ask
//! auth again for every RCPT.
//!
//! Only positive answers are kept, for [`TTL`]: a user added a moment ago is asked about
//! (never refused from memory), and a user removed is accepted for at most [`TTL`] longer
//! (local then finds it gone and bounces, as it would for a user removed after the 250).
//! At most [`MAX_ENTRIES`] names; when full, expired names go first, then everything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a positive answer is believed.
pub const TTL: Duration = Duration::from_secs(5);
/// Most names remembered.
pub const MAX_ENTRIES: usize = 1024;

/// Names auth said exist, with when it said so.
#[derive(Debug, Default)]
pub struct Known {
    seen: HashMap<String, Instant>,
}

impl Known {
    /// Whether `user` was said to exist less than [`TTL`] ago.
    pub fn exists(&mut self, user: &str, now: Instant) -> bool {
        match self.seen.get(user) {
            Some(at) if now.saturating_duration_since(*at) < TTL => true,
            Some(_) => {
                self.seen.remove(user);
                false
            }
            None => false,
        }
    }

    /// Remembers that `user` exists.
    pub fn insert(&mut self, user: &str, now: Instant) {
        if user.len() > 256 {
            return;
        }
        if self.seen.len() >= MAX_ENTRIES && !self.seen.contains_key(user) {
            self.seen.retain(|_, at| now.saturating_duration_since(*at) < TTL);
            if self.seen.len() >= MAX_ENTRIES {
                self.seen.clear();
            }
        }
        self.seen.insert(user.to_string(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_ttl_only() {
        let mut k = Known::default();
        let t0 = Instant::now();
        assert!(!k.exists("bob", t0));
        k.insert("bob", t0);
        assert!(k.exists("bob", t0 + Duration::from_secs(1)));
        assert!(!k.exists("bob", t0 + TTL));
        assert!(!k.exists("bob", t0));
    }

    #[test]
    fn bounded() {
        let mut k = Known::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES * 3) {
            k.insert(&format!("u{i}"), t0);
            assert!(k.seen.len() <= MAX_ENTRIES);
        }
        assert!(k.exists(&format!("u{}", MAX_ENTRIES * 3 - 1), t0));
    }
}
