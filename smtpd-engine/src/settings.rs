//! The settings smtpd reads, taken once from the service's `MainConfig` (with the
//! `options` of its master.toml entry applied) and checked at start-up, plus the tables
//! they name (aliases, client access tables), read before privileges are dropped.

use crate::protocol::policy::{self, AccessTable, Restrictions};
use crate::protocol::sender_login::SenderLoginMaps;
use postern_lib::address::Destinations;
use postern_lib::aliases::Aliases;
use postern_lib::config::{BareNewline, Cidr, MainConfig, SmtpdTlsLevel};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// When STARTTLS is offered or required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    /// Never offered.
    None,
    /// Offered when a certificate is configured.
    May,
    /// Required before MAIL and AUTH.
    Encrypt,
}

/// Everything the session and the loop need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `myhostname`.
    pub hostname: String,
    /// `smtpd_banner`.
    pub banner: String,
    /// The service name (`smtp`, `submission`), for auth and logs.
    pub service: String,
    /// `mynetworks`.
    pub mynetworks: Vec<Cidr>,
    /// `mydestination` and `relay_domains`.
    pub destinations: Destinations,
    /// `message_size_limit`.
    pub message_size_limit: u64,
    /// `header_size_limit`.
    pub header_size_limit: u64,
    /// `smtpd_recipient_limit`.
    pub recipient_limit: usize,
    /// `smtpd_hard_error_limit`.
    pub hard_error_limit: u32,
    /// `smtpd_junk_command_limit`.
    pub junk_command_limit: u32,
    /// `smtpd_command_line_limit`.
    pub line_limit: usize,
    /// Whether a certificate is loaded (STARTTLS possible).
    pub tls_available: bool,
    /// `smtpd_tls_security_level`.
    pub tls_level: TlsLevel,
    /// `smtpd_tls_wrappermode`.
    pub tls_wrapper: bool,
    /// `smtpd_tls_auth_only`.
    pub tls_auth_only: bool,
    /// `smtpd_sasl_auth_enable`.
    pub auth_enabled: bool,
    /// `smtpd_forbid_bare_newline = reject`.
    pub reject_bare_newline: bool,
    /// `smtpd_reject_unlisted_recipient`.
    pub reject_unlisted: bool,
    /// The restriction lists.
    pub restrictions: Restrictions,
    /// The aliases of `alias_maps`, merged.
    pub aliases: Aliases,
    /// `smtpd_sender_login_maps`, loaded.
    pub sender_login_maps: Arc<SenderLoginMaps>,
    /// `smtpd_timeout`.
    pub timeout: Duration,
    /// `smtpd_data_timeout`.
    pub data_timeout: Duration,
    /// `smtpd_client_connection_count_limit`.
    pub conn_count_limit: u32,
    /// `smtpd_client_connection_rate_limit` (per minute).
    pub conn_rate_limit: u32,
    /// `smtpd_client_event_limit_exceptions` (`mynetworks` expanded): clients not counted.
    pub event_limit_exceptions: Vec<Cidr>,
    /// `smtpd_tls_cert_file`, resolved.
    pub tls_cert_file: Option<PathBuf>,
    /// `smtpd_tls_key_file`, resolved.
    pub tls_key_file: Option<PathBuf>,
    /// `queue_minfree`, when MAIL checks the queue's free space ([`crate::space`]; not in
    /// unit tests and `sendmail -bs`, whose working directory is not the queue).
    pub queue_minfree: Option<u64>,
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

