//! The machine's host name, for log lines and as the default of `myhostname`.

/// The host name from `gethostname(2)`, `localhost` when it is empty or not UTF-8.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
