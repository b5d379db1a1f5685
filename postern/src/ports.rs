//! The listen addresses of the inet services, as `postern start` and `postern check` see
//! them: which are open (the lines `postern start` prints) and, before master runs, which
//! cannot be opened — each problem one plain line with its cause and the fix.

use postern_lib::config::{Config, Service, ServiceType, parse_inet};
use std::io::ErrorKind;
use std::net::SocketAddr;

/// The inet services and their addresses, in master.toml's order.
pub fn listeners(cfg: &Config) -> impl Iterator<Item = (&Service, &str)> {
    cfg.services
        .iter()
        .filter(|s| s.entry.kind == ServiceType::Inet)
        .flat_map(|s| s.listen.iter().map(move |a| (s, a.as_str())))
}

/// Tries to bind every inet address (and lets go at once); one line per address that
/// cannot be used.
pub fn problems(cfg: &Config) -> Vec<String> {
    listeners(cfg)
        .filter_map(|(svc, addr)| {
            let sa = match parse_inet(addr) {
                Ok(sa) => sa,
                Err(e) => return Some(format!("service {}: {e}", svc.key())),
            };
            std::net::TcpListener::bind(sa)
                .err()
                .map(|e| explain(&svc.key(), sa, e.kind(), &e.to_string()))
        })
        .collect()
}

/// A failure to listen on `addr` for service `key` (`NAME/TYPE`) in plain words, with
/// the `postern config set` line that changes it.
pub fn explain(key: &str, addr: SocketAddr, kind: ErrorKind, detail: &str) -> String {
    let fix = format!(
        "change it with: postern config set '{key}.listen={}'",
        with_port_placeholder(addr)
    );
    let port = addr.port();
    match kind {
        ErrorKind::AddrInUse => format!("port {port} is in use by another program; {fix}"),
        ErrorKind::PermissionDenied if port < 1024 => {
            format!("port {port} is below 1024 and needs root; run as root or {fix}")
        }
        ErrorKind::AddrNotAvailable => format!(
            "address {} is not an address of this host (service {key}); {fix} \
             (a service address that keepalived moves here later needs sysctl net.ipv4.ip_nonlocal_bind=1)",
            addr.ip()
        ),
        _ => format!(
            "service {key}: cannot listen on {addr}: {}; {fix}",
            postern_lib::log::plain_error(&detail)
        ),
    }
}

/// `127.0.0.1:NNNN` / `[::1]:NNNN`: the address with the port to be chosen.
fn with_port_placeholder(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:NNNN", a.ip()),
        SocketAddr::V6(a) => format!("[{}]:NNNN", a.ip()),
    }
}

/// Master's one-line reason, made plain: a log line's stamp and program are dropped, and
/// a listen failure (`service imap/inet: cannot listen on 127.0.0.1:1143: Address already
/// in use (os error 98)`) becomes [`explain`]'s sentence.
pub fn plain_master_error(line: &str) -> String {
    let text = line.split_once("fatal: ").map_or(line, |(_, t)| t).trim();
    let text = text.trim_start_matches("postern/master: ");
    if let Some((svc, rest)) = text
        .strip_prefix("service ")
        .and_then(|r| r.split_once(": cannot listen on "))
        && let Some((addr, why)) = rest.split_once(": ")
        && let Ok(sa) = addr.parse::<SocketAddr>()
    {
        let kind = if why.contains("os error 98") {
            ErrorKind::AddrInUse
        } else if why.contains("os error 13") {
            ErrorKind::PermissionDenied
        } else if why.contains("os error 99") {
            ErrorKind::AddrNotAvailable
        } else {
            ErrorKind::Other
        };
        return explain(svc, sa, kind, why);
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_in_use_is_one_plain_line_with_the_fix() {
        let line = "Dec  6 19:03:42 vm postern/master[31884]: fatal: service imap/inet: cannot listen on 127.0.0.1:1143: Address already in use (os error 98)";
        assert_eq!(
            plain_master_error(line),
            "port 1143 is in use by another program; change it with: postern config set 'imap/inet.listen=127.0.0.1:NNNN'"
        );
        assert_eq!(
            explain(
                "smtp/inet",
                "[::1]:25".parse().unwrap(),
                ErrorKind::PermissionDenied,
                ""
            ),
            "port 25 is below 1024 and needs root; run as root or change it with: postern config set 'smtp/inet.listen=[::1]:NNNN'"
        );
        assert_eq!(
            postern_lib::log::plain_error(&"Connection refused (os error 111)"),
            "Connection refused"
        );
        assert_eq!(
            plain_master_error("postern/master: fatal: something else"),
            "something else"
        );
    }
}
