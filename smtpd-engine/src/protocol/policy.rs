//! Restriction lists (Postfix's `smtpd_*_restrictions`): ordered rules evaluated at each
//! stage, each answering permit (stop this list), reject (refuse), or nothing (go on).
//!
//! As in Postfix with `smtpd_delay_reject = yes`, the client, HELO and sender lists are
//! evaluated at each RCPT (together with the relay and recipient lists), so that a client
//! that authenticates after connecting — the submission service's
//! `permit_sasl_authenticated, reject` — is judged on what it is when it names a
//! recipient. An empty list permits. A reject in any list refuses; a permit ends only its
//! own list. The data and end-of-data lists are evaluated at DATA/BDAT and at the end of
//! the message.
//!
//! Rules: `permit_mynetworks`, `permit_sasl_authenticated`, `reject_unauth_destination`,
//! `reject_unlisted_recipient`, `reject_non_fqdn_sender`, `reject_non_fqdn_recipient`,
//! `reject_sender_login_mismatch`, `reject_authenticated_sender_login_mismatch`,
//! `reject_known_sender_login_mismatch`, `reject_unauthenticated_sender_login_mismatch`
//! (as Postfix, with `smtpd_sender_login_maps`: [`super::sender_login`]; the null sender
//! passes, and without a table they do nothing),
//! `check_client_access FILE` (a table of `CIDR-or-address ACTION [text]`, ACTION one
//! of `OK`, `REJECT`, `DUNNO`; the file is read when smtpd starts), `permit`, `reject`.
//! An unknown rule is a start-up error.

use super::reply::Reply;
use super::sender_login::SenderLoginMaps;
use postern_lib::address::{Address, Class, Path};
use postern_lib::config::Cidr;
use postern_lib::dsn::Dsn;
use std::net::IpAddr;
use std::sync::Arc;

/// What a `check_client_access` entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessAction {
    /// `OK`: permit.
    Ok,
    /// `REJECT [text]`.
    Reject(Option<String>),
    /// `DUNNO`: go on.
    Dunno,
}

/// A client access table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessTable {
    entries: Vec<(Cidr, AccessAction)>,
}

impl AccessTable {
    /// Parses the table text; an error is (line, reason).
    pub fn parse(text: &str) -> Result<AccessTable, (usize, String)> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(2, char::is_whitespace);
            let pat = parts.next().unwrap_or_default();
            let rest = parts.next().unwrap_or_default().trim();
            let cidr = Cidr::parse(pat).map_err(|e| (i + 1, e))?;
            let (word, text) = match rest.split_once(char::is_whitespace) {
                Some((w, t)) => (w, Some(t.trim().to_string())),
                None => (rest, None),
            };
            let action = match word.to_ascii_uppercase().as_str() {
                "OK" => AccessAction::Ok,
                "REJECT" => AccessAction::Reject(text),
                "DUNNO" => AccessAction::Dunno,
                other => {
                    return Err((
                        i + 1,
                        format!("unknown action {other:?} (expected OK, REJECT or DUNNO)"),
                    ));
                }
            };
            entries.push((cidr, action));
        }
        Ok(AccessTable { entries })
    }

    /// The action of the first entry that contains `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&AccessAction> {
        self.entries.iter().find(|(c, _)| c.contains(ip)).map(|(_, a)| a)
    }
}

/// One rule of a restriction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `permit_mynetworks`.
    PermitMynetworks,
    /// `permit_sasl_authenticated`.
    PermitSaslAuthenticated,
    /// `reject_unauth_destination`.
    RejectUnauthDestination,
    /// `defer_unauth_destination`: the same test, answered with a temporary `454` (the
    /// rule Debian's stock main.cf puts in `smtpd_relay_restrictions`).
    DeferUnauthDestination,
    /// `reject_unlisted_recipient`.
    RejectUnlistedRecipient,
    /// `reject_non_fqdn_sender`.
    RejectNonFqdnSender,
    /// `reject_non_fqdn_recipient`.
    RejectNonFqdnRecipient,
    /// `reject_sender_login_mismatch`: the authenticated and the unauthenticated rule.
    RejectSenderLoginMismatch,
    /// `reject_authenticated_sender_login_mismatch`: a logged-in client may use only the
    /// senders the table gives its login (`553 5.7.1 ... not owned by user NAME`).
    RejectAuthenticatedSenderLoginMismatch,
    /// `reject_known_sender_login_mismatch`: both rules, for senders in the table only.
    RejectKnownSenderLoginMismatch,
    /// `reject_unauthenticated_sender_login_mismatch`: a sender in the table needs a
    /// login (`553 5.7.1 ... not logged in`).
    RejectUnauthenticatedSenderLoginMismatch,
    /// `check_client_access FILE`.
    CheckClientAccess(Arc<AccessTable>),
    /// `permit`.
    Permit,
    /// `reject`.
    Reject,
}

