//! # postern-util — Postern's generic primitives (Postfix's `util/`)
//!
//! Nothing in this crate knows about mail: no configuration file, no queue, no address.
//! It is what any Unix daemon that faces hostile input needs, written once; `postern-lib`
//! (Postfix's `global/`: configuration, queue files, addresses, the typed protocols and the
//! daemon skeleton) builds on it and re-exports every module here under its old path
//! (`postern_lib::line`, `postern_lib::skeleton::conn`, ...).
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`line`] | bounded line reader/writer (CRLF and bare LF, a hard maximum with a distinct "too long") |
//! | [`strbuf`] | bounded string buffers |
//! | [`safe_open`] | opening files without following symlinks, with owner/link-count/type checks; atomic write-fsync-rename |
//! | [`privs`] | dropping to an unprivileged account: groups, uid/gid, Linux capabilities |
//! | [`inherited_fd`] | the one module with `unsafe`: descriptors across exec — adopting master's (close-on-exec), only stdio for started programs, master's clean start |
//! | [`log`] | `tracing` set-up and the Postfix-style one-line-per-event format, to a file, stderr or syslog |
//! | [`date`] | RFC 5322 dates for headers and reports, syslog stamps for logs (UTC) |
//! | [`hostname`] | the machine's host name |
//! | [`master_status`] | the tiny protocol a child uses to tell master it is busy or available, and master's environment |
//! | [`tls`] | rustls server set-up (PEM cert and key) and a sans-I/O TLS session adapter for event-loop daemons |
//! | [`ipc`] | the framed, versioned, size-limited transport between daemons over Unix sockets; the non-blocking codec and one-request client |
//! | [`conn`] | the connection driver: a sans-I/O `Protocol` core, a `Connection` owning socket, TLS, bounded buffers and deadlines, and a `Pool` per process |
//! | [`parallel`] | a bounded fan-out of work over threads |
//! | [`percent`] | `%XX` decoding |
//! | [`version`] | `--version`: one line, the same for every program |
//!
//! Nothing here panics on input from a file or the network.
#![deny(unsafe_code)]

pub mod conn;
pub mod date;
pub mod hostname;
pub mod inherited_fd;
pub mod ipc;
pub mod line;
pub mod log;
pub mod master_status;
pub mod parallel;
pub mod percent;
pub mod privs;
pub mod safe_open;
pub mod strbuf;
pub mod tls;
pub mod version;
