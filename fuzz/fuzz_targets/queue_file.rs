//! The queue file reader on arbitrary bytes: it must return an error or a file, never
//! panic, and a file it accepts must give a content range inside the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern_lib::queue_file::{Limits, QueueFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(qf) = QueueFile::read(std::io::Cursor::new(data)) {
        assert!(qf.content_range().end <= data.len() as u64);
    }
    let _ = QueueFile::read_all(std::io::Cursor::new(data), &Limits::default());
});
