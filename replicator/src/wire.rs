//! The peer protocol between replicators: requests and replies, the framed connection
//! over TCP with its bounds and timeouts, and the HMAC challenge and response. See the
//! crate documentation for the protocol as a site would implement it.

use crate::replica::{FlagChange, Mailbox, Res};
use crate::state::SyncState;
use postern_lib::ipc::codec::{Decoder, Encoder, Frame};
use postern_lib::ipc::kind;
use postern_mailbox::replica::{FolderInfo, MessageInfo, Placed};
use ring::hmac;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Protocol name of the hello.
pub const PROTOCOL: &str = "replica-peer";
/// Version.
pub const VERSION: u32 = 1;
/// Most messages listed in one `messages` reply.
pub const PAGE: usize = 1000;
/// Most messages in one `fetch` or `put`.
pub const MAX_BATCH: usize = 1024;
/// Most bytes of message bodies in one `put`.
pub const MAX_BATCH_BYTES: u64 = 64 << 20;
/// Most flag changes, expunges or renumberings in one request.
pub const MAX_CHANGES: usize = 10_000;

/// A request of the replicator that drives a merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerRequest {
    /// Proves the shared secret (the answer to the server's `challenge`).
    Auth {
        /// The client replica's `replica_name`.
        node: String,
        /// 32 random bytes, hex.
        nonce: String,
        /// HMAC-SHA256 (hex) of the client proof text (see the crate doc).
        proof: String,
    },
    /// Works on this user's mailbox from now on (created when new).
    Open {
        /// The user.
        user: String,
    },
    /// Takes the user's replication lock, waiting at most `wait_secs`.
    Lock {
        /// Seconds.
        wait_secs: u64,
    },
    /// Releases it.
    Unlock,
    /// The folders and subscriptions.
    Mailbox,
    /// Up to `limit` (at most [`PAGE`]) messages with UIDs above `after`.
    Messages {
        /// Folder.
        folder: String,
        /// Last UID of the previous page (0 first).
        after: u32,
        /// Most wanted.
        limit: usize,
    },
    /// The folder's GUID expunge log.
    Gone {
        /// Folder.
        folder: String,
    },
    /// Message bodies: answered by one `body` reply per UID, each followed by the bytes as
    /// a data stream when present.
    Fetch {
        /// Folder.
        folder: String,
        /// UIDs (at most [`MAX_BATCH`]).
        uids: Vec<u32>,
    },
    /// Adds messages: followed by one data stream per message, in order.
    Put {
        /// Folder.
        folder: String,
        /// The messages (at most [`MAX_BATCH`]).
        messages: Vec<MessageInfo>,
        /// A UID below UIDNEXT that no message has may be given (the side adopting its
        /// peer's numbering after a conflict, see the merge's doc).
        #[serde(default)]
        reuse: bool,
    },
    /// New UIDs for messages.
    Renumber {
        /// Folder.
        folder: String,
        /// `(old, new)`.
        moves: Vec<(u32, u32)>,
        /// As `put`'s.
        #[serde(default)]
        reuse: bool,
    },
    /// New flags.
    SetFlags {
        /// Folder.
        folder: String,
        /// The changes.
        changes: Vec<FlagChange>,
    },
    /// Expunges.
    Expunge {
        /// Folder.
        folder: String,
        /// UIDs.
        uids: Vec<u32>,
    },
    /// Creates a folder.
    CreateFolder {
        /// Name.
        name: String,
        /// Its UIDVALIDITY.
        uid_validity: u32,
    },
    /// Renames a folder.
    RenameFolder {
        /// Old name.
        old: String,
        /// New name.
        new: String,
    },
    /// Deletes a folder.
    DeleteFolder {
        /// Name.
        name: String,
    },
    /// Gives a folder another UIDVALIDITY.
    SetUidValidity {
        /// Folder.
        folder: String,
        /// UIDVALIDITY.
        uid_validity: u32,
    },
    /// Gives a folder the client side's mailbox GUID and created special uses.
    SetFolderMeta {
        /// Folder.
        folder: String,
        /// Mailbox GUID (MAILBOXID).
        guid: String,
        /// Special uses (`\\Sent`, …).
        special_use: Vec<String>,
    },
    /// Subscribes or unsubscribes.
    Subscribe {
        /// Folder.
        name: String,
        /// On or off.
        on: bool,
    },
    /// The sync state the server keeps for the client's node (server's point of view).
    LoadState,
    /// Replaces it.
    SaveState {
        /// The state (server's point of view).
        state: SyncState,
    },
}

