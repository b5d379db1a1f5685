//! The literal bytes all sessions of one imapd process may hold in memory at once
//! (`imapd_literal_memory_limit`). A session reserves a literal's whole size when the
//! client announces it (`{n}` / `{n+}`), before a byte of it is read, and gives the
//! reservation back when the command has run, has been refused, or the session ends
//! ([`Held`] gives back on drop, so no error path can leak budget). With it, many
//! logged-in clients each sending a large APPEND cannot make the process hold more than
//! the limit, however slowly they send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A process's budget; clones share it.
#[derive(Clone, Debug)]
pub struct LiteralBudget {
    used: Arc<AtomicU64>,
    limit: u64,
}

impl LiteralBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> LiteralBudget {
        LiteralBudget {
            used: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now, over all sessions.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Adds `n` bytes to `held` when they fit in what is left; `false` (nothing taken)
    /// when they do not.
    pub fn take(&self, held: &mut Held, n: u64) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok();
        if fits {
            held.bytes += n;
            if held.budget.is_none() {
                held.budget = Some(Arc::clone(&self.used));
            }
        }
        fits
    }
}

/// What one session holds of a budget; given back by [`Held::release`] or on drop.
#[derive(Debug, Default)]
pub struct Held {
    budget: Option<Arc<AtomicU64>>,
    bytes: u64,
}

impl Held {
    /// Gives everything held back.
    pub fn release(&mut self) {
        if let Some(b) = &self.budget
            && self.bytes > 0
        {
            b.fetch_sub(self.bytes, Ordering::AcqRel);
        }
        self.bytes = 0;
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_and_come_back_on_release_and_drop() {
        let budget = LiteralBudget::new(100);
        let mut a = Held::default();
        let mut b = Held::default();
        assert!(budget.take(&mut a, 60));
        assert!(!budget.take(&mut b, 41), "over the limit");
        assert_eq!(b.bytes(), 0);
        assert!(budget.take(&mut b, 40));
        assert_eq!(budget.used(), 100);
        assert!(!budget.take(&mut a, 1));
        a.release();
        assert_eq!(budget.used(), 40);
        assert!(!budget.take(&mut a, u64::MAX), "no overflow");
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
