//! The replicator: keeps the mailboxes of two (or more) mailbox servers in step, so that
//! a client can be served by either and a server that was down catches up (issue 15).
//!
//! Every mailbox server runs it as two master services of this one program: type `inet`
//! (the peer protocol below, on the internal network; the other servers' `replica_peers`
//! point at it) and type `unix` on `private/replicator` (the local protocol of
//! [`postern_lib::proto::replica`]: `Sync { user }` from the POP3/IMAP proxy before it
//! answers OK to a change, `Status` for `postern status`, and master's wakeup byte; this
//! process also runs the background sweep every `replica_sync_interval`).
//!
//! # What is replicated, and how
//!
//! A user's mailbox (Maildir++ under `virtual_mailbox_base`, owned by `mail_owner`; the
//! replicator runs unprivileged as `mail_owner`, like imapd) is merged with each peer by
//! one side, symmetrically: folders, their UIDVALIDITY, messages (by GUID, under the same
//! UID and Maildir base name — so the POP3 UIDL is the same — with their flags, keywords
//! and internal date), expunges and subscriptions. The rules are in [`merge`]; the state
//! that makes them incremental (what both sides had at the last merge) in [`state`]. A
//! change never travels as a command to replay: the merge compares the two states, so the
//! same mechanism carries a proxy's change, a hub's delivery and the catch-up of a server
//! that was down. Mailboxes of system users (`local_system_users`, in home directories)
//! are not replicated.
//!
//! # The peer protocol (version 1)
//!
//! One TCP connection, framed exactly as Postern's local IPC ([`postern_lib::ipc`]: 4-byte
//! big-endian length, one kind byte `M` (JSON message, ≤ 1 MiB), `D` (data chunk, ≤ 64 KiB)
//! or `E` (end of a data stream), then the payload). JSON messages are objects whose
//! `"type"` names the request or reply ([`wire::PeerRequest`], [`wire::PeerReply`], field
//! names as in those types, snake_case). A site may write its own replica by speaking this.
//!
//! 1. Both sides send `{"protocol":"replica-peer","version":1}` and check the other's.
//! 2. The server sends `{"type":"challenge","node":"<its replica_name>","nonce":"<64 hex>"}`.
//! 3. The client answers `{"type":"auth","node":"<its name>","nonce":"<64 hex>","proof":P}`
//!    with P = hex HMAC-SHA256(secret, `"replica-peer client <server nonce> <client nonce>
//!    <client node> <server node>"`); the server checks it in constant time and answers
//!    `{"type":"welcome","proof":Q}`, Q the same with `server` for `client`, which the
//!    client checks. A wrong proof gets `{"type":"error",...}` and the connection closed.
//!    The secret (`replica_secret_file`) never crosses the network.
//! 4. Requests, each answered in order: `open {user}` (works on that mailbox; creates it
//!    when new), `lock {wait_secs}` / `unlock` (the user's replication lock; the client
//!    takes the two locks in the order of the node names), `mailbox` → `mailbox {mailbox:
//!    {folders: [{name, uid_validity, next_uid, highest_modseq, messages, guid,
//!    special_use}], subscriptions, alone}}` (`guid`: the uidlist's mailbox GUID, IMAP's
//!    MAILBOXID; `special_use`: the uses a folder was created with, for a name that has
//!    none of its own; `alone`: the server served the user while its peer was unreachable),
//!    `messages {folder, after, limit}` → `messages {info, messages: [{uid, guid, base,
//!    system, keywords, modseq, date, size}], more}` (paged by UID, at most 1,000),
//!    `gone {folder}` → `gone {gone: [[guid, modseq]]}` (the folder's GUID expunge log),
//!    `fetch {folder, uids}` → per UID `body {uid, present}` followed, when present, by the
//!    bytes as `D` frames and an `E`, `put {folder, messages}` followed by one data stream
//!    per message → `put {results: [{"type":"placed"|"taken"|"exists"|"refused"}], modseq}`,
//!    `renumber {folder, moves: [[old, new]]}` → `renumbered {done, modseq}` (`put` and
//!    `renumber` take `reuse: true` to give UIDs below UIDNEXT that no message has: the
//!    side adopting its peer's numbering after a conflict), `set_flags
//!    {folder, changes: [{uid, system, keywords}]}` and `expunge {folder, uids}` →
//!    `modseq {modseq}`, `create_folder {name, uid_validity}`, `rename_folder {old, new}`,
//!    `delete_folder {name}`, `set_uid_validity {folder, uid_validity}`, `set_folder_meta
//!    {folder, guid, special_use}`, `subscribe {name,
//!    on}` → `ok`, `load_state` → `state {state}` and `save_state {state}` → `ok` (the
//!    sync state the server keeps for the authenticated client node, in the server's point
//!    of view). Any request may be answered `error {reason}`; the connection stays usable.
//!    `system` is a bit set: 1 \Seen, 2 \Answered, 4 \Flagged, 8 \Deleted, 16 \Draft.
//!
//! On a director's host (issue 16) the unix service also does the steps of `postern user
//! move|rebalance` ([`user_move`]): there it has `director_pairs` and `replica_secret_file`
//! and no `replica_peers`.
//!
//! # Running it
//!
//! Both services come from `etc/master.toml` (commented out there): the unix one with
//! `maxproc = 1` (one sweep, one status), `min_procs = 1`, a long `max_idle` and a
//! `wakeup`, so its process (and with it the sweep, which starts at the first local
//! connection or wakeup) stays up. Settings: `replica_peers`, `replica_name` (default
//! `$myhostname`; must differ per replica), `replica_secret_file` (same file on every
//! replica, mode 0600), `replica_sync_interval`, `replica_timeout`. A peer whose host does
//! not answer the connect is skipped by `Sync` requests for a few seconds (the proxy does
//! not wait a timeout on each change) and retried by the sweep.
//!
//! # Costs and limits
//!
//! A merge looks at every folder of the user on both sides (the folder states of the last
//! users merged stay open, so an unchanged folder costs a few `stat`s; one unchanged since
//! the last merge on both sides, by HIGHESTMODSEQ, is not listed), and a changed folder is
//! listed whole: a `Sync` of an unchanged 10,000-message mailbox took about 0.03 s, after
//! one flag change about 0.25-0.3 s (release build, loopback, busy 2-core machine). A
//! listing of only what changed since the last MODSEQ is the next step. A replica
//! that missed 10,000 messages and 10,000 flag changes (on 10,000 it had) caught up in 9 to 10 s
//! (`bench/replica_catchup.sh`). A merge interrupted half-way keeps the folder's old state;
//! the next one can then bring back a message expunged meanwhile, never lose one. With more
//! than two replicas each pair keeps its own state and a `Sync` merges with the peers one
//! after the other.
//!
//! Bounds: frames as the IPC limits; a message body at most `message_size_limit`; a fetch
//! or put at most 1,024 messages and 64 MiB; 10,000 changes a request; every frame must
//! arrive within `replica_timeout`. A peer that breaks the protocol gets a log line and
//! its connection closed.

pub mod local;
pub mod merge;
pub mod node;
pub mod remote;
pub mod replica;
pub mod secret;
pub mod serve;
pub mod state;
pub mod user_move;
pub mod wire;

#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod peer_tests;
