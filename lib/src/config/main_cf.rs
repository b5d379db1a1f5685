//! The settings of `main.toml`, with Postfix's names where Postfix has one.
//!
//! Every setting is declared here once, in the [`settings!`] table: its doc, name, type,
//! default, the programs that read it, and its bounds or check. The macro makes the
//! [`MainConfig`] struct, its `Default`, the per-setting validation and [`SETTINGS`], the
//! list `postern config --doc` prints. A daemon reads the fields it needs from the
//! [`MainConfig`] that the skeleton hands it (with the service's `options` overrides from
//! `master.toml` already applied).
//!
//! String values may refer to other string settings as `$name` or `${name}`, as in
//! main.cf (`myorigin = "$myhostname"`); see [`super::expand`]. Relative paths resolve by
//! the one rule of [`super::paths`].

use super::cidr::Cidr;
use super::duration::Seconds;
use super::paths::ConfigPath;
use super::registry::settings;
use super::values::{BareNewline, MailboxFormat, MilterAction, MirrorUnreachable, SmtpTlsLevel, SmtpdTlsLevel};

settings! {
    /// The fully-qualified name of this host (default: the system's host name).
    myhostname: String = String::new(),
        readers "bounce smtpd cleanup trivial-rewrite imapd", check fqdn;
    /// The domain of this host (default: `myhostname` without its first label).
    mydomain: String = String::new(),
        readers "(through $mydomain)";
    /// The domain that locally-posted mail appears to come from.
    myorigin: String = "$myhostname".into(),
        readers "bounce cleanup trivial-rewrite local";
    /// Domains this host delivers locally.
    mydestination: Vec<String> = vec!["$myhostname".into(), "localhost.$mydomain".into(), "localhost".into()],
        readers "smtpd postern trivial-rewrite local";
    /// Client networks trusted to relay (`permit_mynetworks`).
    mynetworks: Vec<Cidr> = vec![
        Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
        Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
    ],
        readers "smtpd";
    /// Other domains this host relays to (besides mydestination).
    relay_domains: Vec<String> = Vec::new(),
        readers "smtpd postern trivial-rewrite local";
    /// Send all non-local mail to this host (`[host]:port` skips MX lookup); empty: direct.
    relayhost: String = String::new(),
        readers "trivial-rewrite";
    /// Largest message accepted, in bytes (envelope and headers included).
    message_size_limit: u64 = 10_240_000,
        readers "smtpd postern postdrop pickup cleanup", min 1024, serde(deserialize_with = "super::size::bytes");
    /// cleanup: message content all connections of one cleanup process may hold in memory
    /// at once (each connection is a thread); a message that does not fit is read to its
    /// end and refused with `451 4.3.2`, so the client sends it again later. Must be at
    /// least `message_size_limit`.
    cleanup_content_memory_limit: u64 = 256 * 1024 * 1024,
        readers "cleanup", serde(deserialize_with = "super::size::bytes");
    /// The queue: maildrop/ incoming/ active/ deferred/ hold/ corrupt/ and sockets.
    queue_directory: ConfigPath = "/var/spool/postern".into(),
        readers "master postern postdrop postqueue postsuper metrics skeleton (every daemon)", check not_empty, path Root;
    /// Where daemon programs live; empty: the directory of the running executable.
    daemon_directory: ConfigPath = ConfigPath::default(),
        readers "postern sendmail", path Root;
    /// The unprivileged account that daemons run as when master starts as root.
    mail_owner: String = "postern".into(),
        readers "master postern postsuper local", check unprivileged;
    /// Log file; `"syslog"` sends to the local syslog (mail facility); `"-"` to stderr.
    maillog_file: ConfigPath = "syslog".into(),
        readers "master postern postsuper metrics skeleton (every daemon)", path Root;
    /// The first part of every daemon's program name in the log (`postern/smtpd`); a
    /// service may set its own (`postern/submission`), as with Postfix's syslog_name.
    syslog_name: String = "postern".into(),
        readers "skeleton (every daemon)";
    /// The base directory of virtual mailboxes: one Maildir per user below it.
    virtual_mailbox_base: ConfigPath = "/var/mail/postern".into(),
        readers "master postern pop3d local imapd", path Root;
    /// How long a message may stay queued before it is bounced.
    maximal_queue_lifetime: Seconds = Seconds(5 * 86400),
        readers "qmgr";
    /// Default `maxproc` of a service.
    default_process_limit: u32 = 100,
        readers "master qmgr", min 1;
    /// Default `max_use` of a service: requests a child serves before it exits.
    max_use: u32 = 100,
        readers "master postern skeleton (every daemon)", min 1;
    /// Default `max_idle` of a service: how long an idle child waits before it exits.
    max_idle: Seconds = Seconds(100),
        readers "master postern skeleton (every daemon)", min Seconds(1);
    /// Default per-process connection limit of multi-connection daemons.
    default_connection_limit: u32 = 200,
        readers "skeleton (every daemon)", min 1;
    /// How long master waits before it starts a child again after one failed at start-up.
    service_throttle_time: Seconds = Seconds(60),
        readers "master";
    /// How long `postern stop` lets children finish their current work before killing them.
    shutdown_timeout: Seconds = Seconds(10),
        readers "master postern";
    // --- auth, pop3d ---
    /// auth: also verify system accounts from /etc/shadow (only when master runs as root).
    auth_system_users: bool = false,
        readers "auth";
    /// auth: how long a client address's failed logins are remembered after its last one
    /// (Dovecot keeps its auth penalty an hour).
    auth_failure_window: Seconds = Seconds(3600),
        readers "auth";
    /// auth: how long a failed login waits before it is answered (Dovecot's name and default).
    auth_failure_delay: Seconds = Seconds(2),
        readers "auth";
    /// auth: the longest penalty: after failures from a client address, its next logins
    /// wait 2 s, doubling with each failure up to this (Dovecot's auth penalty: 15 s); a
    /// success from the address ends it. A right password is never refused.
    auth_penalty_max: Seconds = Seconds(15),
        readers "auth";
    /// auth: threads that verify password hashes, so the event loop never stalls.
    auth_worker_threads: u32 = 2,
        readers "auth", min 1, max 64;
    /// auth: master users (Dovecot's master passdb), in the format of `etc/users`; a login
    /// `USER*MASTER` (see `auth_master_user_separator`) or SASL PLAIN with authorization
    /// identity USER and authentication identity MASTER, with MASTER's password, logs in
    /// as USER (which must exist). Empty: no master users.
    auth_master_users_file: ConfigPath = ConfigPath::default(),
        readers "auth", path Config;
    /// auth: what separates the user from the master user in a master login
    /// (Dovecot's `auth_master_user_separator`).
    auth_master_user_separator: String = "*".into(),
        readers "auth", check master_separator;
    /// pop3d: the certificate chain (PEM) for STLS and pop3s; empty: no TLS.
    pop3d_tls_cert_file: ConfigPath = ConfigPath::default(),
        readers "pop3d", path Config;
    /// pop3d: the private key (PEM) of `pop3d_tls_cert_file`.
    pop3d_tls_key_file: ConfigPath = ConfigPath::default(),
        readers "pop3d", path Config;
    /// pop3d: accept cleartext passwords (USER/PASS, AUTH PLAIN) without TLS from any client.
    pop3d_allow_plaintext: bool = false,
        readers "pop3d";
    /// pop3d: clients whose cleartext passwords are accepted without TLS (Dovecot's login_trusted_networks).
    pop3d_secure_networks: Vec<Cidr> = vec![
        Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
        Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
    ],
        readers "pop3d";
    /// pop3d: idle time before a session is closed (RFC 1939: at least 10 minutes).
    pop3d_timeout: Seconds = Seconds(600),
        readers "pop3d", min Seconds(10);
    /// pop3d: the time from connecting to a login, whatever the client sends meanwhile
    /// (Dovecot's login timeout); then `-ERR` and the connection closes.
    pop3d_login_timeout: Seconds = Seconds(60),
        readers "pop3d", min Seconds(1);
    // --- cleanup ---
    /// cleanup: header_checks table (Postfix regexp format; relative to the config dir); empty: none.
    header_checks: String = String::new(),
        readers "postern cleanup";
    /// cleanup: body_checks table (Postfix regexp format; relative to the config dir); empty: none.
    body_checks: String = String::new(),
        readers "postern cleanup";
    /// Milters for mail received by smtpd (`unix:/path` or `inet:host:port`), run in order.
    smtpd_milters: Vec<String> = Vec::new(),
        readers "cleanup";
    /// Milters for locally submitted mail (sendmail/pickup), run in order.
    non_smtpd_milters: Vec<String> = Vec::new(),
        readers "cleanup";
    /// What to do when a milter is unreachable, times out or misbehaves: accept, reject, tempfail, quarantine.
    milter_default_action: MilterAction = MilterAction::Tempfail,
        readers "cleanup";
    /// Time limit for connecting to a milter and negotiating with it.
    milter_connect_timeout: Seconds = Seconds(30),
        readers "cleanup", min Seconds(1);
    /// Time limit for a milter's answer to one command (connect, helo, mail, rcpt, header).
    milter_command_timeout: Seconds = Seconds(30),
        readers "cleanup", min Seconds(1);
    /// Time limit for a milter's answer to body chunks and end of message.
    milter_content_timeout: Seconds = Seconds(300),
        readers "cleanup", min Seconds(1);
    // --- smtpd ---
    /// smtpd: bytes that must stay free on the queue file system; MAIL is refused with
    /// `452 4.3.1` below this or below 1.5 × `message_size_limit`, as in Postfix.
    queue_minfree: u64 = 0,
        readers "smtpd", serde(deserialize_with = "super::size::bytes");
    /// smtpd: the text after `220` in the greeting.
    smtpd_banner: String = "$myhostname ESMTP Postern".into(),
        readers "smtpd";
    /// smtpd: TLS certificate chain (PEM; relative to the config dir); empty: no STARTTLS.
    smtpd_tls_cert_file: ConfigPath = ConfigPath::default(),
        readers "smtpd", path Config;
    /// smtpd: the private key (PEM) of `smtpd_tls_cert_file`.
    smtpd_tls_key_file: ConfigPath = ConfigPath::default(),
        readers "smtpd", path Config;
    /// smtpd: `none` (no STARTTLS), `may` (offer it), `encrypt` (require it before MAIL and AUTH).
    smtpd_tls_security_level: SmtpdTlsLevel = SmtpdTlsLevel::May,
        readers "smtpd";
    /// smtpd: implicit TLS from the first byte (the smtps service, port 465).
    smtpd_tls_wrappermode: bool = false,
        readers "smtpd";
    /// smtpd: offer AUTH only under TLS (loopback clients excepted).
    smtpd_tls_auth_only: bool = true,
        readers "smtpd";
    /// smtpd: offer AUTH PLAIN and LOGIN (checked by the auth daemon).
    smtpd_sasl_auth_enable: bool = false,
        readers "smtpd";
    /// smtpd: how long to wait for a client's next command (or next bytes).
    smtpd_timeout: Seconds = Seconds(300),
        readers "smtpd", min Seconds(1);
    /// smtpd: the longest a whole DATA or BDAT transfer may take.
    smtpd_data_timeout: Seconds = Seconds(600),
        readers "smtpd", min Seconds(1);
    /// smtpd: recipients per message.
    smtpd_recipient_limit: u32 = 1000,
        readers "smtpd", min 1;
    /// smtpd: errors in one session before it is closed with 421.
    smtpd_hard_error_limit: u32 = 20,
        readers "smtpd", min 1;
    /// smtpd: commands other than mail transactions (NOOP, VRFY, HELP, RSET, EHLO) in one session.
    smtpd_junk_command_limit: u32 = 100,
        readers "smtpd";
    /// smtpd: longest command line, in bytes.
    smtpd_command_line_limit: u32 = 2048,
        readers "smtpd", min 512, max 65536;
    /// smtpd: largest message header, in bytes.
    header_size_limit: u64 = 102_400,
        readers "smtpd cleanup", serde(deserialize_with = "super::size::bytes");
    /// smtpd: connections at once from one client address (over all smtpd processes, counted by anvil; `421 4.7.0` past it); 0: no limit.
    smtpd_client_connection_count_limit: u32 = 50,
        readers "smtpd";
    /// smtpd: connections per `anvil_rate_time_unit` from one client address (over all smtpd processes, counted by anvil; `421 4.7.0` past it); 0: no limit.
    smtpd_client_connection_rate_limit: u32 = 0,
        readers "smtpd";
    /// smtpd: clients whose connections are not counted against the connection count and
    /// rate limits (Postfix's name): networks, and the word `mynetworks` for the networks of
    /// `mynetworks` (Postfix's default `$mynetworks`, the default here too); `[]`: none.
    smtpd_client_event_limit_exceptions: Vec<String> = vec!["mynetworks".into()],
        readers "smtpd", check networks_or_mynetworks;
    /// anvil: the window over which connection rates are counted.
    anvil_rate_time_unit: Seconds = Seconds(60),
        readers "anvil", min Seconds(1);
    /// smtpd: bare LF in DATA: `normalize` (treat as CRLF; only CRLF.CRLF ends the data) or `reject`.
    smtpd_forbid_bare_newline: BareNewline = BareNewline::Normalize,
        readers "smtpd";
    /// smtpd: refuse recipients in mydestination that are neither a user (asked of auth) nor an
    /// alias (550 5.1.1), after the restrictions.
    smtpd_reject_unlisted_recipient: bool = true,
        readers "smtpd";
    /// smtpd: restrictions when a client connects.
    smtpd_client_restrictions: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: restrictions at HELO/EHLO.
    smtpd_helo_restrictions: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: restrictions at MAIL FROM.
    smtpd_sender_restrictions: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: relay control at RCPT TO (evaluated before smtpd_recipient_restrictions).
    smtpd_relay_restrictions: Vec<String> = vec![
                    "permit_mynetworks".into(),
                    "permit_sasl_authenticated".into(),
                    "reject_unauth_destination".into(),
    ],
        readers "smtpd";
    /// smtpd: restrictions at RCPT TO.
    smtpd_recipient_restrictions: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: restrictions at DATA/BDAT.
    smtpd_data_restrictions: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: restrictions at the end of the message.
    smtpd_end_of_data_restrictions: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: tables of envelope sender → the SASL login names that own it (Postfix's
    /// table syntax; `regexp:FILE` for a Postfix regexp table), for the
    /// `reject_*sender_login_mismatch` rules. Relative to the config dir; a table file that
    /// does not exist owns nothing.
    smtpd_sender_login_maps: Vec<String> = Vec::new(),
        readers "smtpd";
    /// smtpd: alias tables for recipient validation (relative to the config dir).
    alias_maps: Vec<String> = vec!["aliases".into()],
        readers "smtpd postern sendmail local";
    // --- qmgr, trivial-rewrite, local ---
    /// trivial-rewrite, local: separator between a user name and an address extension (`user+ext`); empty: none.
    recipient_delimiter: String = String::new(),
        readers "smtpd trivial-rewrite local";
    /// trivial-rewrite: virtual alias tables (`address  target, ...`; relative to the config dir).
    virtual_alias_maps: Vec<String> = Vec::new(),
        readers "postern trivial-rewrite";
    /// trivial-rewrite: transport tables (`domain  transport:nexthop`; relative to the config dir).
    transport_maps: Vec<String> = Vec::new(),
        readers "postern trivial-rewrite";
    // --- replicated mailboxes (issue 15) ---
    /// cleanup, qmgr (hub): domains whose mail this hub copies to every mailbox server of
    /// `replica_relays`: a recipient in one of them is queued once per relay (each copy
    /// its own delivery and done mark), and the message gets one `X-Postern-GUID` header
    /// (any it carried is removed). Empty: no replication. (smtpd accepts their mail when
    /// they are also in relay_domains.)
    replica_domains: Vec<String> = Vec::new(),
        readers "cleanup postern", check super::replica::domains;
    /// cleanup (hub): the mailbox servers each replica-domain recipient is copied to,
    /// written like transport_maps values (`"smtp:[198.18.0.31]:25"`); at least two when
    /// replica_domains is set.
    replica_relays: Vec<String> = Vec::new(),
        readers "cleanup postern", check super::replica::relays;
    /// cleanup (mailbox server): client networks (the hubs) whose `X-Postern-GUID` header is
    /// kept; from any other client, and from local submissions, cleanup removes it.
    replica_hub_networks: Vec<Cidr> = Vec::new(),
        readers "cleanup";
    /// replicator (mailbox server): the other mailbox servers' replicators (`host:port` of
    /// their `replicator` inet service) this one keeps every mailbox in step with. Empty:
    /// replication off (a `Sync` request answers at once).
    replica_peers: Vec<String> = Vec::new(),
        readers "replicator postern", check host_ports;
    /// replicator: this server's name among the replicas (peers key their sync state by
    /// it, so it must differ on every replica and stay the same across restarts).
    replica_name: String = "$myhostname".into(),
        readers "replicator postern";
    /// replicator: the secret shared by all replicas (the same file on each, mode 0600,
    /// readable by root; read before privileges are dropped). Peers prove they know it
    /// with an HMAC-SHA256 challenge and response in both directions; it never crosses
    /// the network. Required when replica_peers is set.
    replica_secret_file: ConfigPath = ConfigPath::default(),
        readers "replicator", path Config;
    /// replicator: how often the background sweep merges the users changed since the last
    /// one (and retries peers that were unreachable).
    replica_sync_interval: Seconds = Seconds(30),
        readers "replicator", min Seconds(1);
    /// replicator: the longest wait for a peer (connect, each read and write) and for a
    /// user's lock.
    replica_timeout: Seconds = Seconds(30),
        readers "replicator", min Seconds(1), max Seconds(3600);
    // --- two-node durability of an active-standby pair (issue 16) ---
    /// cleanup, qmgr, mirror: the peer node's `mirror` inet service (`host:port`). When
    /// set, cleanup answers a message's 250 only after the peer has written and fsynced
    /// its copy of the queue file (see `queue_mirror_unreachable` for when it cannot), and
    /// qmgr tells the peer to drop the copy once the message is delivered or bounced.
    /// Empty: off (a single host).
    queue_mirror_peer: String = String::new(),
        readers "cleanup qmgr mirror postern", check optional_host_port;
    /// mirror: the secret both nodes share (the same file on each, mode 0600, read by the
    /// mirror daemon before it drops privileges). Each side proves it knows it with an
    /// HMAC-SHA256 challenge and response; it never crosses the network. Required when
    /// queue_mirror_peer is set.
    queue_mirror_secret_file: ConfigPath = ConfigPath::default(),
        readers "mirror", path Config;
    /// cleanup, mirror: the longest wait for the peer's acknowledgement of a copy (connect,
    /// send and acknowledgement under one deadline); a peer slower than that counts as
    /// unreachable.
    queue_mirror_timeout: Seconds = Seconds(10),
        readers "cleanup mirror", min Seconds(1), max Seconds(300);
    /// cleanup: what a message gets when the peer cannot take its copy: `"defer"` (451
    /// 4.3.0, the client retries; nothing is accepted that only one node holds) or
    /// `"degraded"` (250 anyway, held by this node alone; logged as `degraded` and shown by
    /// `postern status`).
    queue_mirror_unreachable: MirrorUnreachable = MirrorUnreachable::Defer,
        readers "cleanup postern";
    /// mirror: how often the mirror daemon checks with the peer: it drops the copies of
    /// the peer's messages that the peer no longer has queued (refused with 451 after the
    /// copy was written, or finished while the drop notice was lost; a copy goes after two
    /// checks in a row found it gone there), and notices the peer coming back. Needs the
    /// mirror unix service kept alive (master.toml: `min_procs = 1`, a `wakeup`).
    queue_mirror_check_interval: Seconds = Seconds(60),
        readers "mirror", min Seconds(1), max Seconds(3600);
    /// trivial-rewrite: Sun ONE-style rewrite rules (`domain-pattern  $U%$D@channel`; relative to the config dir).
    rewrite_rules: Vec<String> = Vec::new(),
        readers "postern trivial-rewrite";
    /// trivial-rewrite: the transport of domains in mydestination.
    local_transport: String = "local".into(),
        readers "trivial-rewrite";
    /// trivial-rewrite: the transport of domains in relay_domains.
    relay_transport: String = "smtp".into(),
        readers "trivial-rewrite";
    /// trivial-rewrite: the transport of every other domain.
    default_transport: String = "smtp".into(),
        readers "trivial-rewrite";
    /// qmgr: most messages in the active queue (in memory); the rest wait on disk.
    qmgr_message_active_limit: u32 = 20_000,
        readers "qmgr", min 1;
    /// qmgr: most recipients of active messages in memory.
    qmgr_message_recipient_limit: u32 = 20_000,
        readers "qmgr", min 1;
    /// qmgr: parallel deliveries to one destination of a transport without a limit of its own.
    default_destination_concurrency_limit: u32 = 20,
        readers "qmgr", min 1;
    /// qmgr: recipients per delivery to one destination of a transport without a limit of its own.
    default_destination_recipient_limit: u32 = 50,
        readers "qmgr", min 1;
    /// qmgr: parallel deliveries to one local recipient.
    local_destination_concurrency_limit: u32 = 2,
        readers "qmgr", min 1;
    /// qmgr: recipients per local delivery (1: the destination is the recipient itself).
    local_destination_recipient_limit: u32 = 1,
        readers "qmgr", min 1;
    /// qmgr: parallel deliveries to one smtp destination.
    smtp_destination_concurrency_limit: u32 = 20,
        readers "qmgr", min 1;
    /// qmgr: recipients per smtp delivery.
    smtp_destination_recipient_limit: u32 = 50,
        readers "qmgr", min 1;
    /// qmgr: parallel deliveries to a destination at first (slow start), growing by one per
    /// successful delivery up to the destination's concurrency limit.
    initial_destination_concurrency: u32 = 5,
        readers "qmgr", min 1;
    /// qmgr: the initial concurrency of smtp destinations (0: `initial_destination_concurrency`).
    smtp_initial_destination_concurrency: u32 = 0,
        readers "qmgr";
    /// qmgr: failed connection cohorts (a window's worth of failures without a success) after
    /// which a destination is throttled as dead for `minimal_backoff_time`.
    default_destination_concurrency_failed_cohort_limit: u32 = 1,
        readers "qmgr", min 1;
    /// qmgr: the shortest time a deferred message waits before it is retried.
    minimal_backoff_time: Seconds = Seconds(300),
        readers "qmgr", min Seconds(1);
    /// qmgr: the longest time a deferred message waits before it is retried.
    maximal_backoff_time: Seconds = Seconds(4000),
        readers "qmgr";
    /// qmgr: how often the deferred queue is scanned.
    queue_run_delay: Seconds = Seconds(300),
        readers "qmgr", min Seconds(1);
    /// qmgr: the longest a delivery agent may take for one delivery request.
    ipc_timeout: Seconds = Seconds(3600),
        readers "postsuper qmgr", min Seconds(1);
    // --- imapd ---
    /// imapd: the certificate chain (PEM) for STARTTLS and imaps; empty: no TLS.
    imapd_tls_cert_file: ConfigPath = ConfigPath::default(),
        readers "imapd", path Config;
    /// imapd: the private key (PEM) of `imapd_tls_cert_file`.
    imapd_tls_key_file: ConfigPath = ConfigPath::default(),
        readers "imapd", path Config;
    /// imapd: the largest literal (APPEND message, long argument) accepted, in bytes.
    imapd_max_literal: u64 = 50 * 1024 * 1024,
        readers "imapd", serde(deserialize_with = "super::size::bytes");
    /// imapd: the longest command line (without literals); a longer one closes the connection.
    imapd_max_line_length: u32 = 64 * 1024,
        readers "imapd", min 1024, max 1048576;
    /// imapd: the literal bytes (long arguments, APPEND messages up to 64 KB: larger ones
    /// go to the folder's `tmp/` as they arrive) all sessions of one imapd process may
    /// hold in memory at once; a literal that does not fit now is refused
    /// unread (`NO [UNAVAILABLE]`, or `* BYE` for a LITERAL+ one) and may be sent again
    /// later. Must be at least `imapd_max_literal`.
    imapd_literal_memory_limit: u64 = 128 * 1024 * 1024,
        readers "imapd", serde(deserialize_with = "super::size::bytes");
    /// imapd: sessions one user may have open in one imapd process.
    imapd_user_connection_limit: u32 = 20,
        readers "imapd", min 1;
    /// imapd: idle time before an authenticated session is closed (RFC 3501: at least 30 minutes).
    imapd_timeout: Seconds = Seconds(1800),
        readers "imapd", min Seconds(1);
    /// imapd: clients besides loopback whose cleartext LOGIN / AUTHENTICATE PLAIN is
    /// taken without TLS (Dovecot's login_trusted_networks; the proxy of the other
    /// mailbox server, on the internal network).
    imapd_secure_networks: Vec<Cidr> = vec![
        Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
        Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
    ],
        readers "imapd";
    /// imapd: the time from connecting to a login, whatever the client sends meanwhile
    /// (Dovecot's login timeout); then `* BYE` and the connection closes.
    imapd_login_timeout: Seconds = Seconds(60),
        readers "imapd", min Seconds(1);
    /// imapd: how long a folder's state (its message list, read from `cur/`, the uidlist
    /// and the index) stays in memory after its last session closed, so a client that
    /// logs in again within that time opens the folder without reading it afresh (what
    /// changed meanwhile is still seen). At most 16 folders and 64 MB per imapd process;
    /// 0: freed with the last session.
    imapd_folder_keep_time: Seconds = Seconds(10),
        readers "imapd", max Seconds(3600);
    /// imapd: users whose sessions are written, each to a file of its own in
    /// `imapd_transcript_directory`, for debugging a client (Dovecot's rawlog): what the
    /// client sent as `C: ` lines, what imapd answered as `S: ` lines; passwords
    /// (LOGIN's and AUTHENTICATE's arguments, the SASL exchange) as `***`; at most
    /// 64 MB a session. Empty: nobody.
    imapd_transcript_users: Vec<String> = Vec::new(),
        readers "imapd";
    /// imapd: the directory for the transcripts of `imapd_transcript_users`; it must
    /// exist and be writable by `mail_owner` (files are mode 0600).
    imapd_transcript_directory: ConfigPath = ConfigPath::default(),
        readers "imapd", path Root;
    /// imapd and pop3d: connections not yet logged in from one client address to one
    /// service, over all its processes (counted by anvil; per process while anvil is
    /// away); the next gets `* BYE [UNAVAILABLE]` / `-ERR [SYS/TEMP]`. 0: no limit.
    login_client_connection_count_limit: u32 = 10,
        readers "pop3d imapd";
    // --- proxy (issue 15: the POP3/IMAP proxy in front of replicated mailbox servers) ---
    /// proxy: the POP3 servers (`host:port`) in order of preference, the local one first;
    /// a session goes to the first that accepts the connection.
    proxy_pop3_backends: Vec<String> = vec!["127.0.0.1:110".into()],
        readers "proxy", check host_ports;
    /// proxy: the IMAP servers (`host:port`) in order of preference, the local one first.
    proxy_imap_backends: Vec<String> = vec!["127.0.0.1:143".into()],
        readers "proxy", check host_ports;
    /// proxy: the master user it logs in to a backend as (`USER*MASTER`: the backends'
    /// `auth_master_users_file` must hold it). The client's password never goes there.
    proxy_master_user: String = "proxy".into(),
        readers "proxy", check not_empty;
    /// proxy: the file whose first line is the master user's password (mode 0600; read
    /// before privileges drop). Required for the proxy to start.
    proxy_master_password_file: ConfigPath = ConfigPath::default(),
        readers "proxy", path Config;
    /// proxy: how long to wait for a backend's TCP connection before trying the next one.
    proxy_connect_timeout: Seconds = Seconds(5),
        readers "proxy", min Seconds(1);
    /// proxy: how long a backend may be silent while it owes an answer (greeting, login,
    /// a command's response; not an IDLE) before the client is told and disconnected.
    proxy_backend_timeout: Seconds = Seconds(30),
        readers "proxy", min Seconds(1);
    /// proxy: clients whose cleartext passwords are taken without TLS (Dovecot's
    /// login_trusted_networks); others must use STLS/STARTTLS first.
    proxy_secure_networks: Vec<Cidr> = vec![
        Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
        Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
    ],
        readers "proxy";
    // --- director (issue 16: more than one pair of mailbox servers) ---
    /// proxy, postern, cleanup (hub): the pairs of mailbox servers, one entry each: `"NAME
    /// imap=HOST:PORT[,...] pop3=HOST:PORT[,...] replicator=HOST:PORT[,...]
    /// [smtp=HOST:PORT[,...]]"` (where a proxy logs that pair's users in, the pair's
    /// replicators for `postern user move` (whose steps the director's own replicator
    /// does, with replica_secret_file), and where a hub sends its copies of mail for
    /// the pair's users instead of replica_relays). A user goes to a pair by consistent
    /// hashing of the user name over the pair names. Empty: no director (the proxy uses
    /// proxy_*_backends for everyone, hubs replica_relays).
    director_pairs: Vec<String> = Vec::new(),
        readers "proxy postern cleanup replicator", check crate::director::check_pairs;
    /// proxy: the pair this host belongs to: its users go to proxy_pop3_backends /
    /// proxy_imap_backends with the replicator's sync, as without a director. Empty: every
    /// user goes to the addresses of the user's pair.
    director_pair: String = String::new(),
        readers "proxy postern";
    /// proxy, postern, cleanup (hub): per-user exceptions to the hashing (`USER PAIR`
    /// lines, like transport_maps; reloaded when changed); `postern user move` writes it.
    /// Empty: none.
    director_user_map: ConfigPath = ConfigPath::default(),
        readers "proxy postern cleanup replicator", path Config;
    /// proxy, postern, cleanup (hub): points per pair on the hashing ring (more: a more
    /// even share). Changing it moves users: set it once.
    director_vnodes: u32 = 128,
        readers "proxy postern cleanup replicator", min 1, max 1000;
    // --- smtp (client) ---
    /// smtp: the name sent in EHLO.
    smtp_helo_name: String = "$myhostname".into(),
        readers "smtp";
    /// smtp: how long to wait for a TCP connection to a server.
    smtp_connect_timeout: Seconds = Seconds(30),
        readers "smtp", min Seconds(1);
    /// smtp: how long to wait for each reply or write of a server.
    smtp_timeout: Seconds = Seconds(300),
        readers "smtp", min Seconds(1);
    /// smtp: how long to wait for the server's greeting and its reply to EHLO/HELO/LHLO.
    smtp_helo_timeout: Seconds = Seconds(300),
        readers "smtp", min Seconds(1);
    /// smtp: per-destination TLS policy tables (`example.com  encrypt`, `.example.com  may`,
    /// `[mx.example.com]:25  verify match=hostname`; relative to the config dir).
    smtp_tls_policy_maps: Vec<String> = Vec::new(),
        readers "smtp";
    /// smtp: a PEM file of CA certificates trusted (besides the system store) at the
    /// `verify` and `secure` levels (relative to the config dir); empty: none.
    smtp_tls_ca_file: ConfigPath = ConfigPath::default(),
        readers "smtp", path Config, name "smtp_tls_CAfile";
    /// smtp: TLS level towards other servers: none, may (opportunistic), encrypt, verify (a
    /// trusted CA), secure (and a matching name).
    smtp_tls_security_level: SmtpTlsLevel = SmtpTlsLevel::May,
        readers "smtp";
    /// smtp: DNS servers (`ADDR:PORT`) instead of /etc/resolv.conf (tests, split DNS).
    smtp_dns_servers: Vec<String> = Vec::new(),
        readers "smtp";
    /// smtp: how long a connection stays open after a delivery for the next one to the
    /// same destination (0 turns the cache off).
    smtp_connection_cache_time_limit: Seconds = Seconds(2),
        readers "smtp";
    /// smtp: the longest line (without CRLF) sent in DATA; a longer line of a message is
    /// broken by inserting CRLF and a space, as Postfix does (0: no limit, else at least 40).
    smtp_line_length_limit: u32 = 998,
        readers "smtp", check zero_or_at_least_40;
    // --- bounce ---
    /// bounce: the largest original message returned whole in a non-delivery report.
    bounce_size_limit: u64 = 50_000,
        readers "bounce", serde(deserialize_with = "super::size::bytes");
    /// bounce: who receives double bounces (reports about undeliverable reports).
    bounce_notice_recipient: String = "postmaster".into(),
        readers "bounce postern";
    // --- local (mailbox format) ---
    /// local: the mailbox format of virtual users: `maildir` (a directory) or `mbox` (one file).
    mailbox_format: MailboxFormat = MailboxFormat::Maildir,
        readers "local";
    /// local: where mbox mailboxes live (`<dir>/<user>`, relative to the config dir's parent); empty: virtual_mailbox_base.
    mail_spool_directory: ConfigPath = ConfigPath::default(),
        readers "local", path Root;
    /// local: age after which an mbox dot-lock file (`<user>.lock`) is taken to be stale and removed.
    stale_lock_time: Seconds = Seconds(500),
        readers "local";
    // --- local (system accounts, commands, files) ---
    /// local: deliver to /etc/passwd accounts that are neither virtual users nor aliases (needs local running as root).
    local_system_users: bool = false,
        readers "postern auth local";
    /// local: a system account's mailbox relative to its home (`Maildir/`: Maildir; else mbox file); empty: mbox in mail_spool_directory.
    home_mailbox: String = String::new(),
        readers "local";
    /// local: where a system account's forward file is (`~/` is its home; `$$home`, `$$user` are expanded); the first that exists is used.
    forward_path: Vec<String> = vec!["~/.forward".into()],
        readers "local";
    /// local: where `|command` targets are allowed: any of `alias`, `forward`, `include`.
    allow_mail_to_commands: Vec<String> = vec!["alias".into(), "forward".into()],
        readers "local", check alias_forward_include;
    /// local: where `/file` targets are allowed: any of `alias`, `forward`, `include`.
    allow_mail_to_files: Vec<String> = vec!["alias".into(), "forward".into()],
        readers "local", check alias_forward_include;
    /// local: the account whose rights commands and files get when their owner would be root.
    default_privs: String = "nobody".into(),
        readers "local";
    /// local: longest a `|command` delivery may run before it is killed.
    command_time_limit: Seconds = Seconds(1000),
        readers "local", min Seconds(1);
    // --- qmgr (delay warnings) ---
    /// qmgr: after this long in the queue, the sender of a deferred message gets one delay
    /// warning (Action: delayed) about the recipients still pending; 0 turns warnings off.
    delay_warning_time: Seconds = Seconds(0),
        readers "qmgr";
}

fn fqdn(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.contains('.') {
        return Err(format!("{name:?} is not a fully-qualified host name"));
    }
    Ok(())
}

fn not_empty(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

fn unprivileged(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "root" {
        return Err("must name an unprivileged account, not root".into());
    }
    Ok(())
}

fn master_separator(sep: &str) -> Result<(), String> {
    if sep.is_empty() || sep.len() > 4 {
        return Err("must be 1 to 4 characters".into());
    }
    if sep
        .bytes()
        .any(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b) || !b.is_ascii_graphic())
    {
        return Err("must not hold letters, digits, '.', '_', '-', '@', spaces or control characters".into());
    }
    Ok(())
}

fn host_ports(list: &[String]) -> Result<(), String> {
    for hp in list {
        let ok = hp.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) && !h.contains(char::is_whitespace)
        });
        if !ok {
            return Err(format!("{hp:?} is not host:port"));
        }
    }
    Ok(())
}

