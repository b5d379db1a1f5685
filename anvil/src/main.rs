//! # anvil — connection counts and rates per client, for all smtpd, imapd and pop3d processes
//!
//! Serves the [`anvil`](postern_lib::proto::anvil) protocol on `private/anvil`, as
//! Postfix's anvil(8): each smtpd, imapd and pop3d process keeps one connection (the
//! shared client of `postern_lib::anvil`) and asks, for every new client, how many
//! connections that client has open now and how many it made in the current rate window,
//! over all processes of the service (counted per service: smtpd's limits cover
//! connections, imapd's and pop3d's those not yet logged in, released at login). One
//! process (`maxproc = 1`) holds the whole table. Counts are tied to the daemon's
//! connection that made them: when it closes, its counts go, so a crashed daemon never
//! leaves a client locked out.
//!
//! The rate window is `anvil_rate_time_unit` (Postfix's name; 60 s by default). The table holds at most [`table::MAX_CLIENTS`] clients; when full, the entry
//! idle longest is evicted.
//!
//! Security stance: runs unprivileged; requests are bounded by the IPC frame limit and
//! the table is bounded in size; the socket is reachable by mail_owner only.
#![forbid(unsafe_code)]

mod service;
mod table;

use std::process::ExitCode;

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::event::event_server("anvil", |ctx| {
        Ok(service::server(ctx.main.anvil_rate_time_unit.duration()))
    })
}
