//! smtpd's command parser on arbitrary lines (invariants checked inside).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smtpd::fuzz_command(data);
});