fn optional_host_port(hp: &str) -> Result<(), String> {
    if hp.is_empty() {
        return Ok(());
    }
    host_ports(&[hp.to_string()])
}

fn zero_or_at_least_40(n: &u32) -> Result<(), String> {
    if (1..40).contains(n) {
        return Err("must be 0 (no limit) or at least 40".into());
    }
    Ok(())
}

fn networks_or_mynetworks(list: &[String]) -> Result<(), String> {
    match list.iter().find(|n| *n != "mynetworks" && Cidr::parse(n).is_err()) {
        Some(bad) => Err(format!("{bad:?} is neither a network nor the word mynetworks")),
        None => Ok(()),
    }
}

fn alias_forward_include(list: &[String]) -> Result<(), String> {
    match list
        .iter()
        .find(|w| !matches!(w.as_str(), "alias" | "forward" | "include"))
    {
        Some(bad) => Err(format!("{bad:?} is not one of: alias, forward, include")),
        None => Ok(()),
    }
}

impl MainConfig {
    /// Checks every setting's bounds, then the rules between settings. Returns (key, reason).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        self.check_each()?;
        self.relations()
    }

    /// The rules that tie one setting to another.
    fn relations(&self) -> Result<(), (&'static str, String)> {
        if self.auth_penalty_max.0.saturating_add(self.auth_failure_delay.0) > 25 {
            // smtpd, imapd and pop3d must get a slowed answer well within their wait for auth.
            return Err((
                "auth_penalty_max",
                "with auth_failure_delay must be at most 25 s (clients wait 30 s for auth)".into(),
            ));
        }
        super::replica::relation(&self.replica_domains, &self.replica_relays)?;
        if !self.replica_peers.is_empty() && self.replica_secret_file.as_str().is_empty() {
            return Err(("replica_secret_file", "must be set when replica_peers is".into()));
        }
        if !self.queue_mirror_peer.is_empty() && self.queue_mirror_secret_file.as_str().is_empty() {
            return Err((
                "queue_mirror_secret_file",
                "must be set when queue_mirror_peer is".into(),
            ));
        }
        if self.maximal_backoff_time < self.minimal_backoff_time {
            return Err(("maximal_backoff_time", "must be at least minimal_backoff_time".into()));
        }
        if self.cleanup_content_memory_limit < self.message_size_limit {
            return Err((
                "cleanup_content_memory_limit",
                format!(
                    "must be at least message_size_limit ({} bytes)",
                    self.message_size_limit
                ),
            ));
        }
        if !self.imapd_transcript_users.is_empty() && self.imapd_transcript_directory.is_empty() {
            return Err((
                "imapd_transcript_directory",
                "must be set when imapd_transcript_users is".into(),
            ));
        }
        if self.imapd_literal_memory_limit < self.imapd_max_literal {
            return Err((
                "imapd_literal_memory_limit",
                format!("must be at least imapd_max_literal ({} bytes)", self.imapd_max_literal),
            ));
        }
        Ok(())
    }
}
