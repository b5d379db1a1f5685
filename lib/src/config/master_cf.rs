//! The service table, `master.toml`: one `[[service]]` entry per (name, type), the columns
//! of Postfix's master.cf as named fields.
//!
//! ```toml
//! [[service]]
//! name = "smtp"            # service name; with type, the key of the entry
//! type = "inet"            # inet (TCP) or unix (stream socket under queue_directory)
//! listen = "127.0.0.1:2525" # inet: ADDR:PORT, [V6]:PORT or a list; unix: path under queue_directory
//! command = "smtpd"        # program in daemon_directory (or an absolute path)
//! args = []
//! unprivileged = true      # run as mail_owner when master runs as root
//! maxproc = 100            # default: default_process_limit
//! min_procs = 0            # children kept running even when idle
//! max_use = 100            # requests (connections) a child serves, then exits
//! max_idle = "100s"        # an idle child exits after this long
//! max_conns = 200          # connections per process, for multi-connection daemons
//! wakeup = "60s"           # master triggers the service this often (pickup, qmgr); 0: never
//! options = { smtpd_recipient_restrictions = [...] }  # main.toml overrides, like `-o`
//! ```

use super::duration::Seconds;
use serde::{Deserialize, Serialize};

/// The kind of listening socket master opens for a service.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// A TCP listener.
    Inet,
    /// A Unix stream socket under the queue directory.
    Unix,
}

impl ServiceType {
    /// The name used in `master.toml` and in `NAME/TYPE` keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
        }
    }
}

/// One or more listen addresses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Listen {
    /// One address.
    One(String),
    /// Several addresses served by the same children.
    Many(Vec<String>),
}

impl Listen {
    /// The addresses as a list.
    pub fn addrs(&self) -> Vec<String> {
        match self {
            Listen::One(a) => vec![a.clone()],
            Listen::Many(v) => v.clone(),
        }
    }
}

/// One `[[service]]` entry as written in the file; unset limits come from main.toml.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// The service name (`smtp`, `submission`, `cleanup`, ...).
    pub name: String,
    /// The socket type.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// Where to listen; for unix services, default `private/NAME`.
    pub listen: Option<Listen>,
    /// The program to run.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Drop to mail_owner when master runs as root (default true).
    #[serde(default = "yes")]
    pub unprivileged: bool,
    /// Most children at once.
    pub maxproc: Option<u32>,
    /// Children kept running even when idle.
    #[serde(default)]
    pub min_procs: u32,
    /// Requests a child serves before it exits.
    pub max_use: Option<u32>,
    /// How long an idle child waits before it exits.
    pub max_idle: Option<Seconds>,
    /// Connections per process (multi-connection daemons).
    pub max_conns: Option<u32>,
    /// Period of the wakeup trigger; 0 or absent: none.
    #[serde(default)]
    pub wakeup: Seconds,
    /// main.toml settings overridden for this service only.
    #[serde(default)]
    pub options: toml::Table,
}

fn yes() -> bool {
    true
}

/// The file as a whole.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct MasterFile {
    #[serde(default)]
    pub service: Vec<ServiceEntry>,
}
