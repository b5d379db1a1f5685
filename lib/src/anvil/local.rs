//! Per-client connection counting inside one process: connections open at once and
//! connections per minute from each client address. The fallback for when the anvil
//! daemon (which counts over all processes of a service, see [`super::client`]) is
//! unavailable: then each process counts alone, and with several processes a client can
//! have up to that many times the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Entry {
    open: u32,
    window_start: Instant,
    in_window: u32,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Anvil {
    clients: HashMap<IpAddr, Entry>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many open connections.
    Count,
    /// Too many connections this minute.
    Rate,
}

impl Refusal {
    /// Words for log lines and replies.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Count => "too many connections",
            Refusal::Rate => "too many connections per minute",
        }
    }

    /// The refusal, if any, for anvil's totals (this connection included) under limits
    /// (0: none).
    pub fn judge(count: u32, rate: u32, count_limit: u32, rate_limit: u32) -> Option<Refusal> {
        if count_limit > 0 && count > count_limit {
            Some(Refusal::Count)
        } else if rate_limit > 0 && rate > rate_limit {
            Some(Refusal::Rate)
        } else {
            None
        }
    }
}

impl Anvil {
    /// Counts a new connection from `ip`, unless a limit (0: none) refuses it.
    pub fn connect(&mut self, ip: IpAddr, count_limit: u32, rate_limit: u32, now: Instant) -> Result<(), Refusal> {
        let e = self.clients.entry(ip).or_insert(Entry {
            open: 0,
            window_start: now,
            in_window: 0,
        });
        if now.duration_since(e.window_start) >= WINDOW {
            e.window_start = now;
            e.in_window = 0;
        }
        if count_limit > 0 && e.open >= count_limit {
            return Err(Refusal::Count);
        }
        if rate_limit > 0 && e.in_window >= rate_limit {
            return Err(Refusal::Rate);
        }
        e.open += 1;
        e.in_window += 1;
        Ok(())
    }

    /// A connection from `ip` closed.
    pub fn disconnect(&mut self, ip: IpAddr, now: Instant) {
        if let Some(e) = self.clients.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && now.duration_since(e.window_start) >= WINDOW {
                self.clients.remove(&ip);
            }
        }
    }

    /// Forgets idle entries whose window has passed (bounded memory).
    pub fn expire(&mut self, now: Instant) {
        self.clients
            .retain(|_, e| e.open > 0 || now.duration_since(e.window_start) < WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let mut a = Anvil::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        assert!(a.connect(ip, 2, 0, t).is_ok());
        assert!(a.connect(ip, 2, 0, t).is_ok());
        assert_eq!(a.connect(ip, 2, 0, t), Err(Refusal::Count));
        a.disconnect(ip, t);
        assert!(a.connect(ip, 2, 3, t).is_ok());
        a.disconnect(ip, t);
        assert_eq!(a.connect(ip, 2, 3, t), Err(Refusal::Rate));
        assert!(a.connect(ip, 2, 3, t + WINDOW).is_ok());
        assert_eq!(Refusal::judge(3, 1, 2, 0), Some(Refusal::Count));
        assert_eq!(Refusal::judge(2, 9, 2, 8), Some(Refusal::Rate));
        assert_eq!(Refusal::judge(2, 9, 2, 0), None);
    }
}
