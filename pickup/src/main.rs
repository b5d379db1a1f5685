//! # pickup — moves locally submitted mail from `maildrop/` into cleanup
//!
//! A unix service on `public/pickup`, woken by a trigger byte (postdrop sends `W` after
//! each submission; master's `wakeup` sends it periodically). On each wake-up pickup scans
//! `maildrop/` ([`scan`]) and hands every complete file to cleanup over `private/cleanup`
//! ([`submit`], the protocol of [`postern_lib::proto::cleanup`]) with `Origin::Local`, the
//! recorded sender and recipients, `extract_recipients` for `sendmail -t`, and the
//! attributes `uid`, `login` and `full_name` ([`postern_lib::maildrop::attr`]).
//!
//! A maildrop file is removed only after cleanup answered `Queued` or `Discarded`. When
//! cleanup answers `TempFail`, or cannot be reached, the file stays for the next wake-up.
//! A malformed file (bad format, incomplete, not a regular file, a symlink, a hard link,
//! a name that is not a queue ID) goes to `corrupt/` with a warning, never silently
//! deleted. A message cleanup *rejects* for good (`Rejected`: size, header check, milter)
//! cannot be returned through sendmail, which has long exited, and pickup does not ask
//! bounce for a report (the sender is a local user whose submission cleanup refused, not
//! a message in the queue): pickup logs the rejection with cleanup's reply as a warning
//! and moves the file to `corrupt/`, so the administrator still has the message and
//! nothing is retried forever.
//!
//! ## Log lines
//!
//! `QUEUEID: uid=1000 from=<alice>` for each message handed over (the queue ID cleanup
//! assigned), `warning: maildrop/NAME: ...; moved to corrupt/` for a malformed file,
//! `warning: maildrop/NAME: rejected by cleanup: 550 5.7.1 ...; moved to corrupt/`.
//!
//! ## Security stance
//!
//! Runs unprivileged as mail_owner. maildrop/ is writable by the postdrop group, so its
//! files are untrusted: opened with [`postern_lib::safe_open::open_read`] (no symlinks, no
//! hard links, regular files only), parsed by the bounded [`postern_lib::maildrop::Reader`]
//! and verified completely before cleanup sees a byte. The submitting uid is the file's
//! owner, never a value inside the file.
//!
//! ## Settings read
//!
//! `message_size_limit` (the largest maildrop content accepted), `queue_directory`.
#![forbid(unsafe_code)]

mod scan;
mod submit;

use std::process::ExitCode;

use postern_lib::skeleton::single::single_server;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    single_server("pickup", |_| Ok(()), |_, ctx, conn| scan::on_trigger(ctx, conn))
}
