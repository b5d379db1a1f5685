//! imapd's MIME path on arbitrary messages: parsing, BODYSTRUCTURE, ENVELOPE (and the
//! address text SEARCH matches), BODY[section] extraction and the base64 encoding of an
//! APPEND's binary parts must never panic, whatever the nesting or the boundaries.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let part = imapd::mime::parse(data);
    let mut out = Vec::new();
    imapd::mime::body_structure(&mut out, &part, true);
    let (header, _body) = imapd::mime::split(data);
    imapd::mime::envelope(&mut out, header);
    let _ = imapd::address::search_text(header);
    let _ = imapd::binary::encode_binary_parts(data);
    for spec in ["", "1", "1.2", "2.MIME", "HEADER", "TEXT", "1.HEADER", "3.1.TEXT"] {
        let _ = imapd::mime::section(data, spec);
    }
});
