//! `postern mirror` and the queue mirror's part of `postern status` (issue 16: two-node
//! durability of an active-standby pair; see the `mirror` crate).
//!
//! ```text
//! postern mirror status                  peer, reachable or failing since when, copies held
//! postern mirror adopt [--if-peer-down]  the dead peer's copies into incoming/, then qmgr
//! ```
//!
//! `adopt` moves every copy in `QUEUE_DIR/mirror/` into `incoming/` under its queue ID
//! (a queue ID already queued here is left in `mirror/` and reported) and wakes qmgr. Run
//! it only when the peer is gone: a live peer delivers those messages itself, so adopting
//! them would deliver them twice. `--if-peer-down` (what the keepalived notify hook runs on
//! becoming MASTER) first pings the peer's mirror service with the shared secret, bounded
//! by `queue_mirror_timeout` (at most 5 s), and adopts nothing if it answers.

use mirror::store::{self, MIRROR_DIR};
use postern_lib::config::Config;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: postern mirror {status|adopt [--if-peer-down]}";

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
        _ => Err(USAGE.into()),
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
    let main = &config.main;
    let path = main.queue_mirror_secret_file.path();
    let bytes = std::fs::read(path).map_err(|e| format!("queue_mirror_secret_file {}: {e}", path.display()))?;
    let key = mirror::wire::key(&mirror::wire::parse_secret(&bytes)?);
    let deadline = Instant::now() + main.queue_mirror_timeout.duration().min(Duration::from_secs(5));
    mirror::wire::PeerConn::connect(&main.queue_mirror_peer, &key, deadline)?.ping(deadline)
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
