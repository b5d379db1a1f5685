//! # postern-lib — the shared primitives every Postern daemon and command is built on
//!
//! Postern is built the Postfix way: a `master` supervisor and small single-purpose
//! daemons. Everything those programs have in common lives here, once, so that no daemon
//! writes its own line reader, file opener, queue file parser or config loader.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`config`] | `main.toml` and `master.toml`: typed settings, defaults, validation, errors naming file, line and key |
//! | [`log`] | `tracing` set-up and the Postfix-style one-line-per-event format, to a file, stderr or syslog |
//! | [`master_control`] | the control channel of master: `postern status` asks, master answers |
//! | [`master_status`] | the tiny protocol a child uses to tell master it is busy or available |
//! | [`inherited_fd`] | the one module with `unsafe`: adopting descriptors passed by master |
//! | [`skeleton`] | the daemon skeleton: listening sockets from master, busy/idle, `max_use`, `max_idle`, privilege drop, signals |
//! | [`proto`] | the typed protocols between daemons: cleanup, auth, triggers |
//! | [`privs`] | dropping to `mail_owner`: groups, uid/gid, Linux capabilities |
//! | [`line`] | bounded line reader/writer (CRLF and bare LF, a hard maximum with a distinct "too long") |
//! | [`strbuf`] | bounded string buffers |
//! | [`safe_open`] | opening files without following symlinks, with owner/link-count/type checks; atomic write-fsync-rename |
//! | [`queue_id`] | queue IDs: unique across processes and restarts, sortable by time, valid file names |
//! | [`queue_file`] | the queue file format: envelope records, content, per-recipient done marks |
//! | [`ipc`] | the framed, versioned, size-limited protocol between daemons over Unix sockets |
//! | [`queue_dirs`] | the layout of `queue_directory`: subdirectories, owners and modes; create, check, repair |
//! | [`accounts`] | `mail_owner` and the postdrop group: look-ups, and creating the system account when missing |
//! | [`users`] | `etc/users`: mailbox accounts (name, password hash, quota), rewritten atomically, mode 0600 |
//! | [`password`] | password hashes: argon2id for what Postern writes; verifying argon2, sha-crypt, yescrypt, bcrypt |
//!
//! Failure classes follow Postfix: a bad environment (missing file, bad config, port in use)
//! is an error value that the program reports in one line and exits non-zero; a broken
//! invariant is a bug. Nothing here panics on input from a file or the network.
#![deny(unsafe_code)]

pub mod accounts;
pub mod config;
pub mod inherited_fd;
pub mod ipc;
pub mod line;
pub mod log;
pub mod master_control;
pub mod master_status;
pub mod password;
pub mod privs;
pub mod proto;
pub mod queue_dirs;
pub mod queue_file;
pub mod queue_id;
pub mod safe_open;
pub mod skeleton;
pub mod strbuf;
pub mod users;
