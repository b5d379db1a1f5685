//! `--version` for every Postern program: each `main` calls [`exit_if_asked`] first, so
//! `PROGRAM --version` prints one line and exits 0 before any configuration is read (and
//! a daemon answers it even when not started by master).

/// The version of this build (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The line `--version` prints: `NAME (Postern) VERSION`, NAME being how the program was
/// invoked (so `mailq` says `mailq`).
pub fn line(program: &str) -> String {
    format!("{program} (Postern) {VERSION}")
}

/// When the first argument is `--version`, prints [`line`] for argv[0]'s base name on
/// standard output and exits 0; otherwise returns.
pub fn exit_if_asked() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if args.next().is_some_and(|a| a == "--version") {
        let name = std::path::Path::new(&argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "postern".into());
        println!("{}", line(&name));
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_names_the_program_and_version() {
        assert_eq!(
            super::line("mailq"),
            format!("mailq (Postern) {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
