//! `newaliases`: checks the alias files (`sendmail -bi`); see [`sendmail::main`].
fn main() -> std::process::ExitCode {
    sendmail::main()
}
