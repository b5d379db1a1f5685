//! The settings of `main.toml`, with Postfix's names where Postfix has one.
//!
//! Every setting is declared here once: its name (the field), its type, its default and a
//! one-line doc. `postern config` prints this struct. A daemon reads the fields it needs
//! from the [`MainConfig`] that the skeleton hands it (with the service's `options`
//! overrides from `master.toml` already applied).
//!
//! String values may refer to other string settings as `$name` or `${name}`, as in
//! main.cf (`myorigin = "$myhostname"`); see [`super::expand`]. Relative paths resolve
//! against the parent of the config directory, so a copy of `etc/` in `/some/dir/etc`
//! runs entirely inside `/some/dir`.

use super::cidr::Cidr;
use super::duration::Seconds;
use serde::{Deserialize, Serialize};

/// Every setting of `main.toml`. Unknown keys are an error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MainConfig {
    /// The fully-qualified name of this host (default: the system's host name).
    pub myhostname: String,
    /// The domain of this host (default: `myhostname` without its first label).
    pub mydomain: String,
    /// The domain that locally-posted mail appears to come from.
    pub myorigin: String,
    /// Domains this host delivers locally.
    pub mydestination: Vec<String>,
    /// Client networks trusted to relay (`permit_mynetworks`).
    pub mynetworks: Vec<Cidr>,
    /// Other domains this host relays to (besides mydestination).
    pub relay_domains: Vec<String>,
    /// Send all non-local mail to this host (`[host]:port` skips MX lookup); empty: direct.
    pub relayhost: String,
    /// Largest message accepted, in bytes (envelope and headers included).
    pub message_size_limit: u64,
    /// The queue: maildrop/ incoming/ active/ deferred/ hold/ corrupt/ and sockets.
    pub queue_directory: String,
    /// Where daemon programs live; empty: the directory of the running executable.
    pub daemon_directory: String,
    /// The unprivileged account that daemons run as when master starts as root.
    pub mail_owner: String,
    /// Log file; `"syslog"` sends to the local syslog (mail facility); `"-"` to stderr.
    pub maillog_file: String,
    /// The base directory of virtual mailboxes: one Maildir per user below it.
    pub virtual_mailbox_base: String,
    /// How long a message may stay queued before it is bounced.
    pub maximal_queue_lifetime: Seconds,
    /// Default `maxproc` of a service.
    pub default_process_limit: u32,
    /// Default `max_use` of a service: requests a child serves before it exits.
    pub max_use: u32,
    /// Default `max_idle` of a service: how long an idle child waits before it exits.
    pub max_idle: Seconds,
    /// Default per-process connection limit of multi-connection daemons.
    pub default_connection_limit: u32,
    /// How long master waits before it starts a child again after one failed at start-up.
    pub service_throttle_time: Seconds,
    /// How long `postern stop` lets children finish their current work before killing them.
    pub shutdown_timeout: Seconds,
}

impl Default for MainConfig {
    fn default() -> Self {
        MainConfig {
            myhostname: String::new(),
            mydomain: String::new(),
            myorigin: "$myhostname".into(),
            mydestination: vec!["$myhostname".into(), "localhost.$mydomain".into(), "localhost".into()],
            mynetworks: vec![
                Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
                Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
            ],
            relay_domains: Vec::new(),
            relayhost: String::new(),
            message_size_limit: 10_240_000,
            queue_directory: "/var/spool/postern".into(),
            daemon_directory: String::new(),
            mail_owner: "postern".into(),
            maillog_file: "syslog".into(),
            virtual_mailbox_base: "/var/mail/postern".into(),
            maximal_queue_lifetime: Seconds(5 * 86400),
            default_process_limit: 100,
            max_use: 100,
            max_idle: Seconds(100),
            default_connection_limit: 200,
            service_throttle_time: Seconds(60),
            shutdown_timeout: Seconds(10),
        }
    }
}

impl MainConfig {
    /// Checks bounds that the types alone do not express. Returns (key, reason).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.myhostname.is_empty() || !self.myhostname.contains('.') {
            return Err((
                "myhostname",
                format!("{:?} is not a fully-qualified host name", self.myhostname),
            ));
        }
        if self.queue_directory.is_empty() {
            return Err(("queue_directory", "must not be empty".into()));
        }
        if self.mail_owner.is_empty() || self.mail_owner == "root" {
            return Err(("mail_owner", "must name an unprivileged account, not root".into()));
        }
        if self.message_size_limit < 1024 {
            return Err(("message_size_limit", "must be at least 1024 bytes".into()));
        }
        if self.default_process_limit == 0 {
            return Err(("default_process_limit", "must be at least 1".into()));
        }
        if self.max_use == 0 {
            return Err(("max_use", "must be at least 1".into()));
        }
        if self.default_connection_limit == 0 {
            return Err(("default_connection_limit", "must be at least 1".into()));
        }
        Ok(())
    }
}
