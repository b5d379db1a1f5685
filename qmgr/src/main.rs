//! # qmgr — the queue manager
//!
//! One process (`public/qmgr`, `maxproc = 1`) that moves messages from `incoming/` into
//! `active/`, resolves their recipients through trivial-rewrite, hands delivery jobs to the
//! delivery agents (`private/<transport>`) with the [`deliver`](postern_lib::proto::deliver)
//! protocol, defers what failed temporarily to `deferred/` with exponential back-off, and
//! removes a message once every recipient is finished.
//!
//! Woken by triggers on its socket ([`trigger`](postern_lib::proto::trigger)): `A` new mail
//! in incoming/, `W` periodic wakeup (master's `wakeup`), `F` retry all deferred mail now.
//!
//! Memory stays bounded: at most `qmgr_message_active_limit` messages and
//! `qmgr_message_recipient_limit` recipients are in memory; the rest wait on disk and are
//! taken in as room frees. The deferred queue is fed in by the scheduler's appetite
//! (`schedule::scan`): a due message whose destinations are all dead is deferred again
//! where it lies (new retry time, defer log, `status=deferred (delivery temporarily
//! suspended: …)`) without coming into `active/`, and one whose destinations already have
//! twice their concurrency window of work waits on disk; so a retry wave for a dead relay
//! brings only its few probes into `active/`. Collections shrink when the queue is idle.
//! Scheduling is per transport and destination:
//! `<transport>_destination_concurrency_limit` parallel jobs per destination,
//! `<transport>_destination_recipient_limit` recipients per job, the transport's `maxproc`
//! (else `default_process_limit`) jobs per transport, round-robin between destinations so one
//! slow destination cannot starve the others. A transport whose recipient limit is 1
//! (`local`) uses the recipient itself as its destination, as Postfix does; the messages
//! queued for such a destination go to the agent in batches (at most 32 per job, shared
//! out among the destination's free job slots; one connection per batch, on a job thread
//! kept from an earlier job when one waits),
//! which let local make a batch's deliveries durable together ([`agent`]).
//!
//! Crash safety: the delivery agent marks each finished recipient in the queue file, so a
//! restarted qmgr (which takes `active/` back first) never repeats it. An agent holds a
//! shared `flock` on the queue file while it delivers; qmgr takes a message from `active/`
//! at start-up only when it can get the exclusive lock, so an agent still working for a
//! dead qmgr finishes (and marks) before the message is scheduled again. Deferred messages
//! carry their next retry time as the file's modification time, as in Postfix.
//!
//! Logs (Postfix format): `ID: from=<…>, size=N, nrcpt=M (queue active)`, `ID: removed`,
//! and for recipients that never reach an agent (`error` transport, agent unreachable,
//! expiry) the `to=<…>, relay=…, delay=…, delays=…, dsn=…, status=…` line.
//!
//! Replica copies ([`replica`]): a recipient cleanup wrote once per mailbox server, each
//! copy with a fixed route, goes where its route says (no resolution, no merging with
//! the other copies); a permanent refusal by one server defers that copy (loudly) instead of
//! bouncing it, until `maximal_queue_lifetime`.
//!
//! Notices ([`notices`]): a recipient that failed for good is written to the bounce log
//! `bounce/<ID>` before it is marked done, and the message is removed only once the bounce
//! daemon has queued the non-delivery report. With `delay_warning_time` set (default 0 =
//! off, as in Postfix), a message deferred after being queued that long gets one delay
//! warning (`Action: delayed`) to its sender about the recipients still pending; the fact
//! is kept as the marker file `defer/<ID>.warned` (a queue file cannot take a new record in
//! place), which survives the defer log being cleared at each attempt and is removed with
//! the message. Null-sender mail gets no warning. A recipient that asked for a success
//! notice (NOTIFY=SUCCESS) and was delivered ("delivered") or handed to a next hop without
//! DSN ("relayed") is written to the trace log `trace/<ID>`, and the notice is asked for at
//! the end of the pass, before the message moves on ([`success`]).
//!
//! Slow start and back-off per destination ([`feedback`]): a destination starts with
//! `initial_destination_concurrency` parallel deliveries, gains one per delivery that
//! reached it up to its limit, loses on connection-level failures, and after
//! `default_destination_concurrency_failed_cohort_limit` failed cohorts is throttled
//! "dead" for `minimal_backoff_time`: its mail is deferred without new connections while
//! other destinations go on.
//!
//! Settings read: `qmgr_message_active_limit`, `qmgr_message_recipient_limit`,
//! `default_process_limit`, `default_destination_concurrency_limit`,
//! `initial_destination_concurrency`, `smtp_initial_destination_concurrency`,
//! `default_destination_concurrency_failed_cohort_limit`,
//! `default_destination_recipient_limit`, `local_destination_*`, `smtp_destination_*`,
//! `minimal_backoff_time`, `maximal_backoff_time`, `queue_run_delay`,
//! `maximal_queue_lifetime`, `ipc_timeout`, `delay_warning_time`.
#![forbid(unsafe_code)]

mod agent;
mod feedback;
mod notices;
mod queue;
mod replica;
mod schedule;
mod service;
mod settings;
mod success;

use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::event::event_server("qmgr", |ctx| Ok(service::Service::new(settings::Settings::new(ctx))))
}
