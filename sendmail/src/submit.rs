//! Submitting a message: build the envelope, start `postdrop` with a pipe on its standard
//! input, and stream the maildrop format into it while reading our standard input.
//! postdrop's exit status becomes ours; its one-line diagnostics go straight to our
//! standard error.

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use postern_lib::maildrop::{Envelope, Writer};

use crate::args::Args;
use crate::body::Body;
use crate::{EX_NOINPUT, EX_NOUSER, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE, Failure};

/// Submits the message on standard input through `daemon_dir/postdrop`.
pub fn submit(args: &Args, config_dir: &Path, daemon_dir: &Path) -> Result<(), Failure> {
    if args.recipients.is_empty() && !args.extract_recipients {
        return Err((
            EX_USAGE,
            "recipient addresses must be specified on the command line or via the -t option".into(),
        ));
    }
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten();
    let sender = match (&args.sender, &user) {
        (Some(s), _) => s.clone(),
        (None, Some(u)) => u.name.clone(),
        (None, None) => return Err((EX_NOUSER, format!("no login name found for user ID {uid}"))),
    };
    let full_name = full_name(args, &user);
    let env = Envelope {
        sender,
        recipients: args.recipients.clone(),
        extract_recipients: args.extract_recipients,
        full_name,
        uid: Some(uid.as_raw()),
    };
    env.validate().map_err(|e| (EX_USAGE, e.to_string()))?;

    let program = daemon_dir.join("postdrop");
    let mut child = Command::new(&program)
        .arg("-c")
        .arg(config_dir)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| (EX_UNAVAILABLE, format!("execute {}: {e}", program.display())))?;
    let pipe = child
        .stdin
        .take()
        .ok_or((EX_SOFTWARE, "no pipe to postdrop".to_string()))?;
    let fed = feed(&env, args.ignore_dots, std::io::stdin().lock(), BufWriter::new(pipe));
    let status = child
        .wait()
        .map_err(|e| (EX_SOFTWARE, format!("wait for postdrop: {e}")))?;
    match (fed, status.code()) {
        (Err(ours), _) if !ours.1.is_empty() => Err(ours),
        (fed, Some(0)) => fed,
        // postdrop has said why on standard error.
        (_, Some(code)) => Err((u8::try_from(code).unwrap_or(EX_SOFTWARE), String::new())),
        (_, None) => Err((EX_SOFTWARE, format!("postdrop terminated abnormally ({status})"))),
    }
}

/// Writes the maildrop stream for `input` to `out`. A write failure means postdrop has
/// gone (it says why); then we stop and report nothing more.
fn feed(env: &Envelope, ignore_dots: bool, mut input: impl Read, out: impl Write) -> Result<(), Failure> {
    let gone = |_| (EX_SOFTWARE, String::new());
    let mut w = Writer::new(out, env).map_err(gone)?;
    let mut body = Body::new(ignore_dots);
    let mut buf = vec![0u8; 64 * 1024];
    let mut content = Vec::with_capacity(buf.len() + 2);
    while !body.is_done() {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Dropping the writer without its end record makes postdrop refuse the
            // incomplete message: nothing is queued.
            Err(e) => return Err((EX_NOINPUT, format!("read standard input: {e}"))),
        };
        body.push(buf.get(..n).unwrap_or_default(), &mut content);
        w.write_content(&content).map_err(gone)?;
        content.clear();
    }
    body.finish(&mut content);
    w.write_content(&content).map_err(gone)?;
    w.finish().map_err(gone)?;
    Ok(())
}

/// The full name for a `From:` header cleanup generates: `-F`, else `$NAME`, else the
/// GECOS field.
pub fn full_name(args: &Args, user: &Option<nix::unistd::User>) -> Option<String> {
    args.full_name
        .clone()
        .or_else(|| std::env::var("NAME").ok().filter(|n| !n.is_empty()))
        .or_else(|| user.as_ref().and_then(gecos_name))
        .filter(|n| !n.chars().any(char::is_control))
}

/// The full name from the GECOS field: its first comma-separated part, `&` standing for
/// the capitalised login name.
fn gecos_name(u: &nix::unistd::User) -> Option<String> {
    let gecos = u.gecos.to_str().ok()?;
    let first = gecos.split(',').next()?.trim();
    if first.is_empty() {
        return None;
    }
    let mut cap = u.name.clone();
    if let Some(c) = cap.get_mut(..1) {
        c.make_ascii_uppercase();
    }
    Some(first.replace('&', &cap))
}
