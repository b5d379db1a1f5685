//! # cleanup — turns a submitted message into a durable queue file
//!
//! smtpd and pickup (and later bounce) hand cleanup one message per connection over the
//! cleanup protocol ([`postern_lib::proto::cleanup`], socket `private/cleanup`). cleanup
//! then, in this order:
//!
//! 0. names the queue ID at once (`CleanupStarted`) when the client opened with
//!    `CleanupRequest::Open` (smtpd does, for its `Received:` header and `client=` line);
//! 1. reads the whole content (bounded by `message_size_limit`: larger content is read to
//!    its end and refused with `552 5.3.4`, nothing is written);
//! 2. canonicalises the envelope addresses (`user` → `user@$myorigin`, domain lower-cased,
//!    trailing dot removed — [`postern_lib::address::canonical`], the form trivial-rewrite's
//!    `Rewrite` gives too);
//! 3. with `extract_recipients` (`sendmail -t`) takes recipients from To:/Cc:/Bcc:, and
//!    removes Bcc:;
//! 4. adds missing header fields: `From:` for local submissions, `Date:` and `Message-ID:`
//!    for every message;
//! 5. applies `header_checks` and `body_checks` ([`postern_checks`]; not for
//!    internally generated mail);
//! 6. runs the milters (`smtpd_milters` for SMTP mail, `non_smtpd_milters` for local
//!    submissions; [`postern_milter`]) one after the other, each seeing the message as
//!    the previous one left it, and applies their changes; a milter that fails gets
//!    `milter_default_action`;
//! 7. on a mail hub, copies each recipient in `replica_domains` once per `replica_relays`
//!    entry and stamps `X-Postern-GUID`; anywhere, removes an `X-Postern-GUID` that did not
//!    come from a hub in `replica_hub_networks` ([`replica`]);
//! 8. writes the queue file and makes it durable (see [`queue`]), with `queue_mirror_peer`
//!    has the peer node keep a durable copy first ([`mirror`]), replies `Queued`, and
//!    only then triggers qmgr (`public/qmgr`, byte `A`, on a connection the process keeps
//!    open). A full file system (ENOSPC,
//!    EDQUOT) is a temporary failure, `452 4.3.1 Insufficient system storage`, and leaves
//!    no file behind.
//!
//! Process model: one message per connection, blocking I/O with timeouts, each connection
//! on a thread of its own (threads are kept for the next connection), up to `max_conns`
//! per process ([`postern_lib::skeleton::threaded::threaded_server`]); the connection's
//! frames are read in bulk ([`wire`]); several processes
//! (`maxproc`); their fsyncs run concurrently and share the file system journal's commits,
//! and the connections of one process share the fsync of the queue directory after their
//! renames (group commit, [`dir_sync`]).
//! smtpd streams a message to cleanup as its client sends it, so a slow client holds its
//! cleanup connection for as long as it takes: with one connection per process, a few
//! dozen clients dribbling DATA held every cleanup process and stopped everybody's mail.
//! The content all connections of a process hold in memory is bounded by
//! `cleanup_content_memory_limit`; a message that does not fit is read to its end and
//! refused with `451 4.3.2`, so the client sends it again later.
//!
//! **Settings read**: `message_size_limit`, `cleanup_content_memory_limit`, `myorigin`, `myhostname`, `header_checks`,
//! `body_checks` (reloaded when the file changes, checked once per message),
//! `smtpd_milters`, `non_smtpd_milters`, `milter_default_action`, `replica_domains`,
//! `replica_relays`, `replica_hub_networks`, `queue_mirror_peer`, `queue_mirror_timeout`,
//! `queue_mirror_unreachable`,
//! `milter_connect_timeout`, `milter_command_timeout`, `milter_content_timeout`.
//!
//! **Diagnostics**: one log line per message in Postfix's style
//! (`QUEUEID: message-id=<...>`; `QUEUEID: from=<...>, size=N, nrcpt=M (queue hold)` for held
//! mail — the `(queue active)` line is qmgr's),
//! `reject:`/`discard:`/`hold:`/`warning:` lines naming the header or body line and the
//! table rule, and `warning:` lines for milter failures. A client that disconnects before
//! the end of the content is logged and leaves nothing behind.
//!
//! **Security stance**: the content comes from the network through smtpd; every size is
//! bounded (content by `message_size_limit`, header fields by [`postern_lib::headers`]
//! limits), nothing from the message reaches a log line unescaped, and no value from the
//! message or a milter is written to the queue file without the queue file writer's checks.
#![forbid(unsafe_code)]

mod content;
mod dir_sync;
mod milters;
mod mirror;
mod queue;
mod replica;
mod service;
mod wire;

fn main() -> std::process::ExitCode {
    postern_lib::version::exit_if_asked();
    // Each connection has its own state (the check tables, read once per message anyway).
    let code = postern_lib::skeleton::threaded::threaded_server(
        "cleanup",
        |_| {
            // Spares claimed by a cleanup process that was killed (the working directory
            // is the queue directory here).
            let gone = queue::remove_abandoned_spares();
            if gone > 0 {
                tracing::info!("removed {gone} spare file(s) claimed by cleanup processes that are gone");
            }
            Ok(())
        },
        |_: &(), ctx, conn| service::serve(&mut service::State::default(), ctx, conn),
    );
    // Spares claimed for messages that did not come are not left as temporary files.
    postern_lib::queue_spare::release_claimed();
    code
}
