//! Replica copies (issue 15): a recipient that cleanup wrote once per `replica_relays`
//! entry, each copy with a fixed route (the queue file's `N` record).
//!
//! qmgr sends such a copy where its route says, without asking trivial-rewrite, so the
//! copies of one address land in different destination queues and are never merged; each
//! has its own done mark, which qmgr sets (not the agent) once the copy is delivered.
//!
//! **A permanent refusal (5xx) by one mailbox server is not final for its copy while
//! another copy of the address was delivered (or may still be).** The replicas must hold
//! the same mailboxes, so a 5xx from one of them while another took (or may take) the
//! message is a fault of that server (a user missing there, a misconfiguration), not a
//! verdict on the mail: the copy is logged loudly (`warning: replica copy refused
//! permanently`), kept in the queue like a deferral (its DSN class turned to 4), retried
//! with the usual back-off, counted as owed by `postern status` with the reason, and
//! bounced only when `maximal_queue_lifetime` runs out. So the sender is not told of a
//! failure that the other replica's copy made good, and no copy is dropped while the
//! operator fixes the server. When every copy of the address was refused (the user exists
//! on no mailbox server), the replicas agree and the copies bounce as usual, at once.
//! After `replica_relays` changed, `postsuper -r` sends the owed copies to the new list
//! (cleanup keeps the message's GUID, so a server that has it files nothing new).

use postern_lib::dsn::{Class, Dsn};
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

/// A copy refused permanently by its mailbox server while another copy lives: the
/// warning, and the (dsn, reason) it is deferred with (the DSN's class turned into 4, as
/// for any deferral).
pub fn keep(id: &QueueId, address: &str, route: &str, dsn: Dsn, text: &str) -> (Dsn, String) {
    tracing::warn!(
        queue_id = id.as_str(),
        "replica copy refused permanently: to=<{address}>, relay={route}, dsn={dsn}, {text}; another replica took or may take the message, so the copy stays queued and is retried until maximal_queue_lifetime: fix that mailbox server"
    );
    let dsn = match dsn.class() {
        Class::Permanent => dsn.temporary(),
        _ => dsn,
    };
    (dsn, format!("replica {route} refused the copy permanently: {text}"))
}

/// A copy refused permanently when every copy of its address was: it bounces.
pub fn bounce(id: &QueueId, address: &str, route: &str) {
    tracing::warn!(
        queue_id = id.as_str(),
        "replica copy refused permanently: to=<{address}>, relay={route}; every replica refused this address, so it bounces"
    );
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
