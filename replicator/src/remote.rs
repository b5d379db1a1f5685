//! A peer's copy of a user's mailbox, reached over the peer protocol ([`crate::wire`]):
//! the client side, which the merge drives as the other [`Replica`].

use crate::replica::{FlagChange, Listing, Mailbox, Replica, Res};
use crate::state::SyncState;
use crate::wire::{self, Conn, PeerReply, PeerRequest};
use postern_mailbox::replica::{MessageInfo, NewMessage, Placed};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The words of a connect that timed out (a peer host down or cut off).
pub const NO_ANSWER: &str = "no answer to connect";

/// An authenticated connection to a peer's replicator, working on one user at a time.
pub struct RemoteReplica {
    conn: Conn<TcpStream>,
    node: String,
    max_message: u64,
    user: Option<String>,
}

impl RemoteReplica {
    /// Connects to `addr` (`host:port`) within `connect_timeout`, does the hellos and the
    /// mutual HMAC proof of `secret` as replica `me`; `timeout` bounds every later wait.
    pub fn connect(
        addr: &str,
        me: &str,
        secret: &[u8],
        connect_timeout: Duration,
        timeout: Duration,
        max_message: u64,
    ) -> Res<RemoteReplica> {
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let s = TcpStream::connect_timeout(&sa, connect_timeout).map_err(|e| {
            if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) {
                format!("{addr}: {NO_ANSWER} within {connect_timeout:?}")
            } else {
                format!("{addr}: {e}")
            }
        })?;
        s.set_read_timeout(Some(timeout)).map_err(|e| format!("{addr}: {e}"))?;
        s.set_write_timeout(Some(timeout)).map_err(|e| format!("{addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        let mut conn = Conn::new(s, timeout, addr.to_string());
        conn.hello()?;
        let (node, server_nonce) = match conn.recv::<PeerReply>()? {
            PeerReply::Challenge { node, nonce } => (node, nonce),
            PeerReply::Error { reason } => return Err(format!("{addr}: {reason}")),
            other => return Err(format!("{addr}: expected a challenge, got {other:?}")),
        };
        if !wire::valid_node(&node) || server_nonce.len() != 64 {
            return Err(format!("{addr}: bad challenge"));
        }
        let nonce = wire::nonce()?;
        let proof = wire::sign(secret, &wire::proof_text("client", &server_nonce, &nonce, me, &node));
        conn.send(&PeerRequest::Auth {
            node: me.to_string(),
            nonce: nonce.clone(),
            proof,
        })?;
        match conn.recv::<PeerReply>()? {
            PeerReply::Welcome { proof } => {
                let text = wire::proof_text("server", &server_nonce, &nonce, me, &node);
                if !wire::verify(secret, &text, &proof) {
                    return Err(format!("{addr}: the peer does not know the replica secret"));
                }
            }
            PeerReply::Error { reason } => return Err(format!("{addr}: {reason}")),
            other => return Err(format!("{addr}: expected welcome, got {other:?}")),
        }
        conn.who = format!("{addr} ({node})");
        Ok(RemoteReplica {
            conn,
            node,
            max_message,
            user: None,
        })
    }

    /// Works on `user` from now on.
    pub fn open(&mut self, user: &str) -> Res<()> {
        self.call(&PeerRequest::Open { user: user.to_string() })?;
        self.user = Some(user.to_string());
        Ok(())
    }

    /// Sends a request, returns the reply; an `error` reply is `Err`.
    fn call(&mut self, req: &PeerRequest) -> Res<PeerReply> {
        self.conn.send(req)?;
        self.reply()
    }

    fn reply(&mut self) -> Res<PeerReply> {
        match self.conn.recv::<PeerReply>()? {
            PeerReply::Error { reason } => Err(format!("{}: {reason}", self.conn.who)),
            r => Ok(r),
        }
    }

    fn unexpected<T>(&self, r: PeerReply) -> Res<T> {
        Err(format!("{}: unexpected reply {r:?}", self.conn.who))
    }

    fn modseq(&mut self, req: &PeerRequest) -> Res<u64> {
        match self.call(req)? {
            PeerReply::Modseq { modseq } => Ok(modseq),
            r => self.unexpected(r),
        }
    }

    fn ok(&mut self, req: &PeerRequest) -> Res<()> {
        match self.call(req)? {
            PeerReply::Ok => Ok(()),
            r => self.unexpected(r),
        }
    }
}

impl Replica for RemoteReplica {
    fn node(&self) -> &str {
        &self.node
    }

    fn lock(&mut self, wait: Duration) -> Res<()> {
        self.ok(&PeerRequest::Lock {
            wait_secs: wait.as_secs(),
        })
    }

    fn unlock(&mut self) {
        let _ = self.ok(&PeerRequest::Unlock);
    }

    fn mailbox(&mut self) -> Res<Mailbox> {
        match self.call(&PeerRequest::Mailbox)? {
            PeerReply::Mailbox { mailbox } => Ok(mailbox),
            r => self.unexpected(r),
        }
    }

