//! What local reads from main.toml, and the alias table it keeps loaded (reloaded when
//! the file changes).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use postern_lib::address::Destinations;
use postern_lib::aliases::Aliases;
use postern_lib::skeleton::Context;

/// The mailbox format of virtual users (`mailbox_format`): `virtual_mailbox_base/<user>/`
/// with `tmp/ new/ cur/`, or one file, `mail_spool_directory/<user>`.
pub use postern_lib::config::MailboxFormat;

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
    /// The alias files were looked at for changes in this connection's job(s) already.
    aliases_checked: bool,
    aliases: Vec<Aliases>,
    /// The user look-ups (auth connection and recent answers), kept between jobs.
    pub users: crate::mailbox::Users,
    alias_owners: Vec<u32>,
    /// `local_system_users`.
    pub system_users: bool,
    /// `home_mailbox`.
    pub home_mailbox: String,
    /// `forward_path`.
    pub forward_path: Vec<String>,
    /// `allow_mail_to_commands`.
    pub allow_commands: Vec<String>,
    /// `allow_mail_to_files`.
    pub allow_files: Vec<String>,
    /// `default_privs` (the account name).
    pub default_privs: String,
    /// `command_time_limit`.
    pub command_limit: Duration,
    /// mail_owner's account, whose effective ids local rests with when it runs as root.
    pub mail_owner: Option<crate::ids::Identity>,
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
            mailbox_format: m.mailbox_format,
            spool: match m.mail_spool_directory.trim() {
                "" => PathBuf::new(),
                d => PathBuf::from(d),
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
            aliases_checked: false,
            aliases: Vec::new(),
            users: crate::mailbox::Users::default(),
            alias_owners: Vec::new(),
            system_users: m.local_system_users,
            home_mailbox: m.home_mailbox.trim().to_string(),
            forward_path: m.forward_path.clone(),
            allow_commands: m.allow_mail_to_commands.clone(),
            allow_files: m.allow_mail_to_files.clone(),
            default_privs: m.default_privs.trim().to_string(),
            command_limit: m.command_time_limit.duration(),
            mail_owner: crate::ids::Identity::by_name(&m.mail_owner).ok().flatten(),
        }
    }

    /// As root: rest with mail_owner's effective ids between deliveries (see ids.rs).
    pub fn rest(&self) -> Result<(), String> {
        if !crate::ids::can_switch() {
            return Ok(());
        }
        match &self.mail_owner {
            Some(owner) => crate::ids::rest_as(owner),
            None => Err("mail_owner has no account".into()),
        }
    }

    /// Whether a `|command` (`command`) or `/file` target found in `class` may be used.
    pub fn allowed(&self, command: bool, class: crate::aliases::Class) -> bool {
        let list = if command {
            &self.allow_commands
        } else {
            &self.allow_files
        };
        list.iter().any(|w| w.trim().eq_ignore_ascii_case(class.word()))
    }

    /// The alias tables as last loaded by [`Settings::aliases`].
    pub fn aliases_loaded(&self) -> &[Aliases] {
        &self.aliases
    }

    /// The owners (uids) of the alias files, in the order of [`Settings::aliases`].
    pub fn alias_owners(&self) -> &[u32] {
        &self.alias_owners
    }

    /// The directory of mbox mailboxes.
    pub fn spool_dir(&self) -> PathBuf {
        if self.spool.as_os_str().is_empty() {
            self.mailbox_base.clone()
        } else {
            self.spool.clone()
        }
    }

    /// A new request from qmgr (one job or a batch): the alias files are looked at for
    /// changes again, once ([`Settings::aliases`]), not once per recipient.
    pub fn new_request(&mut self) {
        self.aliases_checked = false;
    }

    /// The alias tables, reloaded when a file changed. A missing file is an empty table;
    /// an unreadable one is an error (deliveries defer rather than bounce).
    pub fn aliases(&mut self) -> Result<&[Aliases], String> {
        if self.aliases_checked {
            return Ok(&self.aliases);
        }
        let stamps: Vec<_> = self.alias_files.iter().map(stamp).collect();
        if stamps != self.alias_stamp {
            let mut tables = Vec::new();
            let mut owners = Vec::new();
            for f in &self.alias_files {
                tables.push(Aliases::load(f).map_err(|e| e.to_string())?);
                owners.push(std::fs::metadata(f).map(|m| m.uid()).unwrap_or(0));
            }
            self.aliases = tables;
            self.alias_owners = owners;
            self.alias_stamp = stamps;
        }
        self.aliases_checked = true;
        Ok(&self.aliases)
    }
}
