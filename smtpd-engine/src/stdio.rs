//! One SMTP session on standard input and output, for `sendmail -bs` (what Postfix does
//! with `smtpd -S`): the same sans-I/O [`Session`] as the network daemon, driven by a
//! small blocking loop instead of the event loop, with a [`Sink`] in place of cleanup.
//!
//! The session is local ([`local_settings`]): the client is `localhost [127.0.0.1]` (as
//! Postfix's stand-alone smtpd names it), no STARTTLS and no AUTH are offered, no
//! restriction list applies and recipients are not validated — it is a user of this host
//! submitting, exactly as with plain `sendmail`, so relaying is permitted. Everything else
//! is bounded as in smtpd: command line length, header and message size, recipients,
//! errors and junk commands, the per-command timeout `smtpd_timeout` and the whole-DATA
//! timeout `smtpd_data_timeout`.
//!
//! The sink decides what "queued" means: `250 2.0.0 Ok: queued as ID` is sent only for
//! [`CleanupReply::Queued`] returned by [`Sink::end`].

use crate::protocol::policy::{Restrictions, Rule};
use crate::protocol::{Action, ClientInfo, LookupResult, Session, VerifyResult};
use crate::settings::Settings;
use postern_lib::config::MainConfig;
use postern_lib::line::LineBuffer;
use postern_lib::proto::cleanup::{CleanupReply, Submission};
use std::io::{self, ErrorKind, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most input bytes held before the session consumes them.
const MAX_INPUT: usize = 64 * 1024;
/// Bytes read at once.
const READ_SIZE: usize = 16 * 1024;

/// Where the session's bytes come from.
pub trait Input {
    /// Reads into `buf`, waiting at most `timeout`: `Ok(0)` at end of input, an error of
    /// kind [`ErrorKind::TimedOut`] when nothing arrived in time.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

/// Where accepted messages go (in place of cleanup).
pub trait Sink {
    /// A message begins with this envelope. An error makes the session answer `451` at
    /// the end of the message.
    fn begin(&mut self, envelope: &Submission) -> io::Result<()>;
    /// Content: the message as it will be stored (the `Received:` header first), lines
    /// ending in CRLF, dot-stuffing removed.
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The content is complete: make it durable and say how it went.
    fn end(&mut self) -> CleanupReply;
    /// Drop the message in progress; nothing may be queued.
    fn abort(&mut self);
}

/// The client of a local session, as Postfix's stand-alone smtpd names it.
pub fn local_client() -> ClientInfo {
    ClientInfo {
        addr: IpAddr::from([127, 0, 0, 1]),
        name: "localhost".into(),
    }
}

/// smtpd's settings for a local session: smtpd's limits and timeouts as configured, but
/// without TLS, AUTH, restriction lists and recipient validation, relaying permitted. No
/// table or certificate is read (the invoking user may not be allowed to read them).
pub fn local_settings(main: &MainConfig, config_dir: &Path) -> Result<Settings, String> {
    let mut main = main.clone();
    main.alias_maps.clear();
    main.smtpd_tls_cert_file.clear();
    main.smtpd_tls_key_file.clear();
    main.smtpd_tls_security_level = postern_lib::config::SmtpdTlsLevel::None;
    main.smtpd_tls_wrappermode = false;
    main.smtpd_sasl_auth_enable = false;
    main.smtpd_reject_unlisted_recipient = false;
    for list in [
        &mut main.smtpd_client_restrictions,
        &mut main.smtpd_helo_restrictions,
        &mut main.smtpd_sender_restrictions,
        &mut main.smtpd_recipient_restrictions,
        &mut main.smtpd_data_restrictions,
        &mut main.smtpd_end_of_data_restrictions,
    ] {
        list.clear();
    }
    // Settings::load refuses a configuration without a relay stop; the list is replaced
    // below.
    main.smtpd_relay_restrictions = vec!["reject_unauth_destination".into()];
    let mut s = Settings::load(&main, config_dir, "sendmail")?;
    s.tls_available = false;
    // postdrop, not smtpd, finds out whether the queue has room.
    s.queue_minfree = None;
    s.restrictions = Restrictions {
        client: Vec::new(),
        helo: Vec::new(),
        sender: Vec::new(),
        relay: vec![Rule::Permit],
        recipient: Vec::new(),
        data: Vec::new(),
        end_of_data: Vec::new(),
    };
    Ok(s)
}

/// Runs one session until QUIT, end of input, a timeout or a fatal error. An error is
/// returned only when the output could not be written (the client has gone); a message
/// in progress is then aborted first.
pub fn serve(cfg: Arc<Settings>, input: &mut dyn Input, output: &mut dyn Write, sink: &mut dyn Sink) -> io::Result<()> {
    let mut session = Session::new(cfg.clone(), local_client(), None);
    let mut buf = LineBuffer::new(cfg.line_limit, MAX_INPUT);
    let mut chunk = vec![0u8; READ_SIZE];
    let mut data_deadline: Option<Instant> = None;
    let mut actions = session.start();
    loop {
        let closing = perform(&mut session, actions, output, sink)?;
        if closing || session.is_closed() {
            break;
        }
        actions = session.process(&mut buf);
        if !actions.is_empty() {
            continue;
        }
        // Everything buffered is consumed: wait for the client.
        output.flush().or_else(|e| gone(&mut session, sink, e))?;
        if session.in_message() {
            data_deadline.get_or_insert_with(|| Instant::now() + cfg.data_timeout);
        } else {
            data_deadline = None;
        }
        let now = Instant::now();
        let timeout = match data_deadline {
            Some(d) => cfg.timeout.min(d.saturating_duration_since(now)),
            None => cfg.timeout,
        };
        let space = buf.free_space().min(chunk.len());
        let slot = chunk.get_mut(..space).unwrap_or_default();
        let got = if timeout.is_zero() || slot.is_empty() {
            // The DATA deadline has passed, or input the session cannot consume fills
            // the buffer (it never does: over-long lines are dropped as they arrive).
            Err(io::Error::from(ErrorKind::TimedOut))
        } else {
            input.read_timeout(slot, timeout)
        };
        actions = match got {
            Ok(0) => session.disconnected(),
            Ok(n) => match buf.push(slot.get(..n).unwrap_or_default()) {
                Ok(()) => Vec::new(),
                Err(_) => session.timeout(),
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => Vec::new(),
            Err(e) if e.kind() == ErrorKind::TimedOut => session.timeout(),
            Err(_) => session.disconnected(),
        };
    }
    output.flush().or_else(|e| gone(&mut session, sink, e))
}

/// Performs the session's actions, feeding synchronous outcomes back; returns whether the
/// session asked to close.
fn perform(
    session: &mut Session,
    mut actions: Vec<Action>,
    output: &mut dyn Write,
    sink: &mut dyn Sink,
) -> io::Result<bool> {
    let mut closing = false;
    while !actions.is_empty() {
        let mut next = Vec::new();
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    if let Err(e) = output.write_all(&bytes) {
                        return gone(session, sink, e).map(|()| true);
                    }
                }
                Action::Close => closing = true,
                // Never offered in a local session; refuse if asked anyway.
                Action::StartTls => closing = true,
                Action::Lookup(_) => next.extend(session.lookup_done(LookupResult::Exists)),
                Action::Verify { .. } => next.extend(session.verify_done(VerifyResult::TempFail)),
                Action::Begin(envelope) => {
                    if sink.begin(&envelope).is_err() {
                        next.extend(session.cleanup_done(None));
                    } else {
                        // The sink names the message only at its end.
                        next.extend(session.cleanup_started(None));
                    }
                }
                Action::Data(bytes) => {
                    if session.cleanup_open() && sink.data(&bytes).is_err() {
                        sink.abort();
                        next.extend(session.cleanup_done(None));
                    }
                }
                Action::End => {
                    let reply = sink.end();
                    next.extend(session.cleanup_done(Some(reply)));
                }
                Action::Abort => sink.abort(),
            }
        }
        actions = next;
    }
    Ok(closing)
}

