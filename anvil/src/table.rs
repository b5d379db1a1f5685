//! The counters: per (service, client address), connections open now and connections in
//! the current rate window; bounded in size, evicting the entry idle longest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most clients tracked at once.
pub const MAX_CLIENTS: usize = 100_000;
/// The rate window (Postfix's `anvil_rate_time_unit` default).
#[cfg(test)]
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A service and a client address.
pub type Key = (String, IpAddr);

#[derive(Debug)]
struct Entry {
    open: u32,
    window_start: Instant,
    in_window: u32,
    last: Instant,
}

/// All counters.
#[derive(Debug)]
pub struct Table {
    clients: HashMap<Key, Entry>,
    max: usize,
    window: Duration,
}

impl Table {
    /// An empty table of at most `max` clients.
    pub fn new(max: usize, window: Duration) -> Table {
        Table {
            clients: HashMap::new(),
            max: max.max(1),
            window,
        }
    }

    /// Counts a connection; the open count and the rate after it, or `None` when the
    /// table is full of clients with open connections (not counted).
    pub fn connect(&mut self, key: &Key, now: Instant) -> Option<(u32, u32)> {
        if !self.clients.contains_key(key) && self.clients.len() >= self.max && !self.evict_one(now) {
            return None;
        }
        let e = self.clients.entry(key.clone()).or_insert(Entry {
            open: 0,
            window_start: now,
            in_window: 0,
            last: now,
        });
        if now.duration_since(e.window_start) >= self.window {
            e.window_start = now;
            e.in_window = 0;
        }
        e.open = e.open.saturating_add(1);
        e.in_window = e.in_window.saturating_add(1);
        e.last = now;
        Some((e.open, e.in_window))
    }

    /// Forgets `n` open connections of `key`.
    pub fn disconnect(&mut self, key: &Key, n: u32, now: Instant) {
        if let Some(e) = self.clients.get_mut(key) {
            e.open = e.open.saturating_sub(n);
            e.last = now;
            if e.open == 0 && now.duration_since(e.window_start) >= self.window {
                self.clients.remove(key);
            }
        }
    }

    /// Removes idle entries whose window has passed.
    pub fn expire(&mut self, now: Instant) {
        let w = self.window;
        self.clients
            .retain(|_, e| e.open > 0 || now.duration_since(e.window_start) < w);
    }

    /// Evicts the idle entry unused longest; false when every entry has open connections.
    fn evict_one(&mut self, now: Instant) -> bool {
        self.expire(now);
        if self.clients.len() < self.max {
            return true;
        }
        let oldest = self
            .clients
            .iter()
            .filter(|(_, e)| e.open == 0)
            .min_by_key(|(_, e)| e.last)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                self.clients.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Clients tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> Key {
        ("smtp/inet".to_string(), ip.parse().unwrap())
    }

    #[test]
    fn counts_and_rate_window() {
        let mut t = Table::new(10, RATE_WINDOW);
        let now = Instant::now();
        let a = key("192.0.2.1");
        assert_eq!(t.connect(&a, now), Some((1, 1)));
        assert_eq!(t.connect(&a, now), Some((2, 2)));
        t.disconnect(&a, 1, now);
        assert_eq!(t.connect(&a, now), Some((2, 3)));
        assert_eq!(t.connect(&a, now + RATE_WINDOW), Some((3, 1)));
        let other = ("submission/inet".to_string(), a.1);
        assert_eq!(t.connect(&other, now), Some((1, 1)), "services are counted apart");
    }

    #[test]
    fn bounded_evicting_the_oldest_idle() {
        let mut t = Table::new(2, RATE_WINDOW);
        let now = Instant::now();
        let (a, b, c) = (key("192.0.2.1"), key("192.0.2.2"), key("192.0.2.3"));
        t.connect(&a, now);
        t.connect(&b, now);
        assert_eq!(t.connect(&c, now), None, "full of open connections");
        t.disconnect(&a, 1, now);
        t.disconnect(&b, 1, now + Duration::from_secs(1));
        assert_eq!(t.connect(&c, now + Duration::from_secs(2)), Some((1, 1)));
        assert_eq!(t.len(), 2);
        // a was idle longest and went; b keeps its rate.
        assert_eq!(t.connect(&b, now + Duration::from_secs(3)), Some((1, 2)));
    }
}
