//! `sendmail -bs`: SMTP on standard input and output, as Postfix's `smtpd -S`. smtpd's
//! protocol engine runs the session ([`smtpd_engine::stdio`]); each message it accepts is handed
//! to `postdrop` exactly as a plain `sendmail` submission is (the same maildrop stream,
//! CRLF turned into LF), so postdrop stays the only writer of `maildrop/` and records the
//! submitter's uid. The client gets `250 2.0.0 Ok: queued as ID` only once postdrop has
//! exited 0, that is once the maildrop file is on disk.
//!
//! The envelope sender is what the client gives in `MAIL FROM` (as Postfix does); DSN
//! parameters (NOTIFY, ORCPT, RET, ENVID) have no place in the maildrop format and are
//! not passed on.
//!
//! postdrop is run with `-r` and its standard output is read for the maildrop queue ID
//! (one line, as Postfix's postdrop reports it to its caller in that mode). A postdrop
//! that prints none — today's does not — still stores the message; the reply then says
//! `queued as unknown`.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use postern_lib::config::Config;
use postern_lib::dsn::Dsn;
use postern_lib::maildrop::{Envelope, Writer};
use postern_lib::proto::cleanup::{CleanupReply, Submission};
use postern_lib::queue_id::QueueId;
use smtpd_engine::stdio::{Input, Sink};

use crate::body::Body;
use crate::{EX_CONFIG, EX_IOERR, Failure};

/// Most bytes of postdrop's output (ID, diagnostics) kept.
const MAX_CHILD_OUTPUT: u64 = 4096;

/// Runs the session on standard input and output.
pub fn serve(config: &Config, config_dir: &Path, full_name: Option<String>) -> Result<(), Failure> {
    let settings = smtpd_engine::stdio::local_settings(&config.main, config_dir).map_err(|e| (EX_CONFIG, e))?;
    let mut sink = Postdrop {
        program: PathBuf::from(&config.main.daemon_directory).join("postdrop"),
        config_dir: config_dir.to_path_buf(),
        full_name,
        job: None,
    };
    // Our own descriptor for standard input, read without a buffer in between, so that
    // poll sees every byte not yet consumed.
    let input = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| (EX_IOERR, format!("standard input: {e}")))?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    smtpd_engine::stdio::serve(Arc::new(settings), &mut Stdin(File::from(input)), &mut out, &mut sink)
        .map_err(|e| (EX_IOERR, format!("write standard output: {e}")))
}

/// Standard input, read with a timeout.
struct Stdin(File);

impl Input for Stdin {
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Err(io::Error::from(io::ErrorKind::Interrupted)),
            Err(e) => return Err(io::Error::from(e)),
        }
        self.0.read(buf)
    }
}

/// The postdrop process receiving the current message.
struct Job {
    child: Child,
    writer: Writer<BufWriter<ChildStdin>>,
    body: Body,
    converted: Vec<u8>,
}

/// Hands each message to a new `postdrop`.
struct Postdrop {
    program: PathBuf,
    config_dir: PathBuf,
    full_name: Option<String>,
    job: Option<Job>,
}

