//! The resolve protocol: asking trivial-rewrite to rewrite an address to canonical form
//! and to resolve a recipient to where it goes.
//!
//! Protocol name `resolve`, version 1, on `private/rewrite`. Requests and replies
//! alternate on one connection, which a client (qmgr) keeps open.
//!
//! - [`ResolveRequest::Rewrite`] → [`ResolveReply::Rewritten`]: `user` becomes
//!   `user@$myorigin`, the domain is lower-cased and loses a trailing dot; the local part
//!   (with any `recipient_delimiter` extension) is kept as it is.
//! - [`ResolveRequest::Resolve`] → [`ResolveReply::Resolved`]: the recipient after
//!   `virtual_alias_maps` (which may expand one address to several), each with its
//!   transport and nexthop from, in order, the address class (`mydestination` → local,
//!   `relay_domains` → relay, anything else → default), `transport_maps` and `relayhost`.
//!
//! A recipient that cannot be delivered at all (bad syntax, an alias loop) resolves to the
//! transport [`ERROR_TRANSPORT`] with the reason as nexthop, as Postfix's `error:` does;
//! qmgr bounces it without contacting any agent.

use serde::{Deserialize, Serialize};

/// Protocol name.
pub const PROTOCOL: &str = "resolve";
/// Version.
pub const VERSION: u32 = 1;
/// The socket, relative to the queue directory.
pub const SOCKET: &str = "private/rewrite";
/// The pseudo-transport of undeliverable recipients (nexthop: the reason).
pub const ERROR_TRANSPORT: &str = "error";
/// Most routes one recipient may expand to (virtual aliases).
pub const MAX_ROUTES: usize = 1000;

/// A question for trivial-rewrite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResolveRequest {
    /// Canonical form of an address.
    Rewrite {
        /// The address, without angle brackets.
        address: String,
    },
    /// Where a recipient goes.
    Resolve {
        /// The recipient, without angle brackets.
        address: String,
    },
}

/// How the final domain was classified.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// A domain in `mydestination`.
    Local,
    /// A domain in `relay_domains`.
    Relay,
    /// Any other domain.
    Default,
    /// Undeliverable (transport [`ERROR_TRANSPORT`]).
    Error,
}

/// One place a recipient goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    /// The transport: the delivery agent at `private/<transport>`.
    pub transport: String,
    /// Where the transport delivers: a domain, `[host]:port`, or for `local` the host name.
    pub nexthop: String,
    /// The recipient address to deliver to (after virtual aliasing).
    pub recipient: String,
    /// The address class.
    pub class: AddressClass,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResolveReply {
    /// The canonical address.
    Rewritten {
        /// The address.
        address: String,
    },
    /// The routes of a recipient: one, or several when a virtual alias expands.
    Resolved {
        /// At least one route, at most [`MAX_ROUTES`].
        routes: Vec<Route>,
    },
    /// trivial-rewrite could not answer now (a table could not be read): try later.
    TempFail {
        /// Why.
        reason: String,
    },
}
