//! The mirror daemon's watch thread (in the process of the `mirror` unix service, started
//! by its first connection — master's wakeup keeps that process alive): every second it
//!
//! - notices that this node did not run for a while ([`GAP`]: frozen by SIGSTOP, a paused
//!   VM, a stalled host): the peer may have taken over and adopted this node's queued
//!   messages meanwhile, while this node's qmgr goes on as if nothing happened. So it asks
//!   the peer which of them it adopted and removes those here ([`crate::rejoin::live`]) —
//!   the rejoin `postern start` runs for a node that was down, for a node that never
//!   stopped. The same happens when the peer answers again after a silence (a cut link:
//!   the peer, cut off, may have taken over too); then the resync follows
//!   ([`crate::resync`]: what is queued here is copied to the peer);
//! - every `queue_mirror_check_interval`, checks with the peer: drops the copies of its
//!   messages that it no longer has queued ([`crate::prune`]), or pings it when there are
//!   none, which is how a peer that comes back is noticed when no mail flows.
//!
//! Every exchange is bounded by `queue_mirror_timeout`; a peer that does not answer is
//! logged once when it starts failing and once when it answers again
//! ([`crate::daemon`]).

use crate::daemon::{Inner, Settings, resync, with_peer};
use crate::store::MIRROR_DIR;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the thread looks.
const TICK: Duration = Duration::from_secs(1);
/// A tick this much later than due means this node did not run meanwhile. A peer takes
/// the service address over after about 3.5 VRRP advert intervals of silence (at least
/// 3.5 s with the template's 1 s) and adopts only then, so a shorter gap cannot have
/// given it this node's mail; a longer one costs one question to the peer.
pub const GAP: Duration = Duration::from_secs(3);

/// Starts the thread.
pub(crate) fn start(inner: Arc<Inner>, s: Settings) {
    let spawned = std::thread::Builder::new()
        .name("mirror-watch".into())
        .spawn(move || run(&inner, &s));
    if let Err(e) = spawned {
        tracing::error!(
            "mirror: cannot start the watch thread: {e}; copies the peer no longer has queued are not dropped"
        );
    }
}

fn run(inner: &Inner, s: &Settings) {
    let mut last = Instant::now();
    let mut next_check = Instant::now() + s.interval;
    let mut suspects = HashSet::new();
    let mut last_error = String::new();
    loop {
        std::thread::sleep(TICK);
        let late = last.elapsed().saturating_sub(TICK);
        last = Instant::now();
        if late > GAP {
            tracing::warn!(
                "mirror: this node did not run for {:.1} s (frozen or paused?); asking the peer {} what it adopted meanwhile",
                late.as_secs_f64(),
                s.peer
            );
            inner.rejoin_due.store(true, Ordering::Release);
            // Check at once too: the peer may have finished messages whose copies are here.
            next_check = last;
        }
        if last >= next_check {
            check(inner, s, &mut suspects);
            next_check = Instant::now() + s.interval;
        }
        if inner.rejoin_due.swap(false, Ordering::AcqRel)
            && let Err(why) = rejoin(inner, s, &mut last_error)
        {
            // The resync waits: it would copy to the peer the messages it adopted, which
            // would then no longer count as adopted there. A peer that did not answer
            // makes both due again when it does (crate::daemon::with_peer); anything else
            // is tried again at the next tick.
            if !why.starts_with("peer ") {
                inner.rejoin_due.store(true, Ordering::Release);
            }
        } else if inner.resync_due.load(Ordering::Acquire) {
            resync(inner, s);
        }
        last = Instant::now().max(last);
    }
}

/// Drops the copies the peer no longer has queued, or pings it when there are none.
fn check(inner: &Inner, s: &Settings, suspects: &mut HashSet<String>) {
    let dir = Path::new(MIRROR_DIR);
    if crate::store::copies(dir).is_empty() {
        let _ = with_peer(inner, &s.peer, s.timeout, |c, d| c.ping(d));
        return;
    }
    let result = crate::prune::run(dir, s.timeout, Some(suspects), |ids| {
        with_peer(inner, &s.peer, s.timeout, |c, d| c.ask_queued(ids, d))
    });
    match result {
        Ok(p) if p.dropped > 0 => tracing::info!(
            "mirror: check: {} copies dropped (the peer {} no longer has them queued: refused after the copy was written, or finished while the drop notice was lost), {} kept",
            p.dropped,
            s.peer,
            p.kept + p.old_queue
        ),
        Ok(_) => {}
        // A peer that does not answer was logged by with_peer.
        Err(why) if why.starts_with("peer ") => {}
        Err(why) => tracing::warn!("mirror: check with the peer {}: {why}; no copy dropped", s.peer),
    }
}

/// Asks the peer which of this node's queued messages it adopted and removes them here;
/// the reason when that could not be done (`last_error`: the reason last logged, so a
/// failure repeated every tick is logged once).
fn rejoin(inner: &Inner, s: &Settings, last_error: &mut String) -> Result<(), String> {
    let peer = s.peer.as_str();
    let result = crate::rejoin::live(Path::new("."), |ids| {
        with_peer(inner, peer, s.timeout, |c, d| c.ask(crate::wire::kind::ADOPTED, ids, d))
    });
    match result {
        Ok(r) => {
            last_error.clear();
            for (id, queue) in &r.removed {
                tracing::warn!(
                    "{id}: adopted and delivered by the peer {peer} while this node was away; removed from {queue}/"
                );
            }
            for (id, why) in &r.failed {
                tracing::warn!(
                    "{id}: adopted by the peer {peer} while this node was away, not removed here: {why} (it may be delivered twice)"
                );
            }
            tracing::info!(
                "mirror: rejoin: {} message(s) the peer {peer} adopted removed from the queue here",
                r.removed.len()
            );
            Ok(())
        }
        Err(why) => {
            if *last_error != why {
                tracing::warn!("mirror: rejoin: cannot ask the peer {peer} what it adopted: {why}; asking again");
                last_error.clone_from(&why);
            }
            Err(why)
        }
    }
}
