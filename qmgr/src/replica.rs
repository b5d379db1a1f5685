//! Replica copies (issue 15): a recipient that cleanup wrote once per `replica_relays`
//! entry, each copy with a fixed route (the queue file's `N` record).
//!
//! qmgr sends such a copy where its route says, without asking trivial-rewrite, so the
//! copies of one address land in different destination queues and are never merged; each
//! has its own done mark, which qmgr sets (not the agent) once the copy is delivered.
//!
//! **A permanent refusal (5xx) by one mailbox server is not final for its copy.** The
//! replicas must hold the same mailboxes, so a 5xx from one of them is a fault of that
//! server (a user missing there, a full disk reported as 5xx, a misconfiguration), not a
//! verdict on the mail: the copy is logged loudly (`warning: replica copy refused
//! permanently`) and kept in the queue like a deferral, retried with the usual back-off,
//! counted as owed by `postern status`, and bounced to the sender only when
//! `maximal_queue_lifetime` runs out (the notice names the relay and its last answer).
//! So the sender is not told of a failure that the other replica's copy (and the
//! replicators' merge) made good, and no copy is dropped while the operator fixes the
//! server.

use postern_lib::proto::deliver::RecipientResult;
use postern_lib::proto::resolve::{AddressClass, Route};
use postern_lib::queue_file::parse_route;
use postern_lib::queue_id::QueueId;

/// The route of a copy with the fixed route `route` (`transport:nexthop`).
pub fn fixed_route(route: &str, address: &str) -> Option<Route> {
    let (transport, nexthop) = parse_route(route)?;
    Some(Route {
        transport: transport.to_string(),
        nexthop: nexthop.to_string(),
        recipient: address.to_string(),
        class: AddressClass::Relay,
    })
}

/// A copy refused permanently by its mailbox server: the warning, and the (dsn, reason)
/// it is deferred with (the DSN's class turned into 4, as for any deferral).
pub fn refused(id: &QueueId, address: &str, route: &str, x: &RecipientResult) -> (String, String) {
    tracing::warn!(
        queue_id = id.as_str(),
        "warning: replica copy refused permanently: to=<{address}>, relay={route}, dsn={}, {}; the copy stays queued and is retried until maximal_queue_lifetime: fix that mailbox server",
        x.dsn,
        x.text
    );
    let dsn = match x.dsn.strip_prefix('5') {
        Some(rest) => format!("4{rest}"),
        None => x.dsn.clone(),
    };
    (dsn, format!("replica {route} refused the copy permanently: {}", x.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_routes_go_where_they_say() {
        let r = fixed_route("smtp:[198.18.0.31]:25", "alice@example.test").unwrap();
        assert_eq!((r.transport.as_str(), r.nexthop.as_str()), ("smtp", "[198.18.0.31]:25"));
        assert_eq!(r.recipient, "alice@example.test");
        assert!(fixed_route("nonsense", "a@b").is_none());
    }
}