/// The output failed: the client has gone; drop any message in progress.
fn gone(session: &mut Session, sink: &mut dyn Sink, e: io::Error) -> io::Result<()> {
    for a in session.disconnected() {
        if matches!(a, Action::Abort) {
            sink.abort();
        }
    }
    sink.abort();
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Script(Vec<u8>, usize);
    impl Input for Script {
        fn read_timeout(&mut self, buf: &mut [u8], _: Duration) -> io::Result<usize> {
            let rest = self.0.get(self.1..).unwrap_or_default();
            if rest.is_empty() {
                return Err(io::Error::from(ErrorKind::TimedOut));
            }
            let n = rest.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&rest[..n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[derive(Default)]
    struct Store {
        current: Option<(Submission, Vec<u8>)>,
        queued: Vec<(Submission, Vec<u8>)>,
        aborts: usize,
        fail: bool,
    }
    impl Sink for Store {
        fn begin(&mut self, e: &Submission) -> io::Result<()> {
            self.current = Some((e.clone(), Vec::new()));
            Ok(())
        }
        fn data(&mut self, b: &[u8]) -> io::Result<()> {
            if let Some((_, c)) = self.current.as_mut() {
                c.extend_from_slice(b);
            }
            Ok(())
        }
        fn end(&mut self) -> CleanupReply {
            if self.fail {
                return CleanupReply::TempFail {
                    code: 451,
                    dsn: postern_lib::dsn::Dsn::MAIL_SYSTEM,
                    text: "try later".into(),
                };
            }
            self.queued.extend(self.current.take());
            CleanupReply::Queued {
                queue_id: format!("ID{}", self.queued.len()),
            }
        }
        fn abort(&mut self) {
            if self.current.take().is_some() {
                self.aborts += 1;
            }
        }
    }

    fn run(script: &str, store: &mut Store) -> String {
        let cfg = Arc::new(Settings::for_tests());
        let mut out = Vec::new();
        serve(cfg, &mut Script(script.as_bytes().to_vec(), 0), &mut out, store).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_relayed_message_is_queued_with_its_envelope() {
        let mut st = Store::default();
        let out = run(
            "EHLO me\r\nMAIL FROM:<a@far.test>\r\nRCPT TO:<b@elsewhere.test>\r\nRCPT TO:<nobody@example.test>\r\n\
             DATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
            &mut st,
        );
        assert!(!out.contains("STARTTLS") && !out.contains("AUTH"), "{out}");
        assert!(
            out.contains("\r\n250 2.0.0 Ok: queued as ID1\r\n221 2.0.0 Bye\r\n"),
            "{out}"
        );
        let (env, content) = &st.queued[0];
        assert_eq!(env.sender, "a@far.test");
        let rcpts: Vec<_> = env.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(rcpts, ["b@elsewhere.test", "nobody@example.test"]);
        let text = String::from_utf8_lossy(content);
        assert!(text.starts_with("Received: from me (localhost [127.0.0.1])"), "{text}");
        assert!(text.ends_with("Subject: x\r\n\r\n.dot\r\n"), "{text}");
    }

    #[test]
    fn failures_and_disconnects_queue_nothing() {
        let mut st = Store {
            fail: true,
            ..Store::default()
        };
        let out = run(
            "HELO me\r\nMAIL FROM:<>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nhi\r\n.\r\n",
            &mut st,
        );
        assert!(out.contains("\r\n451 4.3.0 try later\r\n"), "{out}");
        assert!(
            out.ends_with("421 4.4.2 mail.example.test Error: timeout exceeded\r\n"),
            "{out}"
        );
        assert!(st.queued.is_empty());

        let mut st = Store::default();
        let out = run(
            "HELO me\r\nMAIL FROM:<>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nhalf a message\r\n",
            &mut st,
        );
        assert!(
            out.ends_with("421 4.4.2 mail.example.test Error: timeout exceeded\r\n"),
            "{out}"
        );
        assert!(st.queued.is_empty() && st.current.is_none() && st.aborts == 1);
    }

    #[test]
    fn local_settings_read_no_tables_and_permit_relay() {
        let main = MainConfig {
            myhostname: "mail.example.test".into(),
            mydestination: vec!["example.test".into()],
            mynetworks: Vec::new(),
            alias_maps: vec!["/nonexistent/aliases".into()],
            smtpd_client_restrictions: vec!["check_client_access /nonexistent/access".into()],
            smtpd_recipient_restrictions: vec!["reject".into()],
            smtpd_sasl_auth_enable: true,
            ..MainConfig::default()
        };
        let cfg = Arc::new(local_settings(&main, Path::new("/nonexistent")).unwrap());
        let mut st = Store::default();
        let mut out = Vec::new();
        let script =
            "EHLO me\r\nMAIL FROM:<a@far.test>\r\nRCPT TO:<b@elsewhere.test>\r\nRCPT TO:<who@example.test>\r\nQUIT\r\n";
        serve(cfg, &mut Script(script.as_bytes().to_vec(), 0), &mut out, &mut st).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("AUTH"), "{out}");
        assert!(
            out.ends_with("250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n221 2.0.0 Bye\r\n"),
            "{out}"
        );
    }
}
