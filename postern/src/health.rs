//! `postern status --health [--timeout SECS] [--stuck-after SECS]`: one exit status that
//! means "this node is accepting and delivering mail", for a cluster watcher
//! (keepalived's `vrrp_script`, see `etc/keepalived/`) or a load balancer — not merely
//! "a process exists".
//!
//! | exit | meaning | checked how |
//! | --- | --- | --- |
//! | 0 | healthy: accepting and delivering | everything below passed |
//! | 1 | master is not running or does not answer | the pid-file lock; a status request on master's control socket |
//! | 2 | not accepting | every inet smtpd listener this host can reach answers a `220` greeting; smtpd or cleanup not throttled |
//! | 3 | not delivering | qmgr has a process and is not throttled, no other service throttled; no file waits in `maildrop/` or `incoming/` longer than `--stuck-after` (default 600 s) |
//! | 4 | the check itself did not finish within `--timeout` (default 5 s) | a watchdog thread |
//!
//! Every wait is bounded: connects, reads and the control request get what remains of
//! `--timeout`, and a watchdog ends the process with exit 4 if anything (a hung
//! filesystem, a stalled peer) still holds it then, so a hung check can never hang the
//! watcher that runs it. One line on standard output says what was found (`healthy: ...`
//! or `unhealthy: ...`).
//!
//! Which smtpd listeners are probed: a wildcard address (`0.0.0.0`, `::`) through the
//! loopback address of its family; a loopback or other address of this host as it is; an
//! address this host does not hold (the service address of an active-standby pair on the
//! standby, listened on with `net.ipv4.ip_nonlocal_bind`) is skipped, since a connection
//! to it would reach the other node. At least one listener must be probed, so such a
//! pair's smtpd also listens on loopback (`listen = ["198.18.1.100:25", "127.0.0.1:25"]`).

use postern_lib::config::{Config, parse_inet};
use postern_lib::master_control::{ControlReply, ServiceReport};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// Exit status: master not running or not answering.
const NOT_RUNNING: u8 = 1;
/// Exit status: not accepting.
const NOT_ACCEPTING: u8 = 2;
/// Exit status: not delivering.
const NOT_DELIVERING: u8 = 3;
/// Exit status: the check did not finish in time.
const TIMED_OUT: u8 = 4;

/// Longest greeting line read (RFC 5321 reply lines are at most 512 octets).
const MAX_LINE: usize = 512;
/// Most lines of a multi-line greeting read.
const MAX_LINES: usize = 20;

/// The options of `status --health`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The bound on the whole check.
    pub timeout: Duration,
    /// A file waiting this long in `maildrop/` or `incoming/` means a stuck queue.
    pub stuck_after: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: Duration::from_secs(5),
            stuck_after: Duration::from_secs(600),
        }
    }
}

/// Parses the arguments after `--health`.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let slot = match a.as_str() {
            "--timeout" => &mut o.timeout,
            "--stuck-after" => &mut o.stuck_after,
            other => return Err(format!("unexpected argument {other:?}")),
        };
        let v = it.next().ok_or_else(|| format!("{a} needs a number of seconds"))?;
        let secs: f64 = v
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .ok_or_else(|| format!("{a} {v:?}: a number of seconds, above 0 and at most 86400"))?;
        *slot = Duration::from_secs_f64(secs);
    }
    Ok(o)
}

/// Runs the check and prints its one line; the exit status is the table's.
pub fn run(dir: &Path, opts: Options) -> Result<ExitCode, String> {
    let timeout = opts.timeout;
    std::thread::spawn(move || {
        std::thread::sleep(timeout + Duration::from_millis(250));
        say(&format!(
            "unhealthy: the health check did not finish within {timeout:?}"
        ));
        std::process::exit(i32::from(TIMED_OUT));
    });
    let (code, line) = match check(dir, opts) {
        Ok(found) => (0, format!("healthy: {found}")),
        Err((code, why)) => (code, format!("unhealthy: {why}")),
    };
    say(&line);
    Ok(ExitCode::from(code))
}

