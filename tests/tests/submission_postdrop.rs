//! postdrop on its own (hostile or broken input leaves nothing in maildrop/) and
//! `newaliases` / `sendmail -bi` (checks alias_maps).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use postern_lib::maildrop::{Envelope, Writer};
use postern_tests::{Instance, bin};

fn run_with_input(program: &Path, args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("output")
}

fn maildrop_names(inst: &Instance) -> Vec<String> {
    std::fs::read_dir(inst.queue().join("maildrop"))
        .expect("maildrop")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn postdrop_refuses_bad_and_incomplete_input_and_keeps_good_input() {
    let inst = Instance::new("", &[]);
    std::fs::create_dir_all(inst.queue().join("maildrop")).expect("mkdir maildrop");
    let etc = inst.etc();
    let etc = etc.to_str().expect("utf-8");
    let env = Envelope {
        sender: "alice".into(),
        recipients: vec!["bob@example.test".into()],
        ..Envelope::default()
    };
    let mut w = Writer::new(Vec::new(), &env).expect("writer");
    w.write_content(b"Subject: x\n\nbody\n").expect("content");
    let good = w.finish().expect("finish");

    let out = run_with_input(&bin("postdrop"), &["-c", etc], &[], b"MAIL FROM:<x>\r\n");
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad magic"));
    // The writer died half-way: no end record.
    let out = run_with_input(&bin("postdrop"), &["-c", etc], &[], &good[..good.len() - 5]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("premature end of input"));
    // A forged envelope field is refused by name.
    let forged = String::from_utf8_lossy(&good).replace("\"sender\"", "\"evil\"  ");
    let out = run_with_input(&bin("postdrop"), &["-c", etc], &[], forged.as_bytes());
    assert_eq!(out.status.code(), Some(65));
    assert!(
        maildrop_names(&inst).is_empty(),
        "left behind: {:?}",
        maildrop_names(&inst)
    );

    let out = run_with_input(&bin("postdrop"), &[], &[("POSTERN_CONFIG", etc)], &good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = maildrop_names(&inst);
    assert_eq!(names.len(), 1);
    assert!(postern_lib::queue_id::QueueId::parse(&names[0]).is_ok(), "{names:?}");
}

#[test]
fn newaliases_checks_the_aliases_file() {
    let inst = Instance::new("", &[]);
    let etc = inst.etc();
    let etc_s = etc.to_str().expect("utf-8");
    std::fs::write(etc.join("aliases"), "postmaster: root\nstaff: alice,\n  bob\n").expect("aliases");
    let out = run_with_input(&bin("sendmail"), &["-C", etc_s, "-bi"], &[], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = inst.root.path().join("newaliases");
    std::os::unix::fs::symlink(bin("sendmail"), &link).expect("symlink");
    let out = run_with_input(&link, &[], &[("POSTERN_CONFIG", etc_s)], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(etc.join("aliases"), "postmaster: root\n  continued\nbroken line\n").expect("aliases");
    let out = run_with_input(&link, &[], &[("POSTERN_CONFIG", etc_s)], b"");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("newaliases: fatal: ") && err.contains("line 3"),
        "{err}"
    );
}
