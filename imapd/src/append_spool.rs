//! Large APPEND literals received into the target folder's `tmp/` as they arrive, as
//! Dovecot does: a literal over [`SPOOL_ABOVE`] in an APPEND (each message of a
//! MULTIAPPEND) is written to a [`Spool`] instead of memory, and the command's text gets
//! a placeholder literal in its place, which `Session::spooled_message` turns back
//! into the file when the APPEND runs. The quota is checked with the announced size
//! (plus the command's messages received so far) before a byte is read (a synchronising literal over it, or to a folder that does
//! not exist, is refused unread; a LITERAL+ one is read and thrown away), and again with
//! the real size when the APPEND runs. A spool the command does not make a message — the
//! command refused, the connection gone — removes its file.

use crate::parse;
use crate::session::{Reply, SPOOL_ABOVE, Session};
use postern_mailbox::Store;
use postern_mailbox::spool::Spool;

impl Session {
    /// The placeholder of the command's `i`th spooled literal: a literal of its own,
    /// unguessable by the client (the session's nonce), too long to be taken for a date.
    fn spool_placeholder(&self, i: usize) -> String {
        format!("postern-spool-{:016x}-{i}", self.spool_nonce)
    }

    /// At a literal of `n` bytes (`n` > [`SPOOL_ABOVE`]) announced at the end of `line`
    /// (already in the command; a literal8 `~{n}` too): `None` when it is not one for a
    /// spool (not an APPEND message, not logged in) and goes to memory as any other;
    /// `Some(None)` when it is being spooled; `Some(Some(reply))` when a synchronising
    /// literal is refused unread with `reply` (the command is then dropped by the caller).
    pub(crate) fn spool_start(&mut self, line: &[u8], n: u64, sync: bool) -> Option<Option<Reply>> {
        debug_assert!(n > SPOOL_ABOVE);
        let store = self.store.as_ref()?;
        let open = line.iter().rposition(|&b| b == b'{')?;
        // a literal8 (RFC 3516 `~{n}`) stays in memory: its binary parts are base64-encoded
        // before it is stored (crate::binary::encode_binary_parts), and a spool writes
        // CRLF line ends into binary bytes
        if line[..open].ends_with(b"~") {
            return None;
        }
        // the command so far with an empty string for the literal: is it an APPEND, where to
        let keep = self.cmd.len().checked_sub(line.len() - open)?;
        let mut probe = self.cmd.get(..keep)?.to_vec();
        probe.extend_from_slice(b"\"\"");
        let c = parse::command(&probe).ok()?;
        if c.name != "APPEND" {
            return None;
        }
        let name = Store::canonical(&c.args.first()?.text()?);
        // with the messages of this command received so far (MULTIAPPEND): tmp/ is not
        // counted in the quota, so many of them could otherwise fill the disk
        let received: u64 = self
            .spooled
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .map(Spool::size)
            .sum();
        let slot = match store.room_for(n.saturating_add(received)) {
            Ok(false) => Err(self.over_quota("APPEND", n)),
            Err(e) => Err(Reply::from(e)),
            Ok(true) => match store.folder_path(&name) {
                Err(e) => Err(Reply::from(e)),
                Ok(dir) => Spool::create(&dir).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Reply::No("[TRYCREATE] No such mailbox".into())
                    } else {
                        tracing::warn!("APPEND: cannot write in {}: {e}, {}", dir.display(), self.who());
                        Reply::No("[SERVERBUG] Cannot store the message".into())
                    }
                }),
            },
        };
        if sync && let Err(reply) = slot {
            return Some(Some(reply));
        }
        let placeholder = self.spool_placeholder(self.spooled.len());
        self.cmd.truncate(keep);
        self.cmd
            .extend_from_slice(format!("{{{}}}\r\n{placeholder}", placeholder.len()).as_bytes());
        self.spooled.push(slot);
        self.spooling = true;
        self.literal_need = n as usize;
        if sync {
            self.line("+ Ready for literal data");
        }
        Some(None)
    }

    /// Moves `data`, input bytes of a spooled literal, to its file (or away, when it
    /// failed or is thrown away).
    pub(crate) fn spool_write(&mut self, data: &[u8]) {
        if let Some(slot @ Ok(_)) = self.spooled.last_mut()
            && let Ok(spool) = slot
            && let Err(e) = spool.write(data)
        {
            tracing::warn!("APPEND: cannot write {}: {e}", spool.path().display());
            *slot = Err(Reply::No("[SERVERBUG] Cannot store the message".into()));
        }
    }

    /// The spooled file `message` (an APPEND's message argument) stands for, or why the
    /// APPEND fails; `None` when it is a message in memory. Each is handed out once.
    pub(crate) fn spooled_message(&mut self, message: &[u8]) -> Option<Result<Spool, Reply>> {
        let prefix = self.spool_placeholder(0);
        let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
        let i: usize = std::str::from_utf8(message.strip_prefix(prefix.as_bytes())?)
            .ok()?
            .parse()
            .ok()?;
        let slot = self.spooled.get_mut(i)?;
        Some(std::mem::replace(
            slot,
            Err(Reply::Bad("APPEND message given twice".into())),
        ))
    }
}
