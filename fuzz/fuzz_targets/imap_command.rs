//! imapd's command parser and a whole unauthenticated session on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapd::fuzz_input(data);
});
