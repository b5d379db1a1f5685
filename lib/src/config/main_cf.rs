//! The settings of `main.toml`, with Postfix's names where Postfix has one.
//!
//! Every setting is declared here once: its name (the field), its type, its default and a
//! one-line doc. `postern config` prints this struct. A daemon reads the fields it needs
//! from the [`MainConfig`] that the skeleton hands it (with the service's `options`
//! overrides from `master.toml` already applied).
//!
//! String values may refer to other string settings as `$name` or `${name}`, as in
//! main.cf (`myorigin = "$myhostname"`); see [`super::expand`]. Relative paths resolve
//! against the parent of the config directory, so a copy of `etc/` in `/some/dir/etc`
//! runs entirely inside `/some/dir`.

use super::cidr::Cidr;
use super::duration::Seconds;
use serde::{Deserialize, Serialize};

/// Every setting of `main.toml`. Unknown keys are an error.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MainConfig {
    /// The fully-qualified name of this host (default: the system's host name).
    pub myhostname: String,
    /// The domain of this host (default: `myhostname` without its first label).
    pub mydomain: String,
    /// The domain that locally-posted mail appears to come from.
    pub myorigin: String,
    /// Domains this host delivers locally.
    pub mydestination: Vec<String>,
    /// Client networks trusted to relay (`permit_mynetworks`).
    pub mynetworks: Vec<Cidr>,
    /// Other domains this host relays to (besides mydestination).
    pub relay_domains: Vec<String>,
    /// Send all non-local mail to this host (`[host]:port` skips MX lookup); empty: direct.
    pub relayhost: String,
    /// Largest message accepted, in bytes (envelope and headers included).
    #[serde(deserialize_with = "super::size::bytes")]
    pub message_size_limit: u64,
    /// The queue: maildrop/ incoming/ active/ deferred/ hold/ corrupt/ and sockets.
    pub queue_directory: String,
    /// Where daemon programs live; empty: the directory of the running executable.
    pub daemon_directory: String,
    /// The unprivileged account that daemons run as when master starts as root.
    pub mail_owner: String,
    /// Log file; `"syslog"` sends to the local syslog (mail facility); `"-"` to stderr.
    pub maillog_file: String,
    /// The first part of every daemon's program name in the log (`postern/smtpd`); a
    /// service may set its own (`postern/submission`), as with Postfix's syslog_name.
    pub syslog_name: String,
    /// The base directory of virtual mailboxes: one Maildir per user below it.
    pub virtual_mailbox_base: String,
    /// How long a message may stay queued before it is bounced.
    pub maximal_queue_lifetime: Seconds,
    /// Default `maxproc` of a service.
    pub default_process_limit: u32,
    /// Default `max_use` of a service: requests a child serves before it exits.
    pub max_use: u32,
    /// Default `max_idle` of a service: how long an idle child waits before it exits.
    pub max_idle: Seconds,
    /// Default per-process connection limit of multi-connection daemons.
    pub default_connection_limit: u32,
    /// How long master waits before it starts a child again after one failed at start-up.
    pub service_throttle_time: Seconds,
    /// How long `postern stop` lets children finish their current work before killing them.
    pub shutdown_timeout: Seconds,
    // --- auth, pop3d ---
    /// auth: also verify system accounts from /etc/shadow (only when master runs as root).
    pub auth_system_users: bool,
    /// auth: how long a client address's failed logins are remembered after its last one
    /// (Dovecot keeps its auth penalty an hour).
    pub auth_failure_window: Seconds,
    /// auth: how long a failed login waits before it is answered (Dovecot's name and default).
    pub auth_failure_delay: Seconds,
    /// auth: the longest penalty: after failures from a client address, its next logins
    /// wait 2 s, doubling with each failure up to this (Dovecot's auth penalty: 15 s); a
    /// success from the address ends it. A right password is never refused.
    pub auth_penalty_max: Seconds,
    /// auth: threads that verify password hashes, so the event loop never stalls.
    pub auth_worker_threads: u32,
    /// pop3d: the certificate chain (PEM) for STLS and pop3s; empty: no TLS.
    pub pop3d_tls_cert_file: String,
    /// pop3d: the private key (PEM) of `pop3d_tls_cert_file`.
    pub pop3d_tls_key_file: String,
    /// pop3d: accept cleartext passwords (USER/PASS, AUTH PLAIN) without TLS from any client.
    pub pop3d_allow_plaintext: bool,
    /// pop3d: clients whose cleartext passwords are accepted without TLS (Dovecot's login_trusted_networks).
    pub pop3d_secure_networks: Vec<Cidr>,
    /// pop3d: idle time before a session is closed (RFC 1939: at least 10 minutes).
    pub pop3d_timeout: Seconds,
    /// pop3d: the time from connecting to a login, whatever the client sends meanwhile
    /// (Dovecot's login timeout); then `-ERR` and the connection closes.
    pub pop3d_login_timeout: Seconds,
    // --- cleanup ---
    /// cleanup: header_checks table (Postfix regexp format; relative to the config dir); empty: none.
    pub header_checks: String,
    /// cleanup: body_checks table (Postfix regexp format; relative to the config dir); empty: none.
    pub body_checks: String,
    /// Milters for mail received by smtpd (`unix:/path` or `inet:host:port`), run in order.
    pub smtpd_milters: Vec<String>,
    /// Milters for locally submitted mail (sendmail/pickup), run in order.
    pub non_smtpd_milters: Vec<String>,
    /// What to do when a milter is unreachable, times out or misbehaves: accept, reject, tempfail, quarantine.
    pub milter_default_action: String,
    /// Time limit for connecting to a milter and negotiating with it.
    pub milter_connect_timeout: Seconds,
    /// Time limit for a milter's answer to one command (connect, helo, mail, rcpt, header).
    pub milter_command_timeout: Seconds,
    /// Time limit for a milter's answer to body chunks and end of message.
    pub milter_content_timeout: Seconds,
    // --- smtpd ---
    /// smtpd: bytes that must stay free on the queue file system; MAIL is refused with
    /// `452 4.3.1` below this or below 1.5 × `message_size_limit`, as in Postfix.
    #[serde(deserialize_with = "super::size::bytes")]
    pub queue_minfree: u64,
    /// smtpd: the text after `220` in the greeting.
    pub smtpd_banner: String,
    /// smtpd: TLS certificate chain (PEM; relative to the config dir); empty: no STARTTLS.
    pub smtpd_tls_cert_file: String,
    /// smtpd: the private key (PEM) of `smtpd_tls_cert_file`.
    pub smtpd_tls_key_file: String,
    /// smtpd: `none` (no STARTTLS), `may` (offer it), `encrypt` (require it before MAIL and AUTH).
    pub smtpd_tls_security_level: String,
    /// smtpd: implicit TLS from the first byte (the smtps service, port 465).
    pub smtpd_tls_wrappermode: bool,
    /// smtpd: offer AUTH only under TLS (loopback clients excepted).
    pub smtpd_tls_auth_only: bool,
    /// smtpd: offer AUTH PLAIN and LOGIN (checked by the auth daemon).
    pub smtpd_sasl_auth_enable: bool,
    /// smtpd: how long to wait for a client's next command (or next bytes).
    pub smtpd_timeout: Seconds,
    /// smtpd: the longest a whole DATA or BDAT transfer may take.
    pub smtpd_data_timeout: Seconds,
    /// smtpd: recipients per message.
    pub smtpd_recipient_limit: u32,
    /// smtpd: errors in one session before it is closed with 421.
    pub smtpd_hard_error_limit: u32,
    /// smtpd: commands other than mail transactions (NOOP, VRFY, HELP, RSET, EHLO) in one session.
    pub smtpd_junk_command_limit: u32,
    /// smtpd: longest command line, in bytes.
    pub smtpd_command_line_limit: u32,
    /// smtpd: largest message header, in bytes.
    #[serde(deserialize_with = "super::size::bytes")]
    pub header_size_limit: u64,
    /// smtpd: connections at once from one client address (over all smtpd processes, counted by anvil); 0: no limit.
    pub smtpd_client_connection_count_limit: u32,
    /// smtpd: connections per `anvil_rate_time_unit` from one client address (over all smtpd processes, counted by anvil); 0: no limit.
    pub smtpd_client_connection_rate_limit: u32,
    /// smtpd: clients whose connections are not counted against the connection count and
    /// rate limits (Postfix's name): networks, and the word `mynetworks` for the networks of
    /// `mynetworks` (Postfix's default `$mynetworks`, the default here too); `[]`: none.
    pub smtpd_client_event_limit_exceptions: Vec<String>,
    /// anvil: the window over which connection rates are counted.
    pub anvil_rate_time_unit: Seconds,
    /// smtpd: bare LF in DATA: `normalize` (treat as CRLF; only CRLF.CRLF ends the data) or `reject`.
    pub smtpd_forbid_bare_newline: String,
    /// smtpd: refuse unknown recipients in mydestination (550 5.1.1) after the restrictions.
    pub smtpd_reject_unlisted_recipient: bool,
    /// smtpd: restrictions when a client connects.
    pub smtpd_client_restrictions: Vec<String>,
    /// smtpd: restrictions at HELO/EHLO.
    pub smtpd_helo_restrictions: Vec<String>,
    /// smtpd: restrictions at MAIL FROM.
    pub smtpd_sender_restrictions: Vec<String>,
    /// smtpd: relay control at RCPT TO (evaluated before smtpd_recipient_restrictions).
    pub smtpd_relay_restrictions: Vec<String>,
    /// smtpd: restrictions at RCPT TO.
    pub smtpd_recipient_restrictions: Vec<String>,
    /// smtpd: restrictions at DATA/BDAT.
    pub smtpd_data_restrictions: Vec<String>,
    /// smtpd: restrictions at the end of the message.
    pub smtpd_end_of_data_restrictions: Vec<String>,
    /// smtpd: tables of envelope sender → the SASL login names that own it (Postfix's
    /// table syntax; `regexp:FILE` for a Postfix regexp table), for the
    /// `reject_*sender_login_mismatch` rules. Relative to the config dir.
    pub smtpd_sender_login_maps: Vec<String>,
    /// smtpd: alias tables for recipient validation (relative to the config dir).
    pub alias_maps: Vec<String>,
    // --- qmgr, trivial-rewrite, local ---
    /// trivial-rewrite, local: separator between a user name and an address extension (`user+ext`); empty: none.
    pub recipient_delimiter: String,
    /// trivial-rewrite: virtual alias tables (`address  target, ...`; relative to the config dir).
    pub virtual_alias_maps: Vec<String>,
    /// trivial-rewrite: transport tables (`domain  transport:nexthop`; relative to the config dir).
    pub transport_maps: Vec<String>,
    /// trivial-rewrite: Sun ONE-style rewrite rules (`domain-pattern  $U%$D@channel`; relative to the config dir).
    pub rewrite_rules: Vec<String>,
    /// trivial-rewrite: the transport of domains in mydestination.
    pub local_transport: String,
    /// trivial-rewrite: the transport of domains in relay_domains.
    pub relay_transport: String,
    /// trivial-rewrite: the transport of every other domain.
    pub default_transport: String,
    /// qmgr: most messages in the active queue (in memory); the rest wait on disk.
    pub qmgr_message_active_limit: u32,
    /// qmgr: most recipients of active messages in memory.
    pub qmgr_message_recipient_limit: u32,
    /// qmgr: parallel deliveries to one destination of a transport without a limit of its own.
    pub default_destination_concurrency_limit: u32,
    /// qmgr: recipients per delivery to one destination of a transport without a limit of its own.
    pub default_destination_recipient_limit: u32,
    /// qmgr: parallel deliveries to one local recipient.
    pub local_destination_concurrency_limit: u32,
    /// qmgr: recipients per local delivery (1: the destination is the recipient itself).
    pub local_destination_recipient_limit: u32,
    /// qmgr: parallel deliveries to one smtp destination.
    pub smtp_destination_concurrency_limit: u32,
    /// qmgr: recipients per smtp delivery.
    pub smtp_destination_recipient_limit: u32,
    /// qmgr: parallel deliveries to a destination at first (slow start), growing by one per
    /// successful delivery up to the destination's concurrency limit.
    pub initial_destination_concurrency: u32,
    /// qmgr: the initial concurrency of smtp destinations (0: `initial_destination_concurrency`).
    pub smtp_initial_destination_concurrency: u32,
    /// qmgr: failed connection cohorts (a window's worth of failures without a success) after
    /// which a destination is throttled as dead for `minimal_backoff_time`.
    pub default_destination_concurrency_failed_cohort_limit: u32,
    /// qmgr: the shortest time a deferred message waits before it is retried.
    pub minimal_backoff_time: Seconds,
    /// qmgr: the longest time a deferred message waits before it is retried.
    pub maximal_backoff_time: Seconds,
    /// qmgr: how often the deferred queue is scanned.
    pub queue_run_delay: Seconds,
    /// qmgr: the longest a delivery agent may take for one delivery request.
    pub ipc_timeout: Seconds,
    // --- imapd ---
    /// imapd: the certificate chain (PEM) for STARTTLS and imaps; empty: no TLS.
    pub imapd_tls_cert_file: String,
    /// imapd: the private key (PEM) of `imapd_tls_cert_file`.
    pub imapd_tls_key_file: String,
    /// imapd: the largest literal (APPEND message, long argument) accepted, in bytes.
    #[serde(deserialize_with = "super::size::bytes")]
    pub imapd_max_literal: u64,
    /// imapd: the longest command line (without literals); a longer one closes the connection.
    pub imapd_max_line_length: u32,
    /// imapd: the literal bytes (APPEND messages above all) all sessions of one imapd
    /// process may hold in memory at once; a literal that does not fit now is refused
    /// unread (`NO [UNAVAILABLE]`, or `* BYE` for a LITERAL+ one) and may be sent again
    /// later. Must be at least `imapd_max_literal`.
    #[serde(deserialize_with = "super::size::bytes")]
    pub imapd_literal_memory_limit: u64,
    /// imapd: sessions one user may have open in one imapd process.
    pub imapd_user_connection_limit: u32,
    /// imapd: idle time before an authenticated session is closed (RFC 3501: at least 30 minutes).
    pub imapd_timeout: Seconds,
    /// imapd: the time from connecting to a login, whatever the client sends meanwhile
    /// (Dovecot's login timeout); then `* BYE` and the connection closes.
    pub imapd_login_timeout: Seconds,
    /// imapd and pop3d: connections not yet logged in from one client address to one
    /// service, over all its processes (counted by anvil; per process while anvil is
    /// away); the next gets `* BYE [UNAVAILABLE]` / `-ERR [SYS/TEMP]`. 0: no limit.
    pub login_client_connection_count_limit: u32,
    // --- smtp (client) ---
    /// smtp: the name sent in EHLO.
    pub smtp_helo_name: String,
    /// smtp: how long to wait for a TCP connection to a server.
    pub smtp_connect_timeout: Seconds,
    /// smtp: how long to wait for each reply or write of a server.
    pub smtp_timeout: Seconds,
    /// smtp: how long to wait for the server's greeting and its reply to EHLO/HELO/LHLO.
    pub smtp_helo_timeout: Seconds,
    /// smtp: per-destination TLS policy tables (`example.com  encrypt`, `.example.com  may`,
    /// `[mx.example.com]:25  verify match=hostname`; relative to the config dir).
    pub smtp_tls_policy_maps: Vec<String>,
    /// smtp: a PEM file of CA certificates trusted (besides the system store) at the
    /// `verify` and `secure` levels (relative to the config dir); empty: none.
    #[serde(rename = "smtp_tls_CAfile")]
    pub smtp_tls_ca_file: String,
    /// smtp: TLS level towards other servers: none, may (opportunistic), encrypt, verify.
    pub smtp_tls_security_level: String,
    /// smtp: DNS servers (`ADDR:PORT`) instead of /etc/resolv.conf (tests, split DNS).
    pub smtp_dns_servers: Vec<String>,
    /// smtp: how long a connection stays open after a delivery for the next one to the
    /// same destination (0 turns the cache off).
    pub smtp_connection_cache_time_limit: Seconds,
    /// smtp: the longest line (without CRLF) sent in DATA; a longer line of a message is
    /// broken by inserting CRLF and a space, as Postfix does (0: no limit, else at least 40).
    pub smtp_line_length_limit: u32,
    // --- bounce ---
    /// bounce: the largest original message returned whole in a non-delivery report.
    #[serde(deserialize_with = "super::size::bytes")]
    pub bounce_size_limit: u64,
    /// bounce: who receives double bounces (reports about undeliverable reports).
    pub bounce_notice_recipient: String,
    // --- local (mailbox format) ---
    /// local: the mailbox format of virtual users: `maildir` (a directory) or `mbox` (one file).
    pub mailbox_format: String,
    /// local: where mbox mailboxes live (`<dir>/<user>`, relative to the config dir's parent); empty: virtual_mailbox_base.
    pub mail_spool_directory: String,
    /// local: age after which an mbox dot-lock file (`<user>.lock`) is taken to be stale and removed.
    pub stale_lock_time: Seconds,
    // --- local (system accounts, commands, files) ---
    /// local: deliver to /etc/passwd accounts that are neither virtual users nor aliases (needs local running as root).
    pub local_system_users: bool,
    /// local: a system account's mailbox relative to its home (`Maildir/`: Maildir; else mbox file); empty: mbox in mail_spool_directory.
    pub home_mailbox: String,
    /// local: where a system account's forward file is (`~/` is its home; `$$home`, `$$user` are expanded); the first that exists is used.
    pub forward_path: Vec<String>,
    /// local: where `|command` targets are allowed: any of `alias`, `forward`, `include`.
    pub allow_mail_to_commands: Vec<String>,
    /// local: where `/file` targets are allowed: any of `alias`, `forward`, `include`.
    pub allow_mail_to_files: Vec<String>,
    /// local: the account whose rights commands and files get when their owner would be root.
    pub default_privs: String,
    /// local: longest a `|command` delivery may run before it is killed.
    pub command_time_limit: Seconds,
    // --- qmgr (delay warnings) ---
    /// qmgr: after this long in the queue, the sender of a deferred message gets one delay
    /// warning (Action: delayed) about the recipients still pending; 0 turns warnings off.
    pub delay_warning_time: Seconds,
}

