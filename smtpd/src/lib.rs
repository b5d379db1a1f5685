//! # smtpd — Postern's SMTP server
//!
//! Receives mail over SMTP (RFC 5321) with the ESMTP extensions PIPELINING (RFC 2920),
//! SIZE (RFC 1870), 8BITMIME (RFC 6152), ENHANCEDSTATUSCODES (RFC 2034/3463), SMTPUTF8
//! (RFC 6531), DSN (RFC 3461: NOTIFY, ORCPT, RET, ENVID are passed to cleanup), CHUNKING
//! (RFC 3030: BDAT), STARTTLS (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954, checked by the
//! auth daemon), and implicit TLS for the smtps service (RFC 8314). It applies the
//! restriction lists at each stage, validates local recipients, and streams each message
//! to cleanup, answering `250` only when cleanup says the queue file is on disk.
//!
//! Process model: an event-driven, many-connections-per-process daemon on
//! [`postern_lib::skeleton::event`]. The protocol ([`protocol`]) is sans-I/O; lib's
//! connection driver ([`postern_lib::skeleton::conn`]: socket, TLS, buffers, deadlines)
//! drives it, and [`server`] is the glue: the session's actions, its non-blocking
//! connections to cleanup and auth, the per-client connection limits.
//! [`stdio`] drives the same protocol over standard input and output for `sendmail -bs`.
//!
//! Security stance: every line, buffer and count is bounded (command lines
//! `smtpd_command_line_limit`, message `message_size_limit`, header `header_size_limit`,
//! recipients `smtpd_recipient_limit`, errors `smtpd_hard_error_limit`, non-mail commands
//! `smtpd_junk_command_limit`, output to a client that does not read its replies, data
//! queued for cleanup); input after STARTTLS that arrived in the clear is discarded
//! (CVE-2011-0411); relay is decided on normalised addresses that `%`, `!`, source routes
//! and quoted `@` cannot fool ([`postern_lib::address`]); AUTH is offered only under TLS
//! except on loopback; passwords go to auth only, in zeroized buffers. Nothing panics on
//! network input.
//!
//! Diagnostics: one log line per message as it begins, when cleanup has named its queue
//! ID (`QUEUEID: client=host[addr]`, with `sasl_method=..., sasl_username=...` when
//! authenticated, before cleanup's `message-id=` and qmgr's `from=` lines, as in
//! Postfix), per connection and disconnection, per failed AUTH, and per limit hit
//! (`NOQUEUE: reject: MAIL from ...: 452 4.3.1 Insufficient system storage`).
//!
//! Settings read (main.toml, overridable per service with master.toml `options`):
//! `myhostname`, `mynetworks`, `mydestination`, `relay_domains`, `message_size_limit`,
//! `header_size_limit`, `smtpd_banner`, `smtpd_tls_cert_file`, `smtpd_tls_key_file`,
//! `smtpd_tls_security_level`, `smtpd_tls_wrappermode`, `smtpd_tls_auth_only`,
//! `smtpd_sasl_auth_enable`, `smtpd_timeout`, `smtpd_data_timeout`,
//! `smtpd_recipient_limit`, `smtpd_hard_error_limit`, `smtpd_junk_command_limit`,
//! `smtpd_command_line_limit`, `smtpd_client_connection_count_limit`,
//! `smtpd_client_connection_rate_limit` (both counted over all smtpd processes by the
//! anvil daemon, per process while anvil is away), `smtpd_forbid_bare_newline`, `smtpd_reject_unlisted_recipient`,
//! `smtpd_{client,helo,sender,relay,recipient,data,end_of_data}_restrictions`,
//! `alias_maps`, `queue_minfree` ([`space`]).
#![forbid(unsafe_code)]

pub mod server;

pub use smtpd_engine::{fuzz_command, fuzz_session, protocol, settings, space, stdio};
