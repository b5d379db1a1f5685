//! # pop3d — the Postern POP3 server (library: the protocol core and its connection side)
//!
//! RFC 1939 (USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP, UIDL), RFC 2449
//! CAPA with RESP-CODES, PIPELINING and AUTH-RESP-CODE (RFC 3206: `[IN-USE]`, `[AUTH]`,
//! `[SYS/TEMP]`), RFC 5034 AUTH PLAIN, RFC 2595 STLS, RFC 6856 UTF8 (`UTF8 USER`), and
//! implicit TLS when started with the argument `tls` (the `pop3s` service). Event-driven:
//! one process holds many sessions on lib's connection driver
//! ([`postern_lib::skeleton::conn`]); the protocol core ([`session`]) is sans-I/O.
//!
//! Security stance: passwords go only to auth (`private/auth`), asked from the event
//! loop without blocking; cleartext passwords are accepted only over TLS, from
//! `pop3d_secure_networks` (loopback by default, as Dovecot treats it) or with
//! `pop3d_allow_plaintext = true` — otherwise `-ERR [AUTH] Plaintext authentication
//! disallowed ...`. Command lines are limited to [`session::MAX_LINE`] (longer: `-ERR`
//! and the connection closes); pipelined commands after STLS are discarded. One session
//! per mailbox ([`maildrop`], `-ERR [IN-USE]`); DELE takes effect only at QUIT.
//!
//! Sessions that have not logged in are closed `pop3d_login_timeout` after they connected,
//! whatever they send meanwhile; others after `pop3d_timeout` idle (`-ERR Autologout`).
//! RETR and TOP are streamed from the message file as the client reads ([`retrieve`]), and
//! commands stop being read while [`conn::OUTPUT_HIGH_WATER`] of output is unsent, so a
//! connection holds about 256 KB of output plus a 64 KB chunk whatever the message sizes
//! (a LIST or UIDL answer, one line per message, comes whole).
//! Before login output held per connection is bounded ([`conn::PRELOGIN_HIGH_WATER`]),
//! and unauthenticated connections per client address are capped
//! (`login_client_connection_count_limit`, counted by anvil).
//!
//! Settings read: `virtual_mailbox_base`, `pop3d_tls_cert_file`, `pop3d_tls_key_file`,
//! `pop3d_allow_plaintext`, `pop3d_secure_networks`, `pop3d_timeout`, and the skeleton's.
//!
//! Diagnostics: `login: user=U, client=ADDR, tls=BOOL`, `logout: user=U, deleted=N`,
//! `authentication failed: user=U, client=ADDR` (auth logs the reason).
#![forbid(unsafe_code)]

pub mod authorization;
pub mod conn;
pub mod fuzz;
pub mod maildrop;
pub mod retrieve;
pub mod service;
pub mod session;
pub mod transaction;
