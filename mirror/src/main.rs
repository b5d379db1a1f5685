//! The `mirror` daemon: see the crate documentation and [`mirror::daemon`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::threaded::threaded_server("mirror", mirror::daemon::init, mirror::daemon::serve)
}