/// The serving replicator's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerReply {
    /// First frame after the hellos: the server's name and a fresh nonce.
    Challenge {
        /// The server's `replica_name`.
        node: String,
        /// 32 random bytes, hex.
        nonce: String,
    },
    /// The client's proof was right: the server's own proof.
    Welcome {
        /// HMAC-SHA256 (hex) of the server proof text.
        proof: String,
    },
    /// Done.
    Ok,
    /// Refused or failed (the connection stays usable unless said otherwise).
    Error {
        /// Why.
        reason: String,
    },
    /// After `mailbox`.
    Mailbox {
        /// The mailbox.
        mailbox: Mailbox,
    },
    /// After `messages`.
    Messages {
        /// The folder.
        info: FolderInfo,
        /// This page.
        messages: Vec<MessageInfo>,
        /// More pages follow.
        more: bool,
    },
    /// After `gone`.
    Gone {
        /// `(GUID hex, MODSEQ)`.
        gone: Vec<(String, u64)>,
    },
    /// One per UID of a `fetch`; the bytes follow as a data stream when present.
    Body {
        /// The UID.
        uid: u32,
        /// Whether it is there.
        present: bool,
    },
    /// After `put`.
    Put {
        /// One per message.
        results: Vec<Placed>,
        /// HIGHESTMODSEQ after.
        modseq: u64,
    },
    /// After `renumber`.
    Renumbered {
        /// One per move.
        done: Vec<bool>,
        /// HIGHESTMODSEQ after.
        modseq: u64,
    },
    /// After `set_flags`, `expunge`.
    Modseq {
        /// HIGHESTMODSEQ after.
        modseq: u64,
    },
    /// After `load_state`.
    State {
        /// The state, if any.
        state: Option<SyncState>,
    },
}

/// A framed connection with a deadline on every frame.
pub struct Conn<S> {
    s: S,
    dec: Decoder,
    timeout: Duration,
    /// Who is on the other end, for errors.
    pub who: String,
}

impl<S: Read + Write> Conn<S> {
    /// Wraps a connected stream (whose read timeout the caller set to at most `timeout`).
    pub fn new(s: S, timeout: Duration, who: String) -> Conn<S> {
        Conn {
            s,
            dec: Decoder::new(),
            timeout,
            who,
        }
    }

    fn err(&self, what: impl std::fmt::Display) -> String {
        format!("{}: {what}", self.who)
    }

    /// Like [`Conn::new`], refusing frames over `limit` bytes.
    pub fn with_limit(s: S, timeout: Duration, who: String, limit: usize) -> Conn<S> {
        Conn {
            dec: Decoder::with_limit(limit),
            ..Conn::new(s, timeout, who)
        }
    }

    /// Bytes already read from the stream, to be decoded first.
    pub fn push(&mut self, bytes: &[u8]) {
        self.dec.push(bytes);
    }

    /// Sends our hello and checks the peer's (the peer protocol).
    pub fn hello(&mut self) -> Res<()> {
        self.hello_as(PROTOCOL, VERSION)
    }

