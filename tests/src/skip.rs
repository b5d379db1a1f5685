//! Tests that cannot run on this machine say so where `./run-tests` counts it.
//!
//! A test that needs a Debian package (`fetchmail`, the milters, `pflogsumm`, Dovecot) or
//! root starts with `if !require_tool(...) { return; }` (or [`require_root`], [`skip`]).
//! When the requirement is missing:
//! - under `CI=true` (CI installs every package and runs as root) the test fails: a
//!   missing tool there is a broken CI, not a reason to pass;
//! - otherwise the test returns early and its name and the reason are appended to the
//!   file named by `POSTERN_SKIPPED` (`./run-tests` sets it to `target/skipped.txt` and
//!   prints the list and the count in its final summary line), and `SKIPPED: ...` goes to
//!   standard error for a run without `run-tests`.

use std::io::Write;
use std::path::Path;

/// The environment variable naming the file skipped tests are appended to.
pub const SKIPPED_FILE_ENV: &str = "POSTERN_SKIPPED";

/// `module::test` of the running test: the test binary's name without cargo's hash, and
/// the test thread's name (the test's path, under cargo test and nextest alike).
pub fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_default();
    let thread = std::thread::current().name().unwrap_or("unknown").to_string();
    format!("{binary}::{thread}")
}

/// Whether CI is running us (`CI=true`, as GitHub Actions, GitLab and `.ci/run` set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Records that the current test cannot run, for `reason` (e.g. `fetchmail missing`).
/// Under CI this panics; otherwise it appends `module::test: reason` to the
/// [`SKIPPED_FILE_ENV`] file and returns `false`, for `if !skip(..) { return; }`-style use
/// through [`require_tool`] and [`require_root`].
pub fn skip(reason: &str) -> bool {
    let test = current_test();
    if under_ci() {
        panic!("{test}: {reason}, and CI=true: CI must have everything the tests need (.ci/install-packages)");
    }
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(file) = std::env::var_os(SKIPPED_FILE_ENV) {
        let line = format!("{test}: {reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skipped test in {}: {e}", Path::new(&file).display());
        }
    }
    false
}

/// Whether `tool` (a program name looked up in `PATH`, or an absolute path) is here; when
/// not, [`skip`]s with `TOOL missing` (and says which Debian package has it).
pub fn require_tool(tool: &str, package: &str) -> bool {
    if find_tool(tool) {
        return true;
    }
    eprintln!(
        "{tool} is in the Debian package {package}: apt-get install {package} (.ci/install-packages installs them all)"
    );
    skip(&format!("{tool} missing"))
}

/// Whether this test runs as root; when not, [`skip`]s with `needs root: WHY`.
pub fn require_root(why: &str) -> bool {
    if crate::is_root() {
        return true;
    }
    skip(&format!("needs root: {why}"))
}

fn find_tool(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}
