//! The sans-I/O line buffer: arbitrary bytes in arbitrary chunks; every line it yields is
//! within the limit and the bytes it hands out never exceed what went in.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern_lib::line::{LineBuffer, LineEvent};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut b = LineBuffer::new(64, 256);
    let mut out = 0usize;
    for chunk in rest.chunks(usize::from(split).max(1)) {
        if b.push(chunk).is_err() {
            let _ = b.take_pending();
            continue;
        }
        while let Some(ev) = b.next_line() {
            if let LineEvent::Line { line, .. } = ev {
                assert!(line.len() <= 64);
                out += line.len();
            }
        }
    }
    assert!(out <= rest.len());
});
