//! What local reads from main.toml, and the alias table it keeps loaded (reloaded when
//! the file changes).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use postern_lib::address::Destinations;
use postern_lib::aliases::Aliases;
use postern_lib::skeleton::Context;

/// The mailbox format of virtual users (`mailbox_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxFormat {
    /// `virtual_mailbox_base/<user>/` with `tmp/ new/ cur/`.
    Maildir,
    /// One file, `mail_spool_directory/<user>`.
    Mbox,
}

/// local's settings and state.
pub struct Settings {
    /// Maildir base.
    pub mailbox_base: PathBuf,
    /// `mailbox_format`.
    pub mailbox_format: MailboxFormat,
    /// `mail_spool_directory` (absolute; empty: the Maildir base).
    pub spool: PathBuf,
    /// `stale_lock_time`.
    pub lock_stale: Duration,
    /// `recipient_delimiter`.
    pub delimiter: String,
    /// Our domains.
    pub destinations: Destinations,
    /// `myorigin`.
    pub myorigin: String,
    alias_files: Vec<PathBuf>,
    alias_stamp: Vec<Option<(SystemTime, u64)>>,
    aliases: Vec<Aliases>,
    /// The user look-ups (auth connection and recent answers), kept between jobs.
    pub users: crate::mailbox::Users,
}

fn stamp(p: &PathBuf) -> Option<(SystemTime, u64)> {
    let md = std::fs::symlink_metadata(p).ok()?;
    Some((md.modified().ok()?, md.len()))
}

impl Settings {
    /// From the context.
    pub fn new(ctx: &Context) -> Settings {
        let m = &ctx.main;
        Settings {
            mailbox_base: PathBuf::from(&m.virtual_mailbox_base),
            mailbox_format: if m.mailbox_format == "mbox" {
                MailboxFormat::Mbox
            } else {
                MailboxFormat::Maildir
            },
            spool: match m.mail_spool_directory.trim() {
                "" => PathBuf::new(),
                d => ctx.config.dir.parent().unwrap_or(&ctx.config.dir).join(d),
            },
            lock_stale: m.stale_lock_time.duration(),
            delimiter: m.recipient_delimiter.clone(),
            destinations: Destinations::new(&m.mydestination, &m.relay_domains),
            myorigin: m.myorigin.trim().trim_end_matches('.').to_lowercase(),
            alias_files: m
                .alias_maps
                .iter()
                .filter(|f| !f.trim().is_empty())
                .map(|f| ctx.config.dir.join(f.trim()))
                .collect(),
            alias_stamp: Vec::new(),
            aliases: Vec::new(),
            users: crate::mailbox::Users::default(),
        }
    }

    /// The directory of mbox mailboxes.
    pub fn spool_dir(&self) -> PathBuf {
        if self.spool.as_os_str().is_empty() {
            self.mailbox_base.clone()
        } else {
            self.spool.clone()
        }
    }

    /// The alias tables, reloaded when a file changed. A missing file is an empty table;
    /// an unreadable one is an error (deliveries defer rather than bounce).
    pub fn aliases(&mut self) -> Result<&[Aliases], String> {
        let stamps: Vec<_> = self.alias_files.iter().map(stamp).collect();
        if stamps != self.alias_stamp {
            let mut tables = Vec::new();
            for f in &self.alias_files {
                tables.push(Aliases::load(f).map_err(|e| e.to_string())?);
            }
            self.aliases = tables;
            self.alias_stamp = stamps;
        }
        Ok(&self.aliases)
    }
}
