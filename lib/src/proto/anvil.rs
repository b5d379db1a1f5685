//! The anvil protocol: connection counts and rates per client address, shared by all
//! smtpd, imapd and pop3d processes (Postfix's anvil(8)); the daemons' side is
//! [`crate::anvil`].
//!
//! Protocol name `anvil`, version 1, on `private/anvil`; requests and replies alternate on
//! one connection, which a client keeps open for as long as it lives. Every request gets
//! exactly one reply, in order, so a client may pipeline requests.
//!
//! Counts belong to the connection that made them: when a client's connection closes (its
//! process exited or crashed), anvil forgets every connection that client still had
//! counted, so a crashed daemon never leaves a remote client locked out.
//!
//! `Connect` always counts the connection (a refused one too: the caller then sends
//! `Disconnect` at once), so a client hammering the server stays over its rate limit.

use serde::{Deserialize, Serialize};

/// Protocol name.
pub const PROTOCOL: &str = "anvil";
/// Version.
pub const VERSION: u32 = 1;
/// The socket, relative to the queue directory.
pub const SOCKET: &str = "private/anvil";

/// A request to anvil.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnvilRequest {
    /// A client connected to `service`: count it and report the totals.
    Connect {
        /// The service the client connected to (`smtp/inet`); counted separately per service.
        service: String,
        /// The client's address.
        client: String,
    },
    /// A connection counted by an earlier `Connect` on this anvil connection ended.
    Disconnect {
        /// As in `Connect`.
        service: String,
        /// As in `Connect`.
        client: String,
    },
}

/// anvil's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnvilReply {
    /// After a `Connect`: the totals over all anvil clients, this connection included.
    Counts {
        /// Connections from this client open now.
        count: u32,
        /// Connections from this client in the current rate window (`anvil_rate_time_unit`).
        rate: u32,
    },
    /// After a `Connect` when the table is full of clients with open connections: this
    /// connection is not counted (do not send `Disconnect` for it) and not limited.
    Untracked,
    /// After a `Disconnect`.
    Ok,
}
