//! The IPC frame decoder on arbitrary bytes, fed in the chunk sizes it asks for: frames
//! or an error, never a panic, never a buffer beyond one frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern_lib::ipc::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = d.wants().min(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let _ = f.message::<serde_json_value::Any>();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

mod serde_json_value {
    /// Accepts any JSON value, so the message path is exercised too.
    #[derive(serde::Deserialize)]
    pub struct Any(#[allow(dead_code)] serde::de::IgnoredAny);
}
