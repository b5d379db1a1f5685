//! The typed protocols between daemons. Each is one enum of requests and one of replies,
//! carried by [`crate::ipc`] framing (JSON messages, raw data frames for content) after
//! the hello handshake naming the protocol and its version. A site that replaces a daemon
//! speaks exactly what is documented in these modules.
//!
//! | module | between | socket |
//! | --- | --- | --- |
//! | [`cleanup`] | smtpd, pickup, bounce → cleanup | `private/cleanup` |
//! | [`bounce`] | qmgr → bounce | `private/bounce` |
//! | [`auth`] | smtpd, pop3d, imapd → auth (non-blocking client: [`auth_client`]) | `private/auth` |
//! | [`anvil`] | smtpd → anvil (connection counts per client) | `private/anvil` |
//! | [`trigger`] | anyone → qmgr, pickup | `public/qmgr`, `public/pickup` (one byte, no framing) |
//! | [`resolve`] | qmgr (and others) → trivial-rewrite | `private/rewrite` |
//! | [`deliver`] | qmgr → delivery agents (local, smtp, …) | `private/<transport>` |
//! | [`replica`] | proxy, `postern status`, tools → replicator | `private/replicator` |
//!
//! Queue IDs and status codes are typed where they cross: a [`crate::queue_id::QueueId`]
//! (16 characters `0-9A-Za-z`, so never a path or a log line of its own) and a
//! [`crate::dsn::Dsn`] (RFC 3463) are checked once, when the message is decoded, and a
//! message holding a bad one is refused whole with the reason (`queue ID must be 16
//! characters, got 300`). On the wire both are the same JSON strings as before.

#[cfg(test)]
mod tests;

pub mod anvil;
pub mod auth;
pub mod auth_client;
pub mod bounce;
pub mod cleanup;
pub mod deliver;
pub mod replica;
pub mod resolve;
pub mod trigger;
