//! smtpd: the settings come from the service's main.toml (see the crate documentation);
//! the work is one call into the event skeleton.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::event::event_server("smtpd", smtpd::server::new)
}
