//! pop3d's protocol core on lib's shared connection driver (framing, back-pressure,
//! hand-over), fed arbitrary bytes in chunks by a client that reads its answers through a
//! varying window: never a panic, never logged in, never more held than the pre-login
//! output bound plus one reply or the stated input bound (`pop3d::fuzz::fuzz_prelogin`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pop3d::fuzz::fuzz_prelogin(data);
});