/// Parses a list as written in main.toml: one rule per element, or `check_client_access`
/// followed by its file in the same element or the next. `load` reads a table file.
pub fn parse_list(
    items: &[String],
    load: &mut dyn FnMut(&str) -> Result<AccessTable, String>,
) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    let mut it = items
        .iter()
        .flat_map(|s| s.split([' ', ',', '\t']).filter(|w| !w.is_empty()));
    while let Some(word) = it.next() {
        let rule = match word {
            "permit_mynetworks" => Rule::PermitMynetworks,
            "permit_sasl_authenticated" => Rule::PermitSaslAuthenticated,
            "reject_unauth_destination" => Rule::RejectUnauthDestination,
            "defer_unauth_destination" => Rule::DeferUnauthDestination,
            "reject_unlisted_recipient" => Rule::RejectUnlistedRecipient,
            "reject_non_fqdn_sender" => Rule::RejectNonFqdnSender,
            "reject_non_fqdn_recipient" => Rule::RejectNonFqdnRecipient,
            "reject_sender_login_mismatch" => Rule::RejectSenderLoginMismatch,
            "reject_authenticated_sender_login_mismatch" => Rule::RejectAuthenticatedSenderLoginMismatch,
            "reject_known_sender_login_mismatch" => Rule::RejectKnownSenderLoginMismatch,
            "reject_unauthenticated_sender_login_mismatch" => Rule::RejectUnauthenticatedSenderLoginMismatch,
            "permit" => Rule::Permit,
            "reject" => Rule::Reject,
            "check_client_access" => {
                let file = it.next().ok_or("check_client_access needs a file")?;
                Rule::CheckClientAccess(Arc::new(load(file)?))
            }
            other => return Err(format!("unknown restriction {other:?}")),
        };
        out.push(rule);
    }
    Ok(out)
}

/// The restriction lists of every stage.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    /// `smtpd_client_restrictions`.
    pub client: Vec<Rule>,
    /// `smtpd_helo_restrictions`.
    pub helo: Vec<Rule>,
    /// `smtpd_sender_restrictions`.
    pub sender: Vec<Rule>,
    /// `smtpd_relay_restrictions`.
    pub relay: Vec<Rule>,
    /// `smtpd_recipient_restrictions`.
    pub recipient: Vec<Rule>,
    /// `smtpd_data_restrictions`.
    pub data: Vec<Rule>,
    /// `smtpd_end_of_data_restrictions`.
    pub end_of_data: Vec<Rule>,
}

impl Restrictions {
    /// Whether any RCPT-time list uses `reject_unlisted_recipient`.
    pub fn uses_unlisted(&self) -> bool {
        [&self.client, &self.helo, &self.sender, &self.relay, &self.recipient]
            .iter()
            .any(|l| l.contains(&Rule::RejectUnlistedRecipient))
    }
}

/// What the rules may look at.
pub struct Facts<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// Whether the client is in mynetworks.
    pub mynetworks: bool,
    /// Whether the client has authenticated.
    pub authenticated: bool,
    /// The sender, once MAIL was given.
    pub sender: Option<&'a Path>,
    /// The recipient at RCPT and its class.
    pub recipient: Option<(&'a Address, Class)>,
    /// At RCPT: whether the recipient is a known local user or alias (`None`: not
    /// local, or not looked up).
    pub known: Option<bool>,
    /// The SASL login name, once authenticated.
    pub login: Option<&'a str>,
    /// `smtpd_sender_login_maps`.
    pub login_maps: &'a SenderLoginMaps,
}

/// The sender login check: `authenticated` checks a logged-in client's right to the
/// sender (an unknown sender passing when `allow_unknown`), `unauthenticated` refuses a
/// known sender without a login. `None`: no objection.
fn login_mismatch(f: &Facts<'_>, authenticated: bool, allow_unknown: bool, unauthenticated: bool) -> Option<Reply> {
    if f.login_maps.is_empty() {
        return None;
    }
    let Some(Path::Addr(sender)) = f.sender else {
        return None;
    };
    match f.login {
        Some(login) if authenticated => match f.login_maps.owned_by(sender, login) {
            Some(true) => None,
            None if allow_unknown => None,
            _ => Some(Reply::new(
                553,
                Dsn::NOT_AUTHORIZED,
                format!("<{sender}>: Sender address rejected: not owned by user {login}"),
            )),
        },
        None if unauthenticated => f.login_maps.owners(sender).map(|_| {
            Reply::new(
                553,
                Dsn::NOT_AUTHORIZED,
                format!("<{sender}>: Sender address rejected: not logged in"),
            )
        }),
        _ => None,
    }
}

