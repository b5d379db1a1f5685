//! imapd's whole session before login on arbitrary bytes, fed in chunks as the server
//! reads them, with auth refusing, unavailable or accepting a mailbox that cannot be
//! opened: never a panic, never logged in, never more held than the pre-login bounds
//! (`imapd::session::fuzz_prelogin`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapd::session::fuzz_prelogin(data);
});