    fn messages(&mut self, folder: &str) -> Res<Listing> {
        let mut messages: Vec<MessageInfo> = Vec::new();
        let mut after = 0;
        let info = loop {
            let r = self.call(&PeerRequest::Messages {
                folder: folder.to_string(),
                after,
                limit: wire::PAGE,
            })?;
            let PeerReply::Messages {
                info,
                messages: page,
                more,
            } = r
            else {
                return self.unexpected(r);
            };
            let Some(last) = page.last().map(|m| m.uid) else {
                break info;
            };
            if last <= after || page.first().is_some_and(|m| m.uid <= after) {
                return Err(format!("{}: message list out of order", self.conn.who));
            }
            after = last;
            messages.extend(page);
            if !more {
                break info;
            }
        };
        let gone = match self.call(&PeerRequest::Gone {
            folder: folder.to_string(),
        })? {
            PeerReply::Gone { gone } => gone,
            r => return self.unexpected(r),
        };
        Ok(Listing { info, messages, gone })
    }

    fn fetch(&mut self, folder: &str, uids: &[u32]) -> Res<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(wire::MAX_BATCH) {
            self.conn.send(&PeerRequest::Fetch {
                folder: folder.to_string(),
                uids: chunk.to_vec(),
            })?;
            for &uid in chunk {
                match self.reply()? {
                    PeerReply::Body { uid: u, present } if u == uid => {
                        out.push(if present {
                            Some(self.conn.recv_data(self.max_message)?)
                        } else {
                            None
                        });
                    }
                    r => return self.unexpected(r),
                }
            }
        }
        Ok(out)
    }

    fn put(&mut self, folder: &str, msgs: Vec<NewMessage>, reuse: bool) -> Res<(Vec<Placed>, u64)> {
        let mut results = Vec::with_capacity(msgs.len());
        let mut modseq = 0;
        for chunk in msgs.chunks(wire::MAX_BATCH) {
            self.conn.send(&PeerRequest::Put {
                folder: folder.to_string(),
                messages: chunk.iter().map(|m| m.info.clone()).collect(),
                reuse,
            })?;
            for m in chunk {
                self.conn.send_data(&m.bytes)?;
            }
            match self.reply()? {
                PeerReply::Put { results: r, modseq: m } if r.len() == chunk.len() => {
                    results.extend(r);
                    modseq = m;
                }
                r => return self.unexpected(r),
            }
        }
        Ok((results, modseq))
    }

    fn renumber(&mut self, folder: &str, moves: Vec<(u32, u32)>, reuse: bool) -> Res<(Vec<bool>, u64)> {
        let n = moves.len();
        match self.call(&PeerRequest::Renumber {
            folder: folder.to_string(),
            moves,
            reuse,
        })? {
            PeerReply::Renumbered { done, modseq } if done.len() == n => Ok((done, modseq)),
            r => self.unexpected(r),
        }
    }

    fn set_flags(&mut self, folder: &str, changes: Vec<FlagChange>) -> Res<u64> {
        self.modseq(&PeerRequest::SetFlags {
            folder: folder.to_string(),
            changes,
        })
    }

    fn expunge(&mut self, folder: &str, uids: Vec<u32>) -> Res<u64> {
        let mut m = 0;
        for chunk in uids.chunks(wire::MAX_CHANGES) {
            m = self.modseq(&PeerRequest::Expunge {
                folder: folder.to_string(),
                uids: chunk.to_vec(),
            })?;
        }
        Ok(m)
    }

    fn create_folder(&mut self, name: &str, uid_validity: u32) -> Res<()> {
        self.ok(&PeerRequest::CreateFolder {
            name: name.to_string(),
            uid_validity,
        })
    }

    fn rename_folder(&mut self, old: &str, new: &str) -> Res<()> {
        self.ok(&PeerRequest::RenameFolder {
            old: old.to_string(),
            new: new.to_string(),
        })
    }

    fn delete_folder(&mut self, name: &str) -> Res<()> {
        self.ok(&PeerRequest::DeleteFolder { name: name.to_string() })
    }

    fn set_uid_validity(&mut self, folder: &str, uid_validity: u32) -> Res<()> {
        self.ok(&PeerRequest::SetUidValidity {
            folder: folder.to_string(),
            uid_validity,
        })
    }

    fn set_folder_meta(&mut self, folder: &str, guid: &str, special_use: &[String]) -> Res<()> {
        self.ok(&PeerRequest::SetFolderMeta {
            folder: folder.to_string(),
            guid: guid.to_string(),
            special_use: special_use.to_vec(),
        })
    }

    fn subscribe(&mut self, name: &str, on: bool) -> Res<()> {
        self.ok(&PeerRequest::Subscribe {
            name: name.to_string(),
            on,
        })
    }

    fn load_state(&mut self, _peer: &str) -> Res<Option<SyncState>> {
        match self.call(&PeerRequest::LoadState)? {
            PeerReply::State { state } => Ok(state),
            r => self.unexpected(r),
        }
    }

    fn save_state(&mut self, _peer: &str, state: &SyncState) -> Res<()> {
        self.ok(&PeerRequest::SaveState { state: state.clone() })
    }
}
