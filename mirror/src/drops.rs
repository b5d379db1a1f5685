//! qmgr's drop notices: when a finished message's file is removed, the peer may drop its
//! copy. [`finished`] only queues the queue ID for a background thread (qmgr's event loop
//! never waits for the network); the thread hands batches to the local mirror daemon,
//! which tells the peer.
//!
//! Best effort: a notice lost on the way (the mirror daemon or the peer down, this node
//! dying first, the channel full) leaves a copy on the peer, which the peer delivers again
//! if it ever adopts this node's mail — logged here as a warning. Nothing is sent when the
//! mirror daemon's socket does not exist (no mirror configured).

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Notices waiting for the thread; more are dropped (and logged).
const CAPACITY: usize = 100_000;
/// The longest the thread waits for the mirror daemon.
const TIMEOUT: Duration = Duration::from_secs(30);

static SENDER: LazyLock<Mutex<Option<SyncSender<String>>>> = LazyLock::new(|| {
    let (tx, rx) = sync_channel(CAPACITY);
    let spawned = std::thread::Builder::new()
        .name("mirror-drops".into())
        .spawn(move || run(&rx));
    Mutex::new(spawned.ok().map(|_| tx))
});

/// The message `queue_id` is finished (delivered or bounced) and its file removed.
pub fn finished(queue_id: &str) {
    if !Path::new(crate::local::SOCKET).exists() {
        return;
    }
    let guard = SENDER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tx) = guard.as_ref() else {
        return;
    };
    if let Err(TrySendError::Full(id)) = tx.try_send(queue_id.to_string()) {
        tracing::warn!(
            queue_id = id.as_str(),
            "mirror: too many drop notices waiting; the peer keeps this copy (it would deliver it again on adoption)"
        );
    }
}

fn run(rx: &Receiver<String>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < crate::local::MAX_DROP {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        let n = batch.len();
        if let Err(why) = crate::local::drop_copies(Path::new("."), batch, TIMEOUT) {
            tracing::warn!(
                "mirror: cannot tell the peer to drop {n} finished message(s): {why}; it would deliver them again on adoption"
            );
        }
    }
}
