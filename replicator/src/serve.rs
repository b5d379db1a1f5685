//! The serving side of the peer protocol: one connection from another replicator, checked
//! (hello, HMAC proof of the shared secret), then its requests carried out on this
//! server's store through [`LocalReplica`]. Every peer is treated as hostile until it has
//! proved the secret, and its input stays bounded after: frames by the IPC limits, data
//! streams by `message_size_limit`, batches by [`wire::MAX_BATCH`] and
//! [`wire::MAX_BATCH_BYTES`], every read by the replica timeout. A peer that sends what
//! does not parse gets one log line and its connection closed.

use crate::replica::{LocalReplica, Replica, Res};
use crate::wire::{self, Conn, PeerReply, PeerRequest};
use postern_mailbox::replica::NewMessage;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// What a peer session needs to know.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// This replica's name.
    pub node: String,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// `virtual_mailbox_base`.
    pub base: PathBuf,
    /// `message_size_limit`.
    pub max_message: u64,
    /// `replica_timeout`.
    pub timeout: Duration,
}

/// Serves one peer connection to its end; `who` names the client in log lines.
pub fn serve_peer<S: Read + Write>(cfg: &ServeConfig, stream: S, who: &str) {
    let mut conn = Conn::new(stream, cfg.timeout, who.to_string());
    match session(cfg, &mut conn) {
        Ok(()) => {}
        Err(e) => tracing::warn!("peer {who}: {e}"),
    }
}

fn session<S: Read + Write>(cfg: &ServeConfig, conn: &mut Conn<S>) -> Res<()> {
    conn.hello()?;
    let nonce = wire::nonce()?;
    conn.send(&PeerReply::Challenge {
        node: cfg.node.clone(),
        nonce: nonce.clone(),
    })?;
    let peer = match conn.recv::<PeerRequest>()? {
        PeerRequest::Auth {
            node,
            nonce: client_nonce,
            proof,
        } => {
            let text = wire::proof_text("client", &nonce, &client_nonce, &node, &cfg.node);
            if !wire::valid_node(&node) || client_nonce.len() != 64 || !wire::verify(&cfg.secret, &text, &proof) {
                let _ = conn.send(&PeerReply::Error {
                    reason: "authentication failed".into(),
                });
                return Err("authentication failed (wrong replica secret?)".into());
            }
            if node == cfg.node {
                let _ = conn.send(&PeerReply::Error {
                    reason: "same replica_name as this server".into(),
                });
                return Err(format!("peer calls itself {node:?} as this server does"));
            }
            let mine = wire::proof_text("server", &nonce, &client_nonce, &node, &cfg.node);
            conn.send(&PeerReply::Welcome {
                proof: wire::sign(&cfg.secret, &mine),
            })?;
            node
        }
        other => {
            let _ = conn.send(&PeerReply::Error {
                reason: "authenticate first".into(),
            });
            return Err(format!("request before authentication: {}", kind(&other)));
        }
    };
    conn.who = format!("{} ({peer})", conn.who);
    let mut local: Option<(String, LocalReplica)> = None;
    let r = requests(cfg, conn, &peer, &mut local);
    if let Some((user, l)) = local {
        cache().put(&user, l);
    }
    r
}

/// The folder states a peer-serving process keeps between sessions.
fn cache() -> &'static crate::replica::Cache {
    static CACHE: std::sync::OnceLock<crate::replica::Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(crate::replica::Cache::default)
}

fn requests<S: Read + Write>(
    cfg: &ServeConfig,
    conn: &mut Conn<S>,
    peer: &str,
    local: &mut Option<(String, LocalReplica)>,
) -> Res<()> {
    loop {
        let req = match conn.frame() {
            Ok(f) => match f.message::<PeerRequest>() {
                Ok(r) => r,
                Err(e) => {
                    let _ = conn.send(&PeerReply::Error {
                        reason: "bad request".into(),
                    });
                    return Err(format!("bad request: {e}"));
                }
            },
            // a clean close between requests ends the session
            Err(e) if e.ends_with("connection closed") => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = match handle(cfg, conn, peer, local, req) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(Fatal(e)) => return Err(e),
        };
        conn.send(&reply)?;
    }
}

/// An error after which the stream position is unknown: the connection ends.
struct Fatal(String);

fn kind(r: &PeerRequest) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn error(reason: impl Into<String>) -> PeerReply {
    PeerReply::Error { reason: reason.into() }
}