/// The outcome of one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The list permitted (or ended without a decision).
    Permit,
    /// Refused with this reply.
    Reject(Reply),
}

/// The stage a list runs at (decides the wording of rejections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// client restrictions.
    Client,
    /// HELO restrictions.
    Helo,
    /// sender restrictions.
    Sender,
    /// relay and recipient restrictions.
    Recipient,
    /// DATA and end of data.
    Data,
}

fn reject(stage: Stage, f: &Facts<'_>, code: u16, dsn: Dsn, why: &str) -> Verdict {
    let what = match stage {
        Stage::Client => format!("Client host rejected: {why}"),
        Stage::Helo => format!("Helo command rejected: {why}"),
        Stage::Sender => format!("Sender address rejected: {why}"),
        Stage::Recipient => format!("Recipient address rejected: {why}"),
        Stage::Data => format!("Data command rejected: {why}"),
    };
    // As Postfix: the client as `name[addr]`, the sender, or the recipient.
    let subject = match (stage, f.recipient, f.sender) {
        (Stage::Client, _, _) => format!("<unknown[{}]>: ", f.client),
        (Stage::Sender, _, Some(s)) => format!("<{s}>: "),
        (_, Some((a, _)), _) => format!("<{a}>: "),
        _ => String::new(),
    };
    Verdict::Reject(Reply::new(code, dsn, format!("{subject}{what}")))
}

/// Evaluates one list.
pub fn evaluate(rules: &[Rule], stage: Stage, f: &Facts<'_>) -> Verdict {
    for rule in rules {
        match rule {
            Rule::Permit => return Verdict::Permit,
            Rule::Reject => return reject(stage, f, 554, Dsn::NOT_AUTHORIZED, "Access denied"),
            Rule::PermitMynetworks if f.mynetworks => return Verdict::Permit,
            Rule::PermitSaslAuthenticated if f.authenticated => return Verdict::Permit,
            Rule::RejectUnauthDestination | Rule::DeferUnauthDestination => {
                if let Some((a, class)) = f.recipient
                    && !matches!(class, Class::Local | Class::RelayDomain)
                {
                    let (code, dsn) = if *rule == Rule::RejectUnauthDestination {
                        (554, Dsn::NOT_AUTHORIZED)
                    } else {
                        (454, Dsn::NOT_AUTHORIZED.temporary())
                    };
                    return Verdict::Reject(Reply::new(code, dsn, format!("<{a}>: Relay access denied")));
                }
            }
            Rule::RejectUnlistedRecipient => {
                if f.known == Some(false) {
                    return reject(stage, f, 550, Dsn::BAD_MAILBOX, "User unknown in local recipient table");
                }
            }
            Rule::RejectNonFqdnSender => {
                if let Some(Path::Addr(a)) = f.sender
                    && !a.is_fqdn()
                {
                    return Verdict::Reject(Reply::new(
                        504,
                        Dsn::SYNTAX_ERROR,
                        format!("<{a}>: Sender address rejected: need fully-qualified address"),
                    ));
                }
            }
            Rule::RejectNonFqdnRecipient => {
                if let Some((a, _)) = f.recipient
                    && !a.is_fqdn()
                {
                    return Verdict::Reject(Reply::new(
                        504,
                        Dsn::SYNTAX_ERROR,
                        format!("<{a}>: Recipient address rejected: need fully-qualified address"),
                    ));
                }
            }
            Rule::RejectSenderLoginMismatch
            | Rule::RejectAuthenticatedSenderLoginMismatch
            | Rule::RejectKnownSenderLoginMismatch
            | Rule::RejectUnauthenticatedSenderLoginMismatch => {
                let (auth, allow_unknown, unauth) = match rule {
                    Rule::RejectSenderLoginMismatch => (true, false, true),
                    Rule::RejectAuthenticatedSenderLoginMismatch => (true, false, false),
                    Rule::RejectKnownSenderLoginMismatch => (true, true, true),
                    _ => (false, false, true),
                };
                if let Some(r) = login_mismatch(f, auth, allow_unknown, unauth) {
                    return Verdict::Reject(r);
                }
            }
            Rule::CheckClientAccess(table) => match table.lookup(f.client) {
                Some(AccessAction::Ok) => return Verdict::Permit,
                Some(AccessAction::Reject(text)) => {
                    let why = text.as_deref().unwrap_or("Access denied");
                    return reject(Stage::Client, f, 554, Dsn::NOT_AUTHORIZED, why);
                }
                Some(AccessAction::Dunno) | None => {}
            },
            Rule::PermitMynetworks | Rule::PermitSaslAuthenticated => {}
        }
    }
    Verdict::Permit
}