impl Sink for Postdrop {
    fn begin(&mut self, envelope: &Submission) -> io::Result<()> {
        self.abort();
        let env = Envelope {
            sender: envelope.sender.clone(),
            recipients: envelope.recipients.iter().map(|r| r.address.clone()).collect(),
            extract_recipients: false,
            full_name: self.full_name.clone(),
            uid: Some(nix::unistd::getuid().as_raw()),
        };
        env.validate().map_err(io::Error::other)?;
        let mut child = Command::new(&self.program)
            .arg("-r")
            .arg("-c")
            .arg(&self.config_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no pipe to postdrop"))?;
        match Writer::new(BufWriter::new(pipe), &env) {
            Ok(writer) => {
                self.job = Some(Job {
                    child,
                    writer,
                    body: Body::new(true),
                    converted: Vec::new(),
                });
                Ok(())
            }
            Err(e) => {
                let _ = collect(child);
                Err(io::Error::other(e))
            }
        }
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(job) = self.job.as_mut() else {
            return Err(io::Error::other("no message in progress"));
        };
        job.body.push(bytes, &mut job.converted);
        let r = job.writer.write_content(&job.converted);
        job.converted.clear();
        r.map_err(io::Error::other)
    }

    fn end(&mut self) -> CleanupReply {
        let Some(mut job) = self.job.take() else {
            return tempfail("Error: queue file write error".into());
        };
        job.body.finish(&mut job.converted);
        let written = job
            .writer
            .write_content(&job.converted)
            .and_then(|()| job.writer.finish())
            .map(drop);
        let (code, out, err) = collect(job.child);
        match (written, code) {
            (Ok(()), Some(0)) => {
                let id = out.trim();
                let queue_id = QueueId::parse(id)
                    .map(|q| q.as_str().to_string())
                    .unwrap_or_else(|_| "unknown".into());
                CleanupReply::Queued { queue_id }
            }
            // EX_DATAERR: postdrop refused the message for good.
            (_, Some(65)) => CleanupReply::Rejected {
                code: 554,
                dsn: Dsn::MEDIA,
                text: format!("Error: {}", one_line(&err)),
            },
            _ => tempfail(format!("Error: queue file write error: {}", one_line(&err))),
        }
    }

    fn abort(&mut self) {
        if let Some(job) = self.job.take() {
            // Closing the pipe before the end record makes postdrop refuse the message:
            // nothing is left in the maildrop.
            drop(job.writer);
            let _ = collect(job.child);
        }
    }
}

fn tempfail(text: String) -> CleanupReply {
    CleanupReply::TempFail {
        code: 451,
        dsn: Dsn::MAIL_SYSTEM,
        text,
    }
}

/// Waits for postdrop (its input already closed) and returns its exit code, standard
/// output and standard error (bounded).
fn collect(mut child: Child) -> (Option<i32>, String, String) {
    drop(child.stdin.take());
    let read = |r: Option<&mut dyn Read>| {
        let mut v = Vec::new();
        if let Some(r) = r {
            let _ = r.take(MAX_CHILD_OUTPUT).read_to_end(&mut v);
        }
        String::from_utf8_lossy(&v).into_owned()
    };
    let out = read(child.stdout.as_mut().map(|s| s as &mut dyn Read));
    let err = read(child.stderr.as_mut().map(|s| s as &mut dyn Read));
    let code = child.wait().ok().and_then(|s| s.code());
    (code, out, err)
}

/// postdrop's diagnostic as reply text: its first line, printable, bounded.
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("postdrop failed");
    let line = line.strip_prefix("postdrop: fatal: ").unwrap_or(line);
    line.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_lib::maildrop::Reader;
    use postern_lib::proto::cleanup::{Origin, Recipient};
    use std::os::unix::fs::PermissionsExt;

    /// A `postdrop` for the sink to run: a shell script that keeps its input in `dir/in`
    /// and answers with `output` and `status`.
    fn program(dir: &Path, output: &str, status: u8) -> PathBuf {
        let p = dir.join(format!("postdrop-{status}"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = -r ] || exit 64\ncat > {}/in\nprintf '{output}'\nexit {status}\n",
            dir.display()
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn submit(program: PathBuf, chunks: &[&[u8]]) -> CleanupReply {
        let mut sink = Postdrop {
            program,
            config_dir: PathBuf::from("/nonexistent"),
            full_name: Some("A User".into()),
            job: None,
        };
        let env = Submission {
            sender: "a@far.test".into(),
            recipients: vec![Recipient {
                address: "b@example.test".into(),
                orcpt: None,
                notify: Vec::new(),
            }],
            origin: Origin::Smtp,
            extract_recipients: false,
            hold: false,
            attributes: Default::default(),
        };
        sink.begin(&env).unwrap();
        for c in chunks {
            sink.data(c).unwrap();
        }
        sink.end()
    }

    #[test]
    fn the_maildrop_stream_and_postdrops_answers() {
        let dir = tempfile::tempdir().unwrap();
        let reply = submit(
            program(dir.path(), "0123456789abcdef\\n", 0),
            &[b"Received: x\r\n", b"Subject: s\r", b"\n\r\nbody\r\n"],
        );
        assert_eq!(
            reply,
            CleanupReply::Queued {
                queue_id: "0123456789abcdef".into()
            }
        );
        let mut r = Reader::new(std::fs::File::open(dir.path().join("in")).unwrap(), 1 << 20).unwrap();
        assert_eq!(r.envelope().sender, "a@far.test");
        assert_eq!(r.envelope().recipients, ["b@example.test"]);
        assert_eq!(r.envelope().full_name.as_deref(), Some("A User"));
        let mut content = Vec::new();
        r.read_to_end(&mut content).unwrap();
        assert_eq!(content, b"Received: x\nSubject: s\n\nbody\n");

        let reply = submit(program(dir.path(), "", 0), &[b"x\r\n"]);
        assert_eq!(
            reply,
            CleanupReply::Queued {
                queue_id: "unknown".into()
            }
        );
        let reply = submit(program(dir.path(), "", 65), &[b"x\r\n"]);
        assert!(matches!(reply, CleanupReply::Rejected { code: 554, .. }), "{reply:?}");
        let reply = submit(program(dir.path(), "", 75), &[b"x\r\n"]);
        assert!(matches!(reply, CleanupReply::TempFail { code: 451, .. }), "{reply:?}");
    }
}
