//! # mirror — two-node durability of an active-standby pair (issue 16)
//!
//! With `queue_mirror_peer` set, a message gets its 250 only once **both** nodes hold its
//! queue file on disk: cleanup writes and fdatasyncs the file under its temporary name,
//! hands the open file to the local mirror daemon (`private/mirror`, [`local`]), which
//! sends it to the peer's mirror daemon over TCP ([`wire`]); the peer writes it to
//! `mirror/<QUEUEID>` in its own queue directory, fsyncs file and directory ([`store`])
//! and acknowledges; only then does cleanup rename the file into `incoming/` and answer.
//! When the message is finished (delivered or bounced) qmgr tells the peer to drop its
//! copy ([`drops`], asynchronous, best effort).
//!
//! When a node dies for good, the survivor runs `postern mirror adopt` (the keepalived
//! notify hook does, on becoming MASTER, when the peer's mirror does not answer): every
//! file in `mirror/` moves to `incoming/` under its own queue ID and is delivered, and its
//! queue ID is recorded in `mirror/adopted`. When the dead node comes back with its disk
//! intact, `postern start` first runs the rejoin ([`rejoin`]): the peer names the queued
//! messages it adopted, which are removed here before qmgr starts, so none is delivered
//! twice; copies of the peer's messages that the peer finished meanwhile are dropped.
//!
//! **What it guarantees and what it does not**:
//! - every message answered 250 while the peer acknowledged is on both disks, so the loss
//!   of one node's disk loses nothing accepted;
//! - a node that comes back with its queue intact delivers nothing the peer adopted
//!   (the rejoin above) — unless the peer does not answer at its start (then it is said in
//!   `postern start`'s output). A node that never stopped but was frozen (SIGSTOP, a
//!   paused VM) or cut off while the peer took over asks the same question itself as
//!   soon as it notices the gap or hears the peer again ([`watch`]), and removes what the
//!   peer adopted from its running queue; what its qmgr handed to a delivery agent in the
//!   moment before that answer may still be delivered twice;
//! - a lost drop notice (the origin died between removing a finished message and its
//!   notice reaching the peer, or the peer was down) leaves a copy the survivor would
//!   deliver again on adoption: at-least-once, not exactly-once, in that window. With the
//!   mirror on, cleanup stamps every message with an `X-Postern-GUID` (the copy carries
//!   it too), so local files both deliveries under one name and the second is a no-op
//!   (across the two nodes with the replicated mailboxes of issue 15). While both run,
//!   such copies are dropped by the check of [`watch`] ([`prune`]): every
//!   `queue_mirror_check_interval` the peer is asked which of its messages whose copies
//!   are here it still has queued (or is still writing); a copy it has not, two checks in
//!   a row, goes — unless the peer's queue directory is not the one that sent the copy
//!   (its queue token changed: a new disk), whose word never drops anything;
//! - a message partly delivered by the dead node (some recipients done) is delivered to
//!   all its recipients again after adoption (the copy is the file as accepted);
//! - a 451 after the peer wrote its copy (the ack came too late) leaves an orphan copy
//!   there until the peer's next checks drop it (above): an adoption in that window could
//!   deliver it besides the client's second attempt (a new GUID: not deduplicated). A
//!   put this node gave up on before the peer got all of it is not completed later: the
//!   connection is reset ([`wire`]), so a cut link that heals does not deliver it;
//! - with `queue_mirror_unreachable = "degraded"` a message accepted while the peer was
//!   unreachable is on one node only (logged `degraded`) until the peer answers again:
//!   then everything still queued here is copied to it ([`resync`]).
//!
//! Modules: [`wire`] (the TCP protocol between the nodes: frames, HMAC challenge and
//! response), [`store`] (the `mirror/` directory: write, drop, count, adopt), [`local`]
//! (the request protocol on `private/mirror` and its blocking client), [`drops`] (qmgr's
//! background drop notices), [`resync`] (catching a returning peer up), [`rejoin`] (a
//! returning node asking the peer what it adopted), [`prune`] (dropping copies the peer no
//! longer has queued), [`watch`] (the daemon's thread: checks, freeze and return of the
//! peer), [`daemon`] (the mirror daemon's two services).

pub mod daemon;
pub mod drops;
pub mod local;
pub mod prune;
pub mod rejoin;
pub mod resync;
pub mod store;
pub mod watch;
pub mod wire;
