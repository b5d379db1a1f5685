//! # imapd — Postern's IMAP server
//!
//! IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051, after `ENABLE IMAP4rev2`) on the Maildir
//! store of `postern_mailbox`, with LITERAL+ (RFC 7888), SASL-IR, IDLE (RFC 2177),
//! NAMESPACE, ID, ENABLE, UNSELECT, UIDPLUS (RFC 4315), MOVE (RFC 6851), SPECIAL-USE
//! (RFC 6154), CHILDREN, LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), ESEARCH
//! (RFC 4731), MULTIAPPEND (RFC 3502), BINARY (RFC 3516: FETCH, and
//! APPEND of literal8s, whose binary parts are kept base64-encoded), STATUS=SIZE, SORT and
//! SORT=DISPLAY (RFC 5256, 5957: [`sort`], [`base_subject`], [`collate`]),
//! THREAD=ORDEREDSUBJECT/REFERENCES ([`thread`]), ESORT (RFC 5267), SEARCHRES
//! (RFC 5182: [`esearch`]) and CONDSTORE (RFC 7162 §3.1: MODSEQ from the store's index;
//! `SELECT (CONDSTORE)`, FETCH `MODSEQ` and `(CHANGEDSINCE)`, STORE `(UNCHANGEDSINCE)`,
//! SEARCH `MODSEQ`, STATUS `HIGHESTMODSEQ`), QRESYNC (§3.2: [`qresync`]) and OBJECTID
//! (RFC 8474: [`objectid`]), SAVEDATE (RFC 8514), PREVIEW (RFC 8970: [`preview`]),
//! CREATE-SPECIAL-USE (RFC 6154), REPLACE (RFC 8508: [`cmd_replace`]), QUOTA and
//! QUOTA=RES-STORAGE (RFC 9208: [`quota`]), UIDONLY (RFC 9586: [`uidonly`]),
//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267: [`context`]), CATENATE (RFC 4469:
//! [`catenate`]), URLAUTH and URLAUTH=BINARY (RFC 4467, 5524:
//! [`urlauth`]), a subset of NOTIFY (RFC 5465:
//! [`notify`]) and COMPRESS=DEFLATE (RFC 4978: [`cmd_compress`], the driver's deflate
//! layer). Event-driven: many sessions per
//! process on the skeleton's mio loop; protocol code is sans-I/O ([`session`]). Several
//! sessions on one mailbox, in one process or many, see each other's changes through the
//! Maildir itself.
//!
//! TLS: STARTTLS when `imapd_tls_cert_file` is set; implicit TLS (the `imaps` service)
//! when started with the argument `tls`.
//!
//! Security: passwords are checked by the auth daemon only; cleartext LOGIN and
//! AUTHENTICATE PLAIN are accepted over TLS or from loopback clients only (others see
//! LOGINDISABLED). Input pipelined after STARTTLS is discarded. Every line, literal and
//! per-user session count is bounded. After login, no command can hold the process (and
//! so the other sessions on it) for long or multiply memory: LIST patterns are at most 64
//! of 1024 bytes in all, matched in linear time ([`list_pattern`]); a message is split
//! into at most 10,000 MIME parts ([`mime::MAX_TOTAL_PARTS`]); one message's FETCH
//! response holds at most 4 times its size ([`cmd_fetch::MAX_PER_MESSAGE`]); sequence sets
//! are searched, not scanned; APPEND and COPY past the user's quota (`etc/users`) are
//! `NO [OVERQUOTA]`; folder names of the store's own files are `NO [CANNOT]`.
//!
//! Settings read: `virtual_mailbox_base`, `myhostname`, `imapd_tls_cert_file`,
//! `imapd_tls_key_file`, `imapd_max_literal`, `imapd_max_line_length`,
//! `imapd_literal_memory_limit` (literals held by all sessions of a process),
//! `imapd_user_connection_limit`, `imapd_timeout`, `imapd_login_timeout` (a hard
//! deadline from connecting), `login_client_connection_count_limit` (counted by anvil),
//! `imapd_transcript_users` and `imapd_transcript_directory` ([`transcript`]).
//!
//! Diagnostics: `connect from ADDR`, `login: user=NAME`, `login failed: REASON`,
//! `disconnect from ADDR, user=NAME`, `transcript: user=NAME file=PATH`, warnings for
//! file-system errors in a mailbox.
//!
//! Files: [`session`] (framing, state, dispatch, ENABLE), [`updates`] (untagged updates), [`cmd_mailbox`]
//! (SELECT, STATUS, CREATE/DELETE/RENAME, APPEND), [`cmd_list`] (LIST, LSUB),
//! [`list_pattern`] (LIST patterns, matched in bounded time), [`address`] (address fields
//! for ENVELOPE and SEARCH),
//! [`binary`] (BINARY fetch items), [`cmd_message`] (STORE, COPY,
//! MOVE, EXPUNGE), [`cmd_fetch`], [`cmd_search`], [`mime`] (ENVELOPE, BODYSTRUCTURE,
//! sections), [`parse`] (command grammar, sequence sets, dates), [`reply`] (string
//! quoting), [`server`] (the event loop side: sockets, TLS, auth, timeouts).
#![forbid(unsafe_code)]

pub mod address;
pub mod append_spool;
pub mod base_subject;
pub mod binary;
mod casemap_data;
pub mod catenate;
pub mod cmd_compress;
pub mod cmd_fetch;
pub mod cmd_list;
pub mod cmd_mailbox;
pub mod cmd_message;
pub mod cmd_replace;
pub mod cmd_search;
pub mod collate;
pub mod conn;
pub mod context;
pub mod esearch;
pub mod fuzz;
pub mod imap_url;
pub mod list_pattern;
pub mod literal_budget;
pub mod mime;
pub mod notify;
pub mod objectid;
pub mod parse;
pub mod preview;
pub mod qresync;
pub mod quota;
pub mod reply;
pub mod server;
pub mod session;
pub mod sort;
pub mod sort_cache;
#[cfg(test)]
mod tests;
pub mod thread;
pub mod transcript;
pub mod uidonly;
pub mod updates;
pub mod urlauth;

/// For fuzzing: runs the command parser, then a whole session (no mailbox: the commands
/// that need one are refused) on arbitrary bytes; must never panic.
pub fn fuzz_input(data: &[u8]) {
    let _ = parse::command(data);
    let settings = session::Settings {
        mail_base: std::path::PathBuf::from("/nonexistent"),
        max_literal: 4096,
        max_line: 1024,
        hostname: "fuzz.example.test".into(),
        starttls: true,
    };
    let mut s = session::Session::new(settings, true, false);
    let _ = s.input(data);
    let _ = s.take_output();
}
