//! `./run-tests`' account of tests that cannot run (tests/src/skip.rs): a test whose tool
//! is missing is recorded in the `POSTERN_SKIPPED` file and named and counted in the final
//! summary line (`.ci/test-summary`), and under `CI=true` it fails instead.
//!
//! The test runs this very test binary again as a child that needs a tool no machine has,
//! once without and once with `CI=true`; it does not run `./run-tests` itself.

use postern_tests::repo_root;
use std::process::Command;

const CHILD_ENV: &str = "POSTERN_PREFLIGHT_CHILD";
const TEST: &str = "a_missing_tool_is_a_skip_or_under_ci_a_failure";

/// Runs this test binary's [`TEST`] alone as the child, with `ci` as CI and the skip file.
fn child(ci: Option<&str>, skipped: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("POSTERN_SKIPPED", skipped)
        .env_remove("CI");
    if let Some(v) = ci {
        cmd.env("CI", v);
    }
    cmd.output().expect("run the child test")
}

#[test]
fn a_missing_tool_is_a_skip_or_under_ci_a_failure() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: what a test needing fetchmail does, with a tool that does not exist.
        if !postern_tests::require_tool("postern-no-such-tool", "postern-no-such-package") {
            return;
        }
        panic!("postern-no-such-tool was found");
    }
    let dir = tempfile::tempdir().unwrap();
    let skipped = dir.path().join("skipped.txt");

    // Without CI: the test passes, and says why it did nothing, in the file.
    let out = child(None, &skipped);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let name = format!("run_tests_preflight::{TEST}");
    assert_eq!(
        std::fs::read_to_string(&skipped).unwrap(),
        format!("{name}: postern-no-such-tool missing\n")
    );
    assert!(
        err.contains("postern-no-such-tool is in the Debian package postern-no-such-package: apt-get install postern-no-such-package"),
        "{err}"
    );

    // The final line of ./run-tests: the skip is counted and named, not passed.
    let log = dir.path().join("nextest.log");
    std::fs::write(&log, "     Summary [  12.000s] 3 tests run: 3 passed, 1 skipped\n").unwrap();
    let summary = Command::new(repo_root().join(".ci/test-summary"))
        .arg(&log)
        .arg(&skipped)
        .output()
        .unwrap();
    assert!(summary.status.success());
    assert_eq!(
        String::from_utf8_lossy(&summary.stdout),
        format!("3 tests run: 2 passed, 2 skipped (postern-no-such-tool missing: {name})\n")
    );

    // Under CI=true: a failure naming the tool, and nothing recorded as skipped.
    std::fs::remove_file(&skipped).unwrap();
    let out = child(Some("true"), &skipped);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "under CI a missing tool must fail the test");
    assert!(
        err.contains(&format!(
            "{name}: postern-no-such-tool missing, and CI=true: CI must have everything the tests need (.ci/install-packages)"
        )),
        "{err}"
    );
    assert!(!skipped.exists());
}
