//! # postern-lib — the shared primitives every Postern daemon and command is built on
//!
//! Postern is built the Postfix way: a `master` supervisor and small single-purpose
//! daemons. Everything those programs have in common lives here, once, so that no daemon
//! writes its own line reader, file opener, queue file parser or config loader.
//!
//! Modules marked † are [`postern_util`]'s (Postfix's `util/`: nothing about mail in them),
//! re-exported here under their old paths (`ipc::server` and `skeleton::conn`'s `Gated`,
//! which need this crate's skeleton, are here); the rest is mail (Postfix's `global/`).
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`agent`] | the delivery agent side of the deliver protocol: job, done marks, delivery log lines |
//! | [`config`] | `main.toml` and `master.toml`: typed settings, defaults, validation, errors naming file, line and key |
//! | [`date`] † | RFC 5322 dates for headers and reports, syslog stamps for logs (UTC) |
//! | [`log`] † | `tracing` set-up and the Postfix-style one-line-per-event format, to a file, stderr or syslog |
//! | [`master_control`] | the control channel of master: `postern status` asks, master answers |
//! | [`master_status`] † | the tiny protocol a child uses to tell master it is busy or available |
//! | [`inherited_fd`] † | the one module with `unsafe`: descriptors across exec — adopting master's (close-on-exec), only stdio for started programs, master's clean start |
//! | [`skeleton`] | the daemon skeleton: listening sockets from master, busy/idle, `max_use`, `max_idle`, privilege drop, signals |
//! | [`proto`] | the typed protocols between daemons: cleanup, auth, triggers |
//! | [`privs`] † | dropping to `mail_owner`: groups, uid/gid, Linux capabilities |
//! | [`line`] † | bounded line reader/writer (CRLF and bare LF, a hard maximum with a distinct "too long") |
//! | [`strbuf`] † | bounded string buffers |
//! | [`safe_open`] † | opening files without following symlinks, with owner/link-count/type checks; atomic write-fsync-rename |
//! | [`queue_id`] | queue IDs: unique across processes and restarts, sortable by time, valid file names |
//! | [`queue_file`] | the queue file format: envelope records, content, per-recipient done marks |
//! | [`queue_scan`] | walking the queue directories and summarising queue files (`postqueue -p`, `-j`) |
//! | [`queue_select`] | selecting queued messages by sender, recipient, domain, queue, age, defer reason (postsuper, postqueue) |
//! | [`queue_spare`] | spare queue files: finished messages' files reused for new ones (no inode allocated or freed per message) |
//! | [`maillog`] | reading the mail log: a line's program, pid, queue ID and text; following a log across rotation |
//! | [`maildrop`] | the maildrop file format: sendmail → postdrop → `maildrop/` → pickup |
//! | [`ipc`] † | the framed, versioned, size-limited protocol between daemons over Unix sockets |
//! | [`queue_dirs`] | the layout of `queue_directory`: subdirectories, owners and modes; create, check, repair |
//! | [`accounts`] | `mail_owner` and the postdrop group: look-ups, and creating the system account when missing |
//! | [`address`] | RFC 5321 paths: parsing, domain normalisation, relay classification that `%`, `!`, source routes and quoted `@` cannot fool |
//! | [`aliases`] | `etc/aliases`: `name: target, target`, continuation lines, comments; lower-cased keys |
//! | [`anvil`] | per-client-address connection limits: the anvil daemon's client, the in-process fallback counter, the admission gate |
//! | [`users`] | `etc/users`: mailbox accounts (name, password hash, quota), rewritten atomically, mode 0600 |
//! | [`tls`] † | rustls server set-up (PEM cert and key) and a sans-I/O TLS session adapter for event-loop daemons |
//! | [`dsn`] | enhanced status codes (RFC 3463) typed: parsed and checked once, named, a string on the wire |
//! | [`headers`] | a message's header block: parsing, folding, editing, with bounded sizes |
//! | [`transport_map`] | lookup tables in plain files (transport_maps, virtual_alias_maps), reloaded when changed |
//! | [`version`] † | `--version`: one line, the same for every program |
//!
//! Failure classes follow Postfix: a bad environment (missing file, bad config, port in use)
//! is an error value that the program reports in one line and exits non-zero; a broken
//! invariant is a bug. Nothing here panics on input from a file or the network.
#![deny(unsafe_code)]

pub use postern_util::{
    date, hostname, inherited_fd, line, log, master_status, parallel, percent, privs, safe_open, strbuf, tls, version,
};

pub mod accounts;
pub mod address;
pub mod agent;
pub mod aliases;
pub mod anvil;
pub mod config;
pub mod director;
pub mod dsn;
pub mod headers;
pub mod ipc;
pub mod maildrop;
pub mod maillog;
pub mod master_control;
pub mod proto;
pub mod queue_dirs;
pub mod queue_file;
pub mod queue_id;
pub mod queue_scan;
pub mod queue_select;
pub mod queue_spare;
pub mod replica_id;
pub mod skeleton;
pub mod transport_map;
pub mod users;