/// The one line on standard output; a closed stdout (`| head -0`) changes nothing: the
/// exit status is the answer.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The checks in order; `Ok` says what was found, `Err` the exit status and why.
fn check(dir: &Path, opts: Options) -> Result<String, (u8, String)> {
    let deadline = Instant::now() + opts.timeout;
    let config = Config::load(dir).map_err(|e| (NOT_RUNNING, format!("configuration: {e}")))?;
    let Some(pid) = crate::control::running_master(&config) else {
        return Err((NOT_RUNNING, "master is not running".into()));
    };
    let services =
        ask(&config, deadline).map_err(|e| (NOT_RUNNING, format!("master (pid {pid}) does not answer: {e}")))?;
    check_processes(&services)?;
    let probed = check_smtpd(&services, deadline)?;
    check_queue(Path::new(&config.main.queue_directory), opts.stuck_after)?;
    Ok(format!(
        "master pid {pid}, smtpd greets on {}, qmgr running, queue moving",
        probed.join(" ")
    ))
}

/// The program name of a service (`smtpd` for `/usr/libexec/postern/smtpd`).
fn program(s: &ServiceReport) -> &str {
    Path::new(&s.command).file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// qmgr runs; nothing is throttled (a daemon that keeps failing).
fn check_processes(services: &[ServiceReport]) -> Result<(), (u8, String)> {
    if let Some(s) = services.iter().find(|s| s.throttled_for.is_some()) {
        let code = if matches!(program(s), "smtpd" | "cleanup") {
            NOT_ACCEPTING
        } else {
            NOT_DELIVERING
        };
        return Err((
            code,
            format!("service {} is throttled (its processes keep failing)", s.key),
        ));
    }
    match services.iter().find(|s| program(s) == "qmgr") {
        None => Err((NOT_DELIVERING, "no qmgr service is configured".into())),
        Some(q) if q.processes == 0 => Err((NOT_DELIVERING, format!("service {} has no process", q.key))),
        Some(_) => Ok(()),
    }
}

/// Every reachable inet smtpd listener greets with 220; returns the addresses probed.
fn check_smtpd(services: &[ServiceReport], deadline: Instant) -> Result<Vec<String>, (u8, String)> {
    let mut probed = Vec::new();
    for s in services.iter().filter(|s| program(s) == "smtpd") {
        for addr in &s.listen {
            let Ok(sa) = parse_inet(addr) else { continue };
            let Some(target) = probe_target(sa) else { continue };
            greet(target, deadline).map_err(|e| (NOT_ACCEPTING, format!("service {} on {target}: {e}", s.key)))?;
            probed.push(target.to_string());
        }
    }
    if probed.is_empty() {
        return Err((
            NOT_ACCEPTING,
            "no smtpd listener on an address of this host to probe (add a loopback address to its listen list)".into(),
        ));
    }
    Ok(probed)
}

/// Where to probe a listener bound to `sa`, or `None` when this host does not hold its
/// address (a connection would leave the host).
fn probe_target(sa: SocketAddr) -> Option<SocketAddr> {
    let ip = match sa.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip if ip.is_loopback() => ip,
        ip if is_local(ip, sa.port()) => ip,
        _ => return None,
    };
    Some(SocketAddr::new(ip, sa.port()))
}

/// Whether `ip` is an address of this host: a datagram socket connected to it picks the
/// address itself as its source only when the route to it is local. No packet is sent.
fn is_local(ip: IpAddr, port: u16) -> bool {
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(any)
        .and_then(|u| u.connect((ip, port)).and_then(|_| u.local_addr()))
        .is_ok_and(|l| l.ip() == ip)
}

/// Connects to `target`, reads the greeting up to its last line, which must be `220 `.
fn greet(target: SocketAddr, deadline: Instant) -> Result<(), String> {
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no time left for {what}"))
    };
    let mut s = TcpStream::connect_timeout(&target, left("the connect")?).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(MAX_LINE);
    for _ in 0..MAX_LINES {
        let line = read_line(&mut s, &mut buf, deadline).map_err(|e| format!("reading the greeting: {e}"))?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        match text.get(..4) {
            Some("220-") => continue,
            Some("220 ") => {
                let _ = s.write_all(b"QUIT\r\n");
                return Ok(());
            }
            _ => return Err(format!("greeting is not 220: {:?}", truncate(text, 80))),
        }
    }
    Err(format!("greeting longer than {MAX_LINES} lines"))
}