    /// Sends the hello of `protocol`/`version` and checks the peer's.
    pub fn hello_as(&mut self, protocol: &str, version: u32) -> Res<()> {
        let mut out = Vec::new();
        Encoder::hello(protocol, version, &mut out).map_err(|e| self.err(e))?;
        self.s.write_all(&out).map_err(|e| self.err(e))?;
        let f = self.frame()?;
        f.expect_hello(protocol, version).map_err(|e| self.err(e))
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&mut self, m: &T) -> Res<()> {
        let mut out = Vec::new();
        Encoder::message(m, &mut out).map_err(|e| self.err(e))?;
        self.s.write_all(&out).map_err(|e| self.err(e))
    }

    /// Sends bytes as one data stream.
    pub fn send_data(&mut self, bytes: &[u8]) -> Res<()> {
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 1000 + 16);
        Encoder::data(bytes, &mut out).map_err(|e| self.err(e))?;
        Encoder::end(&mut out).map_err(|e| self.err(e))?;
        self.s.write_all(&out).map_err(|e| self.err(e))
    }

    /// The next frame, within the timeout.
    pub fn frame(&mut self) -> Res<Frame> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(f) = self.dec.next_frame().map_err(|e| self.err(e))? {
                return Ok(f);
            }
            if Instant::now() > deadline {
                return Err(self.err("timed out"));
            }
            let want = self.dec.wants().min(buf.len());
            match self.s.read(&mut buf[..want]) {
                Ok(0) => return Err(self.err("connection closed")),
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(self.err("timed out"));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// The next message, as `T`.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Res<T> {
        let f = self.frame()?;
        f.message().map_err(|e| self.err(e))
    }

    /// A data stream of at most `max` bytes.
    pub fn recv_data(&mut self, max: u64) -> Res<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let f = self.frame()?;
            match f.kind {
                kind::DATA => {
                    if (out.len() + f.payload.len()) as u64 > max {
                        return Err(self.err(format!("data stream larger than {max} bytes")));
                    }
                    out.extend_from_slice(&f.payload);
                }
                kind::END => return Ok(out),
                k => return Err(self.err(format!("expected data, got frame {:?}", char::from(k)))),
            }
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.s
    }
}

/// 32 random bytes as hex.
pub fn nonce() -> Res<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness".to_string())?;
    Ok(hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The text each side signs: `replica-peer <role> <server nonce> <client nonce> <client
/// node> <server node>` (role `client` or `server`).
pub fn proof_text(role: &str, server_nonce: &str, client_nonce: &str, client: &str, server: &str) -> String {
    format!("{PROTOCOL} {role} {server_nonce} {client_nonce} {client} {server}")
}

/// HMAC-SHA256 of `text` under `secret`, hex.
pub fn sign(secret: &[u8], text: &str) -> String {
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), text.as_bytes()).as_ref())
}

/// Checks a proof in constant time.
pub fn verify(secret: &[u8], text: &str, proof: &str) -> bool {
    unhex(proof).is_some_and(|p| hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), text.as_bytes(), &p).is_ok())
}

/// Whether a node name is acceptable (used in file names and logs).
pub fn valid_node(n: &str) -> bool {
    !n.is_empty() && n.len() <= 100 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_need_the_secret_and_the_nonces() {
        let t = proof_text("client", "aa", "bb", "a", "b");
        let p = sign(b"secret", &t);
        assert!(verify(b"secret", &t, &p));
        assert!(!verify(b"other", &t, &p));
        assert!(!verify(b"secret", &proof_text("server", "aa", "bb", "a", "b"), &p));
        assert!(!verify(b"secret", &t, "zz"));
        assert!(!verify(b"secret", &t, &"0".repeat(1000)));
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }

    #[test]
    fn requests_have_the_documented_json() {
        let j = serde_json::to_string(&PeerRequest::Fetch {
            folder: "INBOX".into(),
            uids: vec![3, 4],
        })
        .unwrap();
        assert_eq!(j, r#"{"type":"fetch","folder":"INBOX","uids":[3,4]}"#);
        let j = serde_json::to_string(&PeerReply::Body { uid: 3, present: true }).unwrap();
        assert_eq!(j, r#"{"type":"body","uid":3,"present":true}"#);
    }
}
