//! # proxy — the POP3 and IMAP proxy of a replicated mailbox pair (issue 15)
//!
//! Runs on every mailbox server beside pop3d and imapd (`proxy pop3` on port 1100,
//! `proxy imap` on 1143 in the test network) and is found by round-robin DNS. To
//! the client it is a POP3 or IMAP server; to the mailbox servers a client:
//!
//! 1. It takes the client's login itself (POP3 USER/PASS or AUTH PLAIN, IMAP LOGIN or
//!    AUTHENTICATE PLAIN; STLS/STARTTLS first when a certificate is configured and the
//!    client is not in `proxy_secure_networks`) and checks it once, through `auth`, with
//!    lib's non-blocking auth client.
//! 2. It asks the local replicator (`private/replicator`,
//!    [`postern_lib::proto::replica`]) to sync the user with every reachable replica,
//!    and waits for the answer (at most twice `replica_timeout` plus 5 s; logged either
//!    way) **before** it opens a backend session: a backend fixes what it serves at its
//!    login (pop3d's snapshot of the maildrop), so a replica that was down serves
//!    nothing stale. Without a replicator socket (a single server) this is skipped,
//!    logged once per process.
//! 3. It connects to the first reachable backend of `proxy_pop3_backends` /
//!    `proxy_imap_backends` (the local server first; `proxy_connect_timeout` each) and
//!    logs in there as `USER*MASTER` with the master user's own password
//!    (`proxy_master_user`, `proxy_master_password_file`; the backends' auth accepts it
//!    from `auth_master_users_file`). **The client's password never leaves this host's
//!    auth**; the master password is read before privileges drop, never logged, and
//!    wiped from buffers once sent. A backend that refuses or fails the login: the next
//!    one (the sync already covered every replica); none left: `-ERR [SYS/TEMP]` /
//!    `NO [UNAVAILABLE]`, and the client may log in again.
//! 4. Then it relays every command, byte for byte (IMAP literals, synchronising and
//!    LITERAL+, IDLE; POP3 multi-line answers), and when the backend answers OK to a
//!    command that changed the mailbox (IMAP STORE, COPY, MOVE, EXPUNGE, APPEND, CREATE,
//!    RENAME, DELETE, SUBSCRIBE, UNSUBSCRIBE, CLOSE, the UID forms, a FETCH that sets
//!    `\Seen`; POP3 the `+OK` to QUIT after DELE, which commits the deletions) it holds
//!    that answer, and everything after it, until the replicator has synced the user:
//!    when the client sees OK, the change is on every reachable replica. A peer that
//!    could not be reached is logged and the OK still goes out (the replicator's sweep
//!    brings the peer in step before it serves again).
//!
//! ## More than one pair: the director (issue 16)
//! With `director_pairs` set, step 3 goes to the user's pair
//! ([`postern_lib::director`]: consistent hashing of the user name over the pair names,
//! exceptions in `director_user_map`): a user of this host's pair (`director_pair`) to
//! `proxy_*_backends` with the sync as above; any other user to that pair's `imap=` /
//! `pop3=` addresses, without a local sync (that pair's proxies sync it). A table entry
//! naming an unknown pair: `NO [UNAVAILABLE]` / `-ERR [SYS/TEMP]`. On every tick a
//! session between commands whose user the director now places on another pair
//! (`postern user move` switched it) is closed with the shutdown words and logged
//! `proxy: user=U moved from pair A to B`; the client reconnects to the new pair.
//!
//! ## Departure from the issue text
//! The proxy "applies each command that changes the mailbox to all of them".
//! Replaying commands on two servers makes them assign different UIDs (and UIDLs)
//! whenever a delivery interleaves, and a replica that missed a command stays wrong. So
//! the change is made on **one** backend and the resulting *state* is merged into every
//! reachable replica (by message GUID, by the replicator) before the client gets OK. The
//! same merge brings a replica that was down in step and merges the hubs' deliveries;
//! UIDs, UIDVALIDITY and UIDLs stay the same on every replica, so a client that fails
//! over to the proxy on the other server does not resynchronise.
//!
//! A site that wants its own proxy: log in to a backend as `USER*MASTER` (or SASL PLAIN
//! with authzid USER, authcid MASTER), and after each changing command's OK send
//! `{"type":"sync","user":USER}` on `private/replicator` and wait for the reply.
//!
//! ## Limits
//! - Client command lines: 2048 bytes (POP3), `imapd_max_line_length` (IMAP); 8 KB
//!   lines and literals before login. Longer: `-ERR`/`* BYE` and the connection closes.
//! - IMAP literals: at most `imapd_max_literal`; larger: `BAD [TOOBIG]` (synchronising,
//!   not sent on) or `* BYE [TOOBIG]` (LITERAL+).
//! - Buffers per connection: [`conn::MAX_TO_BACKEND`] towards the backend (the client
//!   is not read while it is full), [`conn::OUTPUT_HIGH_WATER`] towards the client (the
//!   backend is not read meanwhile), [`conn::MAX_FROM_BACKEND`] read ahead; backend
//!   response lines at most 1 MB (IMAP) / 4 KB (POP3 status lines); anything else from
//!   a backend that is not the protocol ends the session with a clear error.
//! - A backend that owes an answer and is silent for `proxy_backend_timeout` (an
//!   accepted IDLE is not owing): the client gets `* BYE [UNAVAILABLE]` / `-ERR
//!   [SYS/TEMP]` and is disconnected; during the login the next backend is tried.
//! - Connections not yet logged in: `login_client_connection_count_limit` per address
//!   (anvil), login deadline `imapd_login_timeout` / `pop3d_login_timeout`, idle
//!   deadline `imapd_timeout` / `pop3d_timeout`; the process's connection limit is the
//!   skeleton's.
//! - Not proxied: implicit TLS (pops/imaps) on the proxy ports; TLS towards the
//!   backends (they are on the internal network); SASL mechanisms other than PLAIN;
//!   COMPRESS (a client's COMPRESS is refused by the backend in order, and COMPRESS=... is
//!   taken out of the backend's capability lists).
//!
//! ## Settings read
//! `proxy_pop3_backends`, `proxy_imap_backends`, `director_pairs`, `director_pair`,
//! `director_user_map`, `director_vnodes`, `proxy_master_user`,
//! `proxy_master_password_file`, `proxy_connect_timeout`, `proxy_backend_timeout`,
//! `proxy_secure_networks`, `auth_master_user_separator`, `replica_timeout`,
//! `pop3d_tls_*`/`imapd_tls_*` (the certificate), `pop3d_timeout`, `imapd_timeout`, the
//! login timeouts, `imapd_max_line_length`, `imapd_max_literal`,
//! `login_client_connection_count_limit`.
//!
//! ## Diagnostics
//! `proxy: login: user=U, client=ADDR, backend=HOST:PORT, tls=BOOL`; `proxy: backend B:
//! connect: ...` / `master login refused: ...` (then the next backend); `proxy: backend B
//! lost: ...`; `proxy: backend B did not answer in Ns`; `proxy: synced U before the login
//! in N ms with [PEERS]`; `proxy: sync of U before the login|after a change: peer P not
//! in step: REASON` (or `: no answer in Ns`, `failed after N ms: REASON`); `proxy: no
//! replicator (...)` once.
#![forbid(unsafe_code)]

pub mod backend;
pub mod conn;
pub mod dialect;
pub mod imap;
pub mod pop3;
pub mod service;
pub mod settings;
