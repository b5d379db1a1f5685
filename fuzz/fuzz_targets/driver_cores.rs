//! imapd's and pop3d's protocol cores on lib's shared connection driver (its framing,
//! back-pressure and write loop), each fed the same arbitrary bytes in chunks by a client
//! that reads its answers through a varying window: never a panic, never logged in, never
//! more held than the pre-login bounds (`imapd::fuzz::fuzz_driver`,
//! `pop3d::fuzz::fuzz_prelogin`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapd::fuzz::fuzz_driver(data);
    pop3d::fuzz::fuzz_prelogin(data);
});