/// One request; `Ok(None)` when the replies were sent already (fetch).
fn handle<S: Read + Write>(
    cfg: &ServeConfig,
    conn: &mut Conn<S>,
    peer: &str,
    local: &mut Option<(String, LocalReplica)>,
    req: PeerRequest,
) -> Result<Option<PeerReply>, Fatal> {
    if let PeerRequest::Open { user } = &req {
        if let Some((u, l)) = local.take() {
            cache().put(&u, l);
        }
        return Ok(Some(match cache().take(&cfg.base, user, &cfg.node, cfg.max_message) {
            Ok(l) => {
                *local = Some((user.clone(), l));
                PeerReply::Ok
            }
            Err(e) => error(e),
        }));
    }
    // a put's data streams must be read whatever happens, to stay in step
    if let PeerRequest::Put { messages, .. } = &req
        && messages.len() > wire::MAX_BATCH
    {
        return Err(Fatal(format!("put of {} messages", messages.len())));
    }
    let Some((_, r)) = local.as_mut() else {
        if let PeerRequest::Put { messages, .. } = &req {
            for _ in messages {
                conn.recv_data(cfg.max_message).map_err(Fatal)?;
            }
        }
        return Ok(Some(error("no user open")));
    };
    let reply = match req {
        PeerRequest::Auth { .. } | PeerRequest::Open { .. } => error("unexpected"),
        PeerRequest::Lock { wait_secs } => {
            let wait = Duration::from_secs(wait_secs).min(cfg.timeout);
            r.lock(wait).map(|()| PeerReply::Ok).unwrap_or_else(error)
        }
        PeerRequest::Unlock => {
            r.unlock();
            PeerReply::Ok
        }
        PeerRequest::Mailbox => r
            .mailbox()
            .map(|mailbox| PeerReply::Mailbox { mailbox })
            .unwrap_or_else(error),
        PeerRequest::Messages { folder, after, limit } => match r.messages(&folder) {
            Ok(l) => {
                let start = l.messages.partition_point(|m| m.uid <= after);
                let mut limit = limit.clamp(1, wire::PAGE);
                // keep the reply within one frame
                loop {
                    let page: Vec<_> = l.messages[start..].iter().take(limit).cloned().collect();
                    let more = start + page.len() < l.messages.len();
                    let reply = PeerReply::Messages {
                        info: l.info.clone(),
                        messages: page,
                        more,
                    };
                    let size = serde_json::to_vec(&reply).map(|v| v.len()).unwrap_or(usize::MAX);
                    if size <= postern_lib::ipc::MAX_MESSAGE_LEN || limit == 1 {
                        break reply;
                    }
                    limit /= 2;
                }
            }
            Err(e) => error(e),
        },
        PeerRequest::Gone { folder } => match r.messages(&folder) {
            Ok(l) => {
                let mut gone = l.gone;
                // the newest that fit in one frame
                let most = postern_lib::ipc::MAX_MESSAGE_LEN / 64;
                if gone.len() > most {
                    gone.drain(..gone.len() - most);
                }
                PeerReply::Gone { gone }
            }
            Err(e) => error(e),
        },
        PeerRequest::Fetch { folder, uids } => {
            if uids.len() > wire::MAX_BATCH {
                return Err(Fatal(format!("fetch of {} messages", uids.len())));
            }
            match r.fetch(&folder, &uids) {
                Ok(bodies) => {
                    for (uid, b) in uids.into_iter().zip(bodies) {
                        conn.send(&PeerReply::Body {
                            uid,
                            present: b.is_some(),
                        })
                        .map_err(Fatal)?;
                        if let Some(b) = b {
                            conn.send_data(&b).map_err(Fatal)?;
                        }
                    }
                    return Ok(None);
                }
                Err(e) => error(e),
            }
        }
        PeerRequest::Put {
            folder,
            messages,
            reuse,
        } => {
            let mut msgs = Vec::with_capacity(messages.len());
            let mut total = 0u64;
            for info in messages {
                let bytes = conn.recv_data(cfg.max_message).map_err(Fatal)?;
                total += bytes.len() as u64;
                if total > wire::MAX_BATCH_BYTES {
                    return Err(Fatal(format!("put of more than {} bytes", wire::MAX_BATCH_BYTES)));
                }
                msgs.push(NewMessage { info, bytes });
            }
            r.put(&folder, msgs, reuse)
                .map(|(results, modseq)| PeerReply::Put { results, modseq })
                .unwrap_or_else(error)
        }
        PeerRequest::Renumber { folder, moves, reuse } => {
            if moves.len() > wire::MAX_CHANGES {
                error("too many")
            } else {
                r.renumber(&folder, moves, reuse)
                    .map(|(done, modseq)| PeerReply::Renumbered { done, modseq })
                    .unwrap_or_else(error)
            }
        }
        PeerRequest::SetFlags { folder, changes } => {
            if changes.len() > wire::MAX_CHANGES {
                error("too many")
            } else {
                r.set_flags(&folder, changes)
                    .map(|modseq| PeerReply::Modseq { modseq })
                    .unwrap_or_else(error)
            }
        }
        PeerRequest::Expunge { folder, uids } => {
            if uids.len() > wire::MAX_CHANGES {
                error("too many")
            } else {
                r.expunge(&folder, uids)
                    .map(|modseq| PeerReply::Modseq { modseq })
                    .unwrap_or_else(error)
            }
        }
        PeerRequest::CreateFolder { name, uid_validity } => ok(r.create_folder(&name, uid_validity)),
        PeerRequest::RenameFolder { old, new } => ok(r.rename_folder(&old, &new)),
        PeerRequest::DeleteFolder { name } => ok(r.delete_folder(&name)),
        PeerRequest::SetUidValidity { folder, uid_validity } => ok(r.set_uid_validity(&folder, uid_validity)),
        PeerRequest::SetFolderMeta {
            folder,
            guid,
            special_use,
        } => ok(r.set_folder_meta(&folder, &guid, &special_use)),
        PeerRequest::Subscribe { name, on } => ok(r.subscribe(&name, on)),
        PeerRequest::LoadState => r
            .load_state(peer)
            .map(|state| PeerReply::State { state })
            .unwrap_or_else(error),
        PeerRequest::SaveState { state } => ok(r.save_state(peer, &state)),
    };
    Ok(Some(reply))
}

fn ok(r: Res<()>) -> PeerReply {
    r.map(|()| PeerReply::Ok).unwrap_or_else(error)
}
