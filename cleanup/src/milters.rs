//! Running the configured milters over a complete message.

use std::collections::BTreeMap;
use std::net::IpAddr;

use postern_lib::config::{MainConfig, MilterAction};
use postern_lib::dsn::Dsn;
use postern_lib::queue_file::attr;
use postern_milter::{self as milter, Endpoint, Message, Timeouts, Transaction, Verdict};

use crate::service::Stop;

/// The SMTP facts milters see, from the submission's attributes.
pub fn transaction(attrs: &BTreeMap<String, String>, main: &MainConfig, qid: &str, local: bool) -> Transaction {
    let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
    let client_addr: Option<IpAddr> = attrs.get(attr::CLIENT_ADDR).and_then(|a| a.parse().ok());
    let client_name = match (local, attrs.get(attr::CLIENT_NAME)) {
        (_, Some(n)) if !n.is_empty() => n.clone(),
        (true, _) => "localhost".to_owned(),
        (false, _) => "unknown".to_owned(),
    };
    let addr_text = client_addr.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1".into());
    let mut macros = vec![
        ("j".to_owned(), main.myhostname.clone()),
        ("_".to_owned(), format!("{client_name} [{addr_text}]")),
        ("i".to_owned(), qid.to_owned()),
        ("{daemon_name}".to_owned(), main.myhostname.clone()),
        ("v".to_owned(), "Postern".to_owned()),
        ("{client_addr}".to_owned(), addr_text),
        ("{client_name}".to_owned(), client_name.clone()),
    ];
    let user = get(attr::SASL_USERNAME);
    if !user.is_empty() {
        macros.push(("{auth_authen}".to_owned(), user));
        macros.push((
            "{auth_type}".to_owned(),
            attrs.get("sasl_method").cloned().unwrap_or_else(|| "PLAIN".into()),
        ));
    }
    let mut mail_args = Vec::new();
    if let Some(s) = attrs.get(attr::SIZE) {
        mail_args.push(format!("SIZE={s}"));
    }
    if let Some(b) = attrs.get(attr::BODY) {
        mail_args.push(format!("BODY={b}"));
    }
    Transaction {
        client_name,
        client_addr,
        client_port: attrs.get("client_port").and_then(|p| p.parse().ok()).unwrap_or(0),
        helo: get(attr::HELO),
        mail_args,
        macros,
    }
}

/// Runs every milter in `list` in order over `msg`, applying each one's changes before the
/// next sees the message.
pub fn run_all(list: &[String], main: &MainConfig, tx: &Transaction, msg: &mut Message, qid: &str) -> Result<(), Stop> {
    let timeouts = Timeouts {
        connect: main.milter_connect_timeout.duration(),
        command: main.milter_command_timeout.duration(),
        content: main.milter_content_timeout.duration(),
    };
    let max_body = usize::try_from(main.message_size_limit).unwrap_or(usize::MAX);
    for spec in list {
        let result = Endpoint::parse(spec)
            .and_then(|ep| milter::run(&ep, timeouts, tx, msg))
            .and_then(|out| {
                if matches!(out.verdict, Verdict::Continue | Verdict::Accept) {
                    msg.apply(&out.modifications, max_body)?;
                }
                Ok(out.verdict)
            });
        match result {
            Ok(Verdict::Continue | Verdict::Accept) => {}
            Ok(Verdict::Reject { code, dsn, text }) => {
                tracing::info!("{qid}: milter-reject: END-OF-MESSAGE from {spec}: {code} {dsn} {text}");
                // The milter's code is checked (digits, class 2, 4 or 5) by its reader.
                let dsn = dsn.parse().unwrap_or(Dsn::NOT_AUTHORIZED);
                return Err(Stop::Reject(code, dsn, text));
            }
            Ok(Verdict::TempFail { code, dsn, text }) => {
                tracing::info!("{qid}: milter-reject: END-OF-MESSAGE from {spec}: {code} {dsn} {text}");
                let dsn = dsn.parse().unwrap_or(Dsn::MAIL_SYSTEM);
                return Err(Stop::Temp(code, dsn, text));
            }
            Ok(Verdict::Discard) => {
                tracing::info!("{qid}: milter-discard: END-OF-MESSAGE from {spec}");
                return Err(Stop::Discard);
            }
            Err(e) => {
                let action = main.milter_default_action;
                tracing::warn!("{qid}: milter {spec}: {e}; applying milter_default_action={action}");
                match action {
                    MilterAction::Accept => {}
                    MilterAction::Reject => {
                        return Err(Stop::Reject(550, Dsn::PROTOCOL, "Service unavailable".into()));
                    }
                    MilterAction::Quarantine => msg.quarantine = Some(format!("milter {spec} failed")),
                    MilterAction::Tempfail => {
                        return Err(Stop::temp(
                            Dsn::NOT_AUTHORIZED.temporary(),
                            "Service unavailable - try again later",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
