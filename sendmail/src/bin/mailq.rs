//! `mailq`: the queue listing (`sendmail -bp`); see [`sendmail::main`].
fn main() -> std::process::ExitCode {
    sendmail::main()
}
