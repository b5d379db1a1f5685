//! # smtpd-engine — smtpd's SMTP protocol without the daemon
//!
//! The sans-I/O ESMTP session ([`protocol`]: bytes in, actions out, split by verb), the
//! settings it runs with ([`settings`], loaded and checked from `main.toml` and a
//! service's options), the queue free-space check of MAIL ([`space`]) and the blocking
//! session on standard input and output ([`stdio`]). Three programs use it: the smtpd
//! daemon (which adds the event loop, TLS, cleanup and auth connections and the
//! per-client limits), `sendmail -bs` (through [`stdio`]) and `postern check` (which
//! loads every smtpd service's [`settings::Settings`] as smtpd does) — the latter two
//! without linking the daemon.
//!
//! Security stance: see the smtpd crate; everything here is bounded and total on any
//! input (a property test and the fuzz targets [`fuzz_command`] and [`fuzz_session`]
//! drive it with arbitrary bytes).
#![forbid(unsafe_code)]

pub mod protocol;
pub mod settings;
pub mod space;
pub mod stdio;

pub use protocol::command::fuzz_command;
pub use protocol::fuzz_session;
