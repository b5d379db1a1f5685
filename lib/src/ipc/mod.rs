//! The transport between daemons is [`postern_util::ipc`] (framing, handshake, descriptor
//! passing, the non-blocking codec, the one-request client), re-exported here under its
//! old path; [`server`] is the event-loop server on the daemon skeleton, which needs this
//! crate's skeleton and so lives here.

pub use postern_util::ipc::*;
pub mod server;