impl Default for MainConfig {
    fn default() -> Self {
        MainConfig {
            myhostname: String::new(),
            mydomain: String::new(),
            myorigin: "$myhostname".into(),
            mydestination: vec!["$myhostname".into(), "localhost.$mydomain".into(), "localhost".into()],
            mynetworks: vec![
                Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
                Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
            ],
            relay_domains: Vec::new(),
            relayhost: String::new(),
            message_size_limit: 10_240_000,
            queue_directory: "/var/spool/postern".into(),
            daemon_directory: String::new(),
            mail_owner: "postern".into(),
            maillog_file: "syslog".into(),
            syslog_name: "postern".into(),
            virtual_mailbox_base: "/var/mail/postern".into(),
            maximal_queue_lifetime: Seconds(5 * 86400),
            default_process_limit: 100,
            max_use: 100,
            max_idle: Seconds(100),
            default_connection_limit: 200,
            service_throttle_time: Seconds(60),
            shutdown_timeout: Seconds(10),
            // --- auth, pop3d ---
            auth_system_users: false,
            auth_failure_window: Seconds(3600),
            auth_failure_delay: Seconds(2),
            auth_penalty_max: Seconds(15),
            auth_worker_threads: 2,
            pop3d_tls_cert_file: String::new(),
            pop3d_tls_key_file: String::new(),
            pop3d_allow_plaintext: false,
            pop3d_secure_networks: vec![
                Cidr::parse("127.0.0.0/8").unwrap_or_else(|_| unreachable!()),
                Cidr::parse("[::1]/128").unwrap_or_else(|_| unreachable!()),
            ],
            pop3d_timeout: Seconds(600),
            pop3d_login_timeout: Seconds(60),
            // --- cleanup ---
            header_checks: String::new(),
            body_checks: String::new(),
            smtpd_milters: Vec::new(),
            non_smtpd_milters: Vec::new(),
            milter_default_action: "tempfail".into(),
            milter_connect_timeout: Seconds(30),
            milter_command_timeout: Seconds(30),
            milter_content_timeout: Seconds(300),
            // --- smtpd ---
            queue_minfree: 0,
            smtpd_banner: "$myhostname ESMTP Postern".into(),
            smtpd_tls_cert_file: String::new(),
            smtpd_tls_key_file: String::new(),
            smtpd_tls_security_level: "may".into(),
            smtpd_tls_wrappermode: false,
            smtpd_tls_auth_only: true,
            smtpd_sasl_auth_enable: false,
            smtpd_timeout: Seconds(300),
            smtpd_data_timeout: Seconds(600),
            smtpd_recipient_limit: 1000,
            smtpd_hard_error_limit: 20,
            smtpd_junk_command_limit: 100,
            smtpd_command_line_limit: 2048,
            header_size_limit: 102_400,
            smtpd_client_connection_count_limit: 50,
            smtpd_client_connection_rate_limit: 0,
            smtpd_client_event_limit_exceptions: vec!["mynetworks".into()],
            anvil_rate_time_unit: Seconds(60),
            smtpd_forbid_bare_newline: "normalize".into(),
            smtpd_reject_unlisted_recipient: true,
            smtpd_client_restrictions: Vec::new(),
            smtpd_helo_restrictions: Vec::new(),
            smtpd_sender_restrictions: Vec::new(),
            smtpd_relay_restrictions: vec![
                "permit_mynetworks".into(),
                "permit_sasl_authenticated".into(),
                "reject_unauth_destination".into(),
            ],
            smtpd_recipient_restrictions: Vec::new(),
            smtpd_data_restrictions: Vec::new(),
            smtpd_end_of_data_restrictions: Vec::new(),
            smtpd_sender_login_maps: Vec::new(),
            alias_maps: vec!["aliases".into()],
            // --- qmgr, trivial-rewrite, local ---
            recipient_delimiter: String::new(),
            virtual_alias_maps: Vec::new(),
            transport_maps: Vec::new(),
            rewrite_rules: Vec::new(),
            local_transport: "local".into(),
            relay_transport: "smtp".into(),
            default_transport: "smtp".into(),
            qmgr_message_active_limit: 20_000,
            qmgr_message_recipient_limit: 20_000,
            default_destination_concurrency_limit: 20,
            default_destination_recipient_limit: 50,
            local_destination_concurrency_limit: 2,
            local_destination_recipient_limit: 1,
            smtp_destination_concurrency_limit: 20,
            smtp_destination_recipient_limit: 50,
            initial_destination_concurrency: 5,
            smtp_initial_destination_concurrency: 0,
            default_destination_concurrency_failed_cohort_limit: 1,
            minimal_backoff_time: Seconds(300),
            maximal_backoff_time: Seconds(4000),
            queue_run_delay: Seconds(300),
            ipc_timeout: Seconds(3600),
            // --- imapd ---
            imapd_tls_cert_file: String::new(),
            imapd_tls_key_file: String::new(),
            imapd_max_literal: 50 * 1024 * 1024,
            imapd_max_line_length: 64 * 1024,
            imapd_literal_memory_limit: 128 * 1024 * 1024,
            imapd_user_connection_limit: 20,
            imapd_timeout: Seconds(1800),
            imapd_login_timeout: Seconds(60),
            login_client_connection_count_limit: 10,
            // --- smtp (client) ---
            smtp_helo_name: "$myhostname".into(),
            smtp_connect_timeout: Seconds(30),
            smtp_timeout: Seconds(300),
            smtp_helo_timeout: Seconds(300),
            smtp_tls_policy_maps: Vec::new(),
            smtp_tls_ca_file: String::new(),
            smtp_tls_security_level: "may".into(),
            smtp_dns_servers: Vec::new(),
            smtp_connection_cache_time_limit: Seconds(2),
            smtp_line_length_limit: 998,
            // --- bounce ---
            bounce_size_limit: 50_000,
            bounce_notice_recipient: "postmaster".into(),
            // --- local (mailbox format) ---
            mailbox_format: "maildir".into(),
            mail_spool_directory: String::new(),
            stale_lock_time: Seconds(500),
            local_system_users: false,
            home_mailbox: String::new(),
            forward_path: vec!["~/.forward".into()],
            allow_mail_to_commands: vec!["alias".into(), "forward".into()],
            allow_mail_to_files: vec!["alias".into(), "forward".into()],
            default_privs: "nobody".into(),
            command_time_limit: Seconds(1000),
            // --- qmgr (delay warnings) ---
            delay_warning_time: Seconds(0),
        }
    }
}