/// One CRLF- or LF-ended line of at most [`MAX_LINE`] bytes, each read bounded by
/// `deadline`; `buf` keeps what was read past the line.
fn read_line(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<Vec<u8>, String> {
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(nl + 1);
            return Ok(std::mem::replace(buf, rest));
        }
        if buf.len() > MAX_LINE {
            return Err(format!("line longer than {MAX_LINE} bytes"));
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("timed out")?;
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let mut chunk = [0u8; MAX_LINE];
        match s.read(&mut chunk) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("timed out".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// No file has waited in `maildrop/` (pickup) or `incoming/` (qmgr) longer than `stuck_after`.
fn check_queue(queue_dir: &Path, stuck_after: Duration) -> Result<(), (u8, String)> {
    let now = SystemTime::now();
    for queue in ["maildrop", "incoming"] {
        let files = postern_lib::queue_scan::queue_files(queue_dir, queue)
            .map_err(|e| (NOT_DELIVERING, format!("cannot read the {queue} queue: {e}")))?;
        let oldest = files
            .iter()
            .filter_map(|f| std::fs::symlink_metadata(&f.path).and_then(|m| m.modified()).ok())
            .min();
        if let Some(age) = oldest.and_then(|t| now.duration_since(t).ok())
            && age > stuck_after
        {
            return Err((
                NOT_DELIVERING,
                format!(
                    "the {queue} queue is stuck: its oldest file waits {} s (more than {} s)",
                    age.as_secs(),
                    stuck_after.as_secs()
                ),
            ));
        }
    }
    Ok(())
}

/// Master's status reply, waiting at most until `deadline`.
fn ask(config: &Config, deadline: Instant) -> Result<Vec<ServiceReport>, String> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or("timed out")?;
    let ControlReply::Status { services, .. } = crate::control::ask(config, left)?;
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_bound() {
        let o = parse(&["--timeout".into(), "2.5".into()]).unwrap();
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.stuck_after, Duration::from_secs(600));
        assert!(parse(&["--timeout".into()]).is_err());
        assert!(parse(&["--timeout".into(), "0".into()]).is_err());
        assert!(parse(&["--timeout".into(), "nan".into()]).is_err());
        assert!(parse(&["--stuck-after".into(), "1e9".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }

    #[test]
    fn probe_targets() {
        let t = |s: &str| probe_target(s.parse().unwrap()).map(|a| a.to_string());
        assert_eq!(t("0.0.0.0:25").as_deref(), Some("127.0.0.1:25"));
        assert_eq!(t("[::]:25").as_deref(), Some("[::1]:25"));
        assert_eq!(t("127.0.0.2:25").as_deref(), Some("127.0.0.2:25"));
        // TEST-NET-3: no host holds it.
        assert_eq!(t("203.0.113.7:25"), None);
    }

    #[test]
    fn greeting_must_be_220() {
        let serve = |reply: &'static [u8]| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = l.local_addr().unwrap();
            std::thread::spawn(move || {
                if let Ok((mut c, _)) = l.accept() {
                    let _ = c.write_all(reply);
                    std::thread::sleep(Duration::from_millis(1500));
                }
            });
            a
        };
        let soon = || Instant::now() + Duration::from_millis(800);
        assert!(greet(serve(b"220-a\r\n220 ok\r\n"), soon()).is_ok());
        assert!(greet(serve(b"421 busy\r\n"), soon()).unwrap_err().contains("not 220"));
        // A server that never finishes its greeting: the deadline ends the wait.
        let t0 = Instant::now();
        assert!(greet(serve(b"220"), soon()).unwrap_err().contains("timed out"));
        assert!(t0.elapsed() < Duration::from_millis(1400));
    }
}
