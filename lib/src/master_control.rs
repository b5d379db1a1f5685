//! The control channel of master: `postern status` asks, master answers.
//!
//! Master listens on `queue_directory/pid/master.ctl` (mode 0600, so only the account
//! that runs master may ask) and speaks the [`crate::ipc`] framing with protocol name
//! [`PROTOCOL`]: one [`ControlRequest`] in, one [`ControlReply`] out, then the connection
//! closes. Master answers within a short timeout and never blocks its loop on a slow peer
//! for longer than that.

use serde::{Deserialize, Serialize};

/// Protocol name in the ipc hello.
pub const PROTOCOL: &str = "master-control";
/// Protocol version.
pub const VERSION: u32 = 1;

/// What a control client asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The state of every service.
    Status,
}

/// One service in a status reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceReport {
    /// `NAME/TYPE`.
    pub key: String,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// The program.
    pub command: String,
    /// Children running (not counting retiring ones).
    pub processes: u32,
    /// Children that can take no more connections.
    pub busy: u32,
    /// Children that can take another connection.
    pub idle: u32,
    /// Client connections open in its children.
    pub connections: u64,
    /// Children that are finishing their work after a reload or stop.
    pub retiring: u32,
    /// Connections served by its children, including exited ones.
    pub served: u64,
    /// Children that exited abnormally since master started.
    pub restarts: u64,
    /// Seconds until spawning resumes, when throttled.
    pub throttled_for: Option<u64>,
    /// Process limit.
    pub maxproc: u32,
}

/// What master answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ControlReply {
    /// Answer to [`ControlRequest::Status`].
    Status {
        /// Master's pid.
        pid: u32,
        /// Reloads done since start.
        reloads: u64,
        /// The services.
        services: Vec<ServiceReport>,
    },
}

/// The texts of main.toml and master.toml as master last validated them. Master writes
/// it atomically to `queue_directory/pid/config.json` at start and after each accepted
/// reload; children load their configuration from it, so an edit that master refused
/// never reaches a new child.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigSnapshot {
    /// main.toml.
    pub main: String,
    /// master.toml.
    pub master: String,
}
