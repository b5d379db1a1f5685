//! `postern mirror` and the queue mirror's part of `postern status` (issue 16: two-node
//! durability of an active-standby pair; see the `mirror` crate).
//!
//! ```text
//! postern mirror status                  peer, reachable or failing since when, copies held
//! postern mirror adopt [--if-peer-down]  the dead peer's copies into incoming/, then qmgr
//! postern mirror rejoin                  before master starts: drop what the peer adopted
//! ```
//!
//! `adopt` moves every copy in `QUEUE_DIR/mirror/` into `incoming/` under its queue ID
//! (a queue ID already queued here is left in `mirror/` and reported) and wakes qmgr. Run
//! it only when the peer is gone: a live peer delivers those messages itself, so adopting
//! them would deliver them twice. `--if-peer-down` (what the keepalived notify hook runs on
//! becoming MASTER) first pings the peer's mirror service with the shared secret, bounded
//! by `queue_mirror_timeout` (at most 5 s), and adopts nothing if it answers.
//!
//! `rejoin` ([`mirror::rejoin`]) asks the peer which of this node's queued messages it
//! adopted while this node was down and removes them here, and drops the copies of the
//! peer's messages the peer has finished. `postern start` runs it before master whenever
//! `queue_mirror_peer` is set, so a node that comes back with its disk intact delivers
//! nothing twice; a peer that does not answer (bounded like the ping) is reported and the
//! start goes on. It refuses to run while master does (qmgr could be delivering).

use mirror::store::{self, MIRROR_DIR};
use postern_lib::config::Config;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: postern mirror {status|adopt [--if-peer-down]|rejoin}";

/// Runs `postern mirror ARGS`.
pub fn run(dir: &Path, rest: &[String]) -> Result<ExitCode, String> {
    let config = Config::load(dir).map_err(|e| e.to_string())?;
    let args: Vec<&str> = rest.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["status"] => {
            print_status(&config, true);
            Ok(ExitCode::SUCCESS)
        }
        ["adopt"] => adopt(&config, false),
        ["adopt", "--if-peer-down"] => adopt(&config, true),
        ["rejoin"] => {
            if let Some(pid) = crate::control::running_master(&config) {
                return Err(format!(
                    "master runs (pid {pid}): rejoin before `postern start` (which runs it itself)"
                ));
            }
            Ok(if rejoin(&config, &mut std::io::stdout()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        _ => Err(USAGE.into()),
    }
}

/// The rejoin ([`mirror::rejoin`]) with its report on `out`, one `mirror: rejoin: ...`
/// line per fact; false when the peer could not be asked or a file could not be removed.
/// Nothing happens (true) when the mirror is off.
pub fn rejoin(config: &Config, out: &mut impl std::io::Write) -> bool {
    let main = &config.main;
    if main.queue_mirror_peer.is_empty() {
        return true;
    }
    let peer = &main.queue_mirror_peer;
    let budget = main.queue_mirror_timeout.duration().min(Duration::from_secs(5));
    let result = connect_peer(config, Instant::now() + budget)
        .and_then(|mut c| mirror::rejoin::run(main.queue_directory.path(), &mut c, budget));
    match result {
        Ok(r) => {
            for (id, queue) in &r.removed {
                let _ = writeln!(
                    out,
                    "mirror: rejoin: {id}: adopted and delivered by the peer {peer} while this node was down; removed from {queue}/"
                );
            }
            for (id, why) in &r.failed {
                let _ = writeln!(
                    out,
                    "mirror: rejoin: {id}: adopted by the peer but cannot be removed here: {why}"
                );
            }
            let _ = writeln!(
                out,
                "mirror: rejoin: peer {peer} answered: {} message(s) it adopted removed here; {} copies of its messages kept, {} it finished dropped",
                r.removed.len(),
                r.copies_kept,
                r.copies_dropped
            );
            r.failed.is_empty()
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "mirror: rejoin: peer {peer} not asked ({why}); the queue stays as it is: a message the peer adopted while this node was down would be delivered again"
            );
            false
        }
    }
}

fn adopt(config: &Config, if_down: bool) -> Result<ExitCode, String> {
    let main = &config.main;
    if if_down && !main.queue_mirror_peer.is_empty() {
        match ping_peer(config) {
            Ok(()) => {
                println!(
                    "mirror: peer {} answers; its messages are its own: nothing adopted",
                    main.queue_mirror_peer
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(why) => println!(
                "mirror: peer {} is down ({why}); adopting its messages",
                main.queue_mirror_peer
            ),
        }
    }
    let queue_dir = main.queue_directory.path();
    let r = store::adopt(queue_dir);
    println!("mirror: adopted {} message(s) into incoming/", r.moved.len());
    for id in &r.collisions {
        println!("mirror: {id}: already queued here; left in {MIRROR_DIR}/");
    }
    for (id, why) in &r.failed {
        println!("mirror: {id}: not adopted: {why}");
    }
    if !r.moved.is_empty() {
        // qmgr also finds them on its next scan of incoming/; this is sooner.
        let _ = postern_lib::proto::trigger::send(
            &queue_dir.join(postern_lib::proto::trigger::QMGR_SOCKET),
            postern_lib::proto::trigger::ARRIVED,
        );
    }
    Ok(if r.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Asks the peer's mirror service whether it is there, with the shared secret.
fn ping_peer(config: &Config) -> Result<(), String> {
    let deadline = Instant::now() + config.main.queue_mirror_timeout.duration().min(Duration::from_secs(5));
    connect_peer(config, deadline)?.ping(deadline)
}

/// An authenticated connection to the peer's mirror service, within `deadline`.
fn connect_peer(config: &Config, deadline: Instant) -> Result<mirror::wire::PeerConn, String> {
    let main = &config.main;
    let path = main.queue_mirror_secret_file.path();
    let bytes = std::fs::read(path).map_err(|e| format!("queue_mirror_secret_file {}: {e}", path.display()))?;
    let key = mirror::wire::key(&mirror::wire::parse_secret(&bytes)?);
    mirror::wire::PeerConn::connect(&main.queue_mirror_peer, &key, deadline)
}

/// The mirror's lines of `postern status` (nothing on a host without a mirror, unless
/// `always`).
pub fn print_status(config: &Config, always: bool) {
    let main = &config.main;
    let queue_dir = main.queue_directory.path();
    let (held, bytes) = store::held(&queue_dir.join(MIRROR_DIR));
    if main.queue_mirror_peer.is_empty() && held == 0 && !always {
        return;
    }
    println!();
    if main.queue_mirror_peer.is_empty() {
        println!("queue mirror: off (queue_mirror_peer is not set)");
    } else {
        let state = match mirror::local::status(queue_dir, Duration::from_secs(5)) {
            Ok(s) => match (s.reachable, s.failing_since) {
                (_, Some(since)) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let what = if main.queue_mirror_unreachable == "degraded" {
                        "DEGRADED (accepting alone)"
                    } else {
                        "UNREACHABLE (deferring mail)"
                    };
                    format!(
                        "{what} since {} ({} s ago): {}",
                        postern_lib::date::rfc5322_secs(since),
                        now.saturating_sub(since),
                        s.last_error.unwrap_or_default()
                    )
                }
                (Some(true), None) => "reachable".to_string(),
                _ => "not yet contacted".to_string(),
            },
            Err(why) => format!("unknown: {why}"),
        };
        println!(
            "queue mirror: peer {} {state}; when unreachable: {}",
            main.queue_mirror_peer, main.queue_mirror_unreachable
        );
    }
    println!("queue mirror: {held} copies of the peer's messages held ({bytes} bytes)");
}