impl Settings {
    /// Reads the settings and their tables; `config_dir` resolves relative file names.
    pub fn load(main: &MainConfig, config_dir: &Path, service: &str) -> Result<Settings, String> {
        let mut load_table = |f: &str| -> Result<AccessTable, String> {
            let path = resolve(config_dir, f);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            AccessTable::parse(&text).map_err(|(line, why)| format!("{}, line {line}: {why}", path.display()))
        };
        let mut list = |name: &str, items: &[String]| {
            policy::parse_list(items, &mut load_table).map_err(|e| format!("{name}: {e}"))
        };
        let restrictions = Restrictions {
            client: list("smtpd_client_restrictions", &main.smtpd_client_restrictions)?,
            helo: list("smtpd_helo_restrictions", &main.smtpd_helo_restrictions)?,
            sender: list("smtpd_sender_restrictions", &main.smtpd_sender_restrictions)?,
            relay: list("smtpd_relay_restrictions", &main.smtpd_relay_restrictions)?,
            recipient: list("smtpd_recipient_restrictions", &main.smtpd_recipient_restrictions)?,
            data: list("smtpd_data_restrictions", &main.smtpd_data_restrictions)?,
            end_of_data: list("smtpd_end_of_data_restrictions", &main.smtpd_end_of_data_restrictions)?,
        };
        // As Postfix: refuse to start as an open relay.
        let stops_relay = |l: &[policy::Rule]| {
            l.iter().any(|r| {
                matches!(
                    r,
                    policy::Rule::RejectUnauthDestination | policy::Rule::DeferUnauthDestination | policy::Rule::Reject
                )
            })
        };
        if !stops_relay(&restrictions.relay) && !stops_relay(&restrictions.recipient) {
            return Err(
                "in smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one \
                        reject_unauth_destination, defer_unauth_destination or reject (this would be an open relay)"
                    .into(),
            );
        }
        let mut aliases_text = String::new();
        for f in &main.alias_maps {
            let path = resolve(config_dir, f);
            // Validate each file; merge by concatenating the texts.
            Aliases::load(&path).map_err(|e| e.to_string())?;
            if let Ok(t) = std::fs::read_to_string(&path) {
                aliases_text.push_str(&t);
                aliases_text.push('\n');
            }
        }
        let aliases = Aliases::parse(&aliases_text).map_err(|(l, why)| format!("alias_maps: line {l}: {why}"))?;
        let destinations = Destinations::new(&main.mydestination, &main.relay_domains);
        let sender_login_maps = SenderLoginMaps::load(
            &main.smtpd_sender_login_maps,
            &|f| resolve(config_dir, f),
            &destinations,
            &main.recipient_delimiter,
        )
        .map_err(|e| format!("smtpd_sender_login_maps: {e}"))?;
        let login_rules = [
            policy::Rule::RejectSenderLoginMismatch,
            policy::Rule::RejectAuthenticatedSenderLoginMismatch,
            policy::Rule::RejectKnownSenderLoginMismatch,
            policy::Rule::RejectUnauthenticatedSenderLoginMismatch,
        ];
        let uses_login_rules = [
            &restrictions.client,
            &restrictions.helo,
            &restrictions.sender,
            &restrictions.relay,
            &restrictions.recipient,
        ]
        .iter()
        .any(|l| l.iter().any(|r| login_rules.contains(r)));
        if uses_login_rules && sender_login_maps.is_empty() {
            tracing::warn!("reject_*sender_login_mismatch without smtpd_sender_login_maps does nothing");
        }
        let tls_level = match main.smtpd_tls_security_level {
            SmtpdTlsLevel::None => TlsLevel::None,
            SmtpdTlsLevel::May => TlsLevel::May,
            SmtpdTlsLevel::Encrypt => TlsLevel::Encrypt,
        };
        let file = |s: &str| (!s.is_empty()).then(|| resolve(config_dir, s));
        let tls_cert_file = file(&main.smtpd_tls_cert_file);
        let tls_key_file = file(&main.smtpd_tls_key_file);
        if (tls_level == TlsLevel::Encrypt || main.smtpd_tls_wrappermode) && tls_cert_file.is_none() {
            return Err("smtpd_tls_security_level = encrypt or smtpd_tls_wrappermode needs smtpd_tls_cert_file".into());
        }
        Ok(Settings {
            hostname: main.myhostname.clone(),
            banner: main.smtpd_banner.clone(),
            service: service.to_string(),
            mynetworks: main.mynetworks.clone(),
            destinations,
            message_size_limit: main.message_size_limit,
            header_size_limit: main.header_size_limit,
            recipient_limit: main.smtpd_recipient_limit as usize,
            hard_error_limit: main.smtpd_hard_error_limit,
            junk_command_limit: main.smtpd_junk_command_limit,
            line_limit: main.smtpd_command_line_limit as usize,
            tls_available: false,
            tls_level,
            tls_wrapper: main.smtpd_tls_wrappermode,
            tls_auth_only: main.smtpd_tls_auth_only,
            auth_enabled: main.smtpd_sasl_auth_enable,
            reject_bare_newline: main.smtpd_forbid_bare_newline == BareNewline::Reject,
            reject_unlisted: main.smtpd_reject_unlisted_recipient,
            restrictions,
            aliases,
            sender_login_maps: Arc::new(sender_login_maps),
            timeout: main.smtpd_timeout.duration(),
            data_timeout: main.smtpd_data_timeout.duration(),
            conn_count_limit: main.smtpd_client_connection_count_limit,
            conn_rate_limit: main.smtpd_client_connection_rate_limit,
            event_limit_exceptions: main
                .smtpd_client_event_limit_exceptions
                .iter()
                .flat_map(|n| match n.as_str() {
                    "mynetworks" => main.mynetworks.clone(),
                    cidr => Cidr::parse(cidr).into_iter().collect(),
                })
                .collect(),
            tls_cert_file,
            tls_key_file,
            queue_minfree: Some(main.queue_minfree),
        })
    }

    /// Settings for unit tests: example.test is ours, 127.0.0.0/8 is mynetworks.
    pub fn for_tests() -> Settings {
        let mut main = MainConfig {
            myhostname: "mail.example.test".into(),
            mydestination: vec!["example.test".into(), "localhost".into()],
            alias_maps: Vec::new(),
            ..MainConfig::default()
        };
        main.smtpd_banner = "mail.example.test ESMTP Postern".into();
        let mut s = Settings::load(&main, Path::new("/nonexistent"), "smtp").unwrap_or_else(|e| panic!("{e}"));
        s.aliases = Aliases::parse("postmaster: root\nroot: alice\n").unwrap_or_default();
        s.queue_minfree = None;
        s
    }
}
