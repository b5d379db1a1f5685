//! `sendmail`: see the library ([`sendmail::main`]).
fn main() -> std::process::ExitCode {
    sendmail::main()
}
