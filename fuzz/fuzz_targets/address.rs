//! The RFC 5321 path parser and the relay classification on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern_lib::address::{Destinations, parse_mailbox, parse_path};

fuzz_target!(|data: &[u8]| {
    for utf8 in [false, true] {
        if let Ok((postern_lib::address::Path::Addr(a), _rest)) = parse_path(data, utf8, true) {
            let d = Destinations::new(&["example.test".into()], &["relay.test".into()]);
            let _ = d.classify(&a);
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = parse_mailbox(text, utf8);
        }
    }
});
