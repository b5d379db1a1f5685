//! The non-blocking client of auth for event-loop daemons (smtpd, pop3d, imapd, the
//! proxy): one request per connection to `private/auth`, on lib's one-request client
//! ([`crate::ipc::request::OneRequest`]). Start it, register [`AuthClient::source`] with a
//! token of the session, and call [`AuthClient::progress`] on every readiness event until
//! it yields the reply. The request bytes (a password) are zeroed once written or dropped.

use super::auth::{self, AuthReply, AuthRequest};
use crate::ipc::request::{OneRequest, Peer};
use mio::net::UnixStream;
use std::path::Path;

/// Largest reply accepted.
pub const MAX_REPLY: usize = 64 * 1024;

/// auth, in the auth protocol.
const AUTH: Peer = Peer {
    name: "auth",
    protocol: auth::PROTOCOL,
    version: auth::VERSION,
    max_reply: MAX_REPLY,
};

/// One request in progress.
#[derive(Debug)]
pub struct AuthClient(OneRequest<AuthReply>);

impl AuthClient {
    /// Connects to `socket` (normally [`auth::SOCKET`] relative to the queue directory)
    /// and queues the hello and `request`.
    pub fn start(socket: &Path, request: &AuthRequest) -> Result<AuthClient, String> {
        OneRequest::start(socket, AUTH, request).map(AuthClient)
    }

    /// The socket, to register with the event loop (readable and writable).
    pub fn source(&mut self) -> &mut UnixStream {
        self.0.source()
    }

    /// Writes what is pending and reads what arrived. `Ok(Some(reply))` when done;
    /// `Ok(None)` to wait for the next event; `Err` when auth could not be asked.
    pub fn progress(&mut self) -> Result<Option<AuthReply>, String> {
        self.0.progress()
    }
}
