//! The typed fields at the IPC boundary: hostile queue IDs and status codes are refused
//! when a message is decoded, and the bytes on the wire are what the string-typed
//! protocol sent (old and new peers read each other).

use super::bounce::{BounceReply, BounceRequest};
use super::cleanup::{CleanupReply, CleanupStarted};
use super::deliver::{AgentRequest, DeliverReply, DeliverRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

const ID: &str = "0Vxq3Yk9c0012345";

fn deliver_request(id: &str) -> String {
    format!(
        r#"{{"queue_id":"{id}","queue_file":"active/{ID}","sender":"","nexthop":"x","recipients":[{{"index":0,"address":"a@b.test","original":"a@b.test","mark":true}}],"arrival_micros":1,"active_micros":2,"dispatch_micros":3}}"#
    )
}

fn refused<T: DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
    match serde_json::from_str::<T>(json) {
        Ok(v) => panic!("decoded {v:?} from {json}"),
        Err(e) => e.to_string(),
    }
}

fn same_bytes<T: DeserializeOwned + Serialize>(json: &str) {
    let v: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(serde_json::to_string(&v).unwrap(), json);
}

#[test]
fn hostile_queue_ids_are_refused_with_the_reason() {
    let long = "A".repeat(300);
    for (id, why) in [
        ("../x", "queue ID must be 16 characters, got 4"),
        (long.as_str(), "queue ID must be 16 characters, got 300"),
        ("../../etc/passwd", "queue ID has an invalid character at offset 0"),
        ("0Vxq3Yk9c001234\n", "queue ID has an invalid character at offset 15"),
        ("", "queue ID must be 16 characters, got 0"),
    ] {
        let id = id.replace('\n', "\\n");
        let e = refused::<DeliverRequest>(&deliver_request(&id));
        assert!(e.contains(why), "{id:?}: {e}");
        let e = refused::<AgentRequest>(&deliver_request(&id));
        assert!(e.contains(why), "{id:?}: {e}");
        let e = refused::<AgentRequest>(&format!(r#"{{"batch":[{}]}}"#, deliver_request(&id)));
        assert!(e.contains(why), "{id:?}: {e}");
        let e = refused::<CleanupStarted>(&format!(r#"{{"type":"started","queue_id":"{id}"}}"#));
        assert!(e.contains(why), "{id:?}: {e}");
        let e = refused::<CleanupReply>(&format!(r#"{{"type":"queued","queue_id":"{id}"}}"#));
        assert!(e.contains(why), "{id:?}: {e}");
        let e = refused::<BounceReply>(&format!(r#"{{"type":"sent","queue_id":"{id}"}}"#));
        assert!(e.contains(why), "{id:?}: {e}");
        let e = refused::<BounceRequest>(&format!(
            r#"{{"type":"notify","queue_id":"{id}","queue_file":"active/{ID}","kind":"failure","recipients":[]}}"#
        ));
        assert!(e.contains(why), "{id:?}: {e}");
    }
    assert!(refused::<DeliverRequest>(&format!(
        r#"{{"queue_id":7,"queue_file":"active/{ID}","sender":"","nexthop":"x","recipients":[],"arrival_micros":1,"active_micros":2,"dispatch_micros":3}}"#
    ))
    .contains("invalid type"));
}

#[test]
fn bad_status_codes_are_refused() {
    for dsn in ["5.1", "3.0.0", "5.1.1000", "x", "5.1.1 text", ""] {
        let e = refused::<DeliverReply>(&format!(
            r#"{{"results":[{{"index":0,"address":"a@b.test","code":550,"dsn":"{dsn}","text":"t"}}]}}"#
        ));
        assert!(e.contains("not an enhanced status code"), "{dsn:?}: {e}");
        let e = refused::<CleanupReply>(&format!(r#"{{"type":"rejected","code":550,"dsn":"{dsn}","text":"t"}}"#));
        assert!(e.contains("not an enhanced status code"), "{dsn:?}: {e}");
    }
}

#[test]
fn the_wire_bytes_are_those_of_the_string_fields() {
    same_bytes::<DeliverRequest>(&deliver_request(ID));
    same_bytes::<DeliverReply>(
        r#"{"results":[{"index":0,"address":"a@b.test","code":250,"dsn":"2.0.0","text":"delivered to maildir"},{"index":1,"address":"c@d.test","code":556,"dsn":"5.1.10","text":"null MX"},{"index":2,"address":"e@f.test","code":250,"dsn":"2.0.0","text":"250 ok","handoff":{"relayed":{"remote_mta":"mx.f.test"}}}]}"#,
    );
    same_bytes::<CleanupStarted>(&format!(r#"{{"type":"started","queue_id":"{ID}"}}"#));
    same_bytes::<CleanupReply>(&format!(r#"{{"type":"queued","queue_id":"{ID}"}}"#));
    same_bytes::<CleanupReply>(&format!(r#"{{"type":"discarded","queue_id":"{ID}"}}"#));
    same_bytes::<CleanupReply>(r#"{"type":"rejected","code":550,"dsn":"5.7.1","text":"no"}"#);
    same_bytes::<CleanupReply>(r#"{"type":"temp_fail","code":451,"dsn":"4.3.0","text":"later"}"#);
    same_bytes::<BounceRequest>(&format!(
        r#"{{"type":"notify","queue_id":"{ID}","queue_file":"active/{ID}","kind":"delay","recipients":[{{"index":3,"address":"a@b.test","dsn":"4.4.1","text":"no answer","remote_mta":"mx.b.test"}}]}}"#
    ));
    same_bytes::<BounceReply>(&format!(r#"{{"type":"sent","queue_id":"{ID}"}}"#));
}