impl MainConfig {
    /// Checks bounds that the types alone do not express. Returns (key, reason).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.myhostname.is_empty() || !self.myhostname.contains('.') {
            return Err((
                "myhostname",
                format!("{:?} is not a fully-qualified host name", self.myhostname),
            ));
        }
        if self.queue_directory.is_empty() {
            return Err(("queue_directory", "must not be empty".into()));
        }
        if self.mail_owner.is_empty() || self.mail_owner == "root" {
            return Err(("mail_owner", "must name an unprivileged account, not root".into()));
        }
        if self.message_size_limit < 1024 {
            return Err(("message_size_limit", "must be at least 1024 bytes".into()));
        }
        if self.default_process_limit == 0 {
            return Err(("default_process_limit", "must be at least 1".into()));
        }
        if self.max_use == 0 {
            return Err(("max_use", "must be at least 1".into()));
        }
        if let Some(bad) = self
            .smtpd_client_event_limit_exceptions
            .iter()
            .find(|n| *n != "mynetworks" && Cidr::parse(n).is_err())
        {
            return Err((
                "smtpd_client_event_limit_exceptions",
                format!("{bad:?} is neither a network nor the word mynetworks"),
            ));
        }
        if self.auth_penalty_max.0.saturating_add(self.auth_failure_delay.0) > 25 {
            // smtpd, imapd and pop3d must get a slowed answer well within their wait for auth.
            return Err((
                "auth_penalty_max",
                "with auth_failure_delay must be at most 25 s (clients wait 30 s for auth)".into(),
            ));
        }
        if self.auth_worker_threads == 0 || self.auth_worker_threads > 64 {
            return Err(("auth_worker_threads", "must be between 1 and 64".into()));
        }
        if !matches!(self.smtpd_tls_security_level.as_str(), "none" | "may" | "encrypt") {
            return Err(("smtpd_tls_security_level", "must be none, may or encrypt".into()));
        }
        if !matches!(self.smtpd_forbid_bare_newline.as_str(), "normalize" | "reject") {
            return Err(("smtpd_forbid_bare_newline", "must be normalize or reject".into()));
        }
        if self.smtpd_command_line_limit < 512 || self.smtpd_command_line_limit > 65536 {
            return Err(("smtpd_command_line_limit", "must be between 512 and 65536".into()));
        }
        if (1..40).contains(&self.smtp_line_length_limit) {
            return Err(("smtp_line_length_limit", "must be 0 (no limit) or at least 40".into()));
        }
        if self.smtpd_recipient_limit == 0 || self.smtpd_hard_error_limit == 0 {
            return Err(("smtpd_recipient_limit", "limits must be at least 1".into()));
        }
        if self.qmgr_message_active_limit == 0 || self.qmgr_message_recipient_limit == 0 {
            return Err(("qmgr_message_active_limit", "qmgr limits must be at least 1".into()));
        }
        if self.minimal_backoff_time.0 == 0 || self.maximal_backoff_time.0 < self.minimal_backoff_time.0 {
            return Err((
                "maximal_backoff_time",
                "must be at least minimal_backoff_time, which must be at least 1s".into(),
            ));
        }
        if self.default_connection_limit == 0 {
            return Err(("default_connection_limit", "must be at least 1".into()));
        }
        if self.imapd_login_timeout.0 == 0 {
            return Err(("imapd_login_timeout", "must be at least 1s".into()));
        }
        if self.pop3d_login_timeout.0 == 0 {
            return Err(("pop3d_login_timeout", "must be at least 1s".into()));
        }
        if self.imapd_literal_memory_limit < self.imapd_max_literal {
            return Err((
                "imapd_literal_memory_limit",
                format!("must be at least imapd_max_literal ({} bytes)", self.imapd_max_literal),
            ));
        }
        if !["accept", "reject", "tempfail", "quarantine"].contains(&self.milter_default_action.as_str()) {
            return Err((
                "milter_default_action",
                format!(
                    "{:?}: expected accept, reject, tempfail or quarantine",
                    self.milter_default_action
                ),
            ));
        }
        if !matches!(self.mailbox_format.as_str(), "maildir" | "mbox") {
            return Err(("mailbox_format", "must be maildir or mbox".into()));
        }
        Ok(())
    }
}
