//! The sendmail command line: Sendmail's and Postfix's flags, parsed getopt-style
//! (clustered flags, values attached or in the next argument, `--`, options end at the
//! first recipient), without I/O so it can be tested directly.

use std::path::PathBuf;

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (default): read a message from standard input and submit it.
    Submit,
    /// `-bp`, or invoked as `mailq`: list the queue.
    ListQueue,
    /// `-q`: flush the queue.
    Flush,
    /// `-bi` / `-I`, or invoked as `newaliases`: check the aliases file.
    NewAliases,
    /// `-bs`: SMTP on standard input and output.
    SmtpStdio,
    /// `--help`: print [`help`].
    Help,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The mode.
    pub mode: Mode,
    /// `-C DIR`.
    pub config_dir: Option<PathBuf>,
    /// `-f`/`-r SENDER` as given (angle brackets removed; empty for `<>`).
    pub sender: Option<String>,
    /// `-F NAME`.
    pub full_name: Option<String>,
    /// `-t`.
    pub extract_recipients: bool,
    /// `-i`/`-oi`: a line with a lone `.` does not end the message.
    pub ignore_dots: bool,
    /// Recipient arguments, split on commas.
    pub recipients: Vec<String>,
}

/// A usage error, printed as one line; exit status 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

/// The second line of every usage error.
pub const USAGE_HINT: &str =
    "usage: sendmail [-t] [-i] [-f SENDER] [-F NAME] [-C DIR] [--] RECIPIENT... < message (sendmail --help for more)";

/// What `--help` prints, for the name the program was invoked as.
pub fn help(program: &str) -> String {
    let head = match program {
        "mailq" => "mailq [-C DIR]: list the mail queue, as Postfix prints it (same as sendmail -bp)\n\n",
        "newaliases" => {
            "newaliases [-C DIR]: check the files of alias_maps (Postern reads them directly; nothing to rebuild)\n\n"
        }
        _ => "",
    };
    format!(
        "{head}\
usage: sendmail [options] [--] RECIPIENT... < message
  -t             also take recipients from the To:, Cc: and Bcc: headers (Bcc: removed)
  -i, -oi        a line holding only \".\" does not end the message
  -f SENDER      envelope sender (also -r; -f '<>' for the null sender)
  -F NAME        full name for a From: header that has to be added
  -C DIR         configuration directory (default: $POSTERN_CONFIG, else the built-in one)
  -bm            read a message from standard input and submit it (the default)
  -bs            SMTP on standard input and output
  -bp            list the queue (same as mailq)
  -bi, -I        check the alias files (same as newaliases)
  -q             deliver deferred mail now (postqueue -f)
  --help         this text
  --version      the version
Sendmail's other flags (-oem, -odi, -v, -N, -V, ...) are accepted and ignored.
Exit status: 0 accepted, 64 usage, 65 message refused, 75 try again later, 78 bad configuration.
"
    )
}

/// Options that take a value (attached, or the next argument).
const WITH_VALUE: &str = "BCFLNORVXbefhopr";
/// Flags accepted and ignored, as Postfix does.
const IGNORED_FLAGS: &str = "GUcmnvx";

impl Args {
    /// Parses `argv` (without the program name); `program` is argv[0]'s base name.
    pub fn parse(program: &str, argv: &[String]) -> Result<Args, Usage> {
        let mut a = Args {
            mode: match program {
                "mailq" => Mode::ListQueue,
                "newaliases" => Mode::NewAliases,
                _ => Mode::Submit,
            },
            config_dir: None,
            sender: None,
            full_name: None,
            extract_recipients: false,
            ignore_dots: false,
            recipients: Vec::new(),
        };
        if argv.first().is_some_and(|a| a == "--help") {
            a.mode = Mode::Help;
            return Ok(a);
        }
        let mut i = 0;
        while let Some(arg) = argv.get(i) {
            i += 1;
            if arg == "--" {
                break;
            }
            let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
                i -= 1;
                break;
            };
            for (at, c) in flags.char_indices() {
                if c == 'q' {
                    // -q, -q30m, -qR..., -qS...: flush now (intervals are master's business).
                    a.mode = Mode::Flush;
                    break;
                }
                if WITH_VALUE.contains(c) {
                    let attached = flags.get(at + c.len_utf8()..).unwrap_or_default();
                    let value = if attached.is_empty() {
                        let v = argv
                            .get(i)
                            .ok_or_else(|| Usage(format!("option requires an argument -- '{c}'")))?;
                        i += 1;
                        v.clone()
                    } else {
                        attached.to_string()
                    };
                    a.option(c, value)?;
                    break;
                }
                match c {
                    't' => a.extract_recipients = true,
                    'i' => a.ignore_dots = true,
                    'I' => a.mode = Mode::NewAliases,
                    c if IGNORED_FLAGS.contains(c) => {}
                    other => return Err(Usage(format!("invalid option -- '{other}'"))),
                }
            }
        }
        for arg in argv.get(i..).unwrap_or_default() {
            for r in arg.split(',') {
                let r = strip_brackets(r.trim());
                if !r.is_empty() {
                    if r.chars().any(char::is_control) {
                        return Err(Usage(format!("bad recipient address {r:?}")));
                    }
                    a.recipients.push(r.to_string());
                }
            }
        }
        Ok(a)
    }

    fn option(&mut self, c: char, value: String) -> Result<(), Usage> {
        match c {
            'C' => self.config_dir = Some(PathBuf::from(value)),
            'F' => self.full_name = Some(value),
            'f' | 'r' => {
                let s = strip_brackets(value.trim());
                if s.chars().any(char::is_control) {
                    return Err(Usage(format!("bad sender address {s:?}")));
                }
                self.sender = Some(s.to_string());
            }
            'b' => {
                self.mode = match value.as_str() {
                    "m" => Mode::Submit,
                    "p" => Mode::ListQueue,
                    "i" => Mode::NewAliases,
                    "s" => Mode::SmtpStdio,
                    other => return Err(Usage(format!("unsupported mode -b{other}"))),
                }
            }
            // -oi (and -o i): ignore dots; every other Sendmail option is accepted and
            // ignored (-oem, -odi, -odb, -oQ..., -oA..., ...).
            'o' if value == "i" => self.ignore_dots = true,
            // -B body type, -L label, -N dsn, -O option, -R return, -V envid, -X log,
            // -e mode, -h hops, -p protocol: accepted, no effect.
            _ => {}
        }
        Ok(())
    }
}

fn strip_brackets(s: &str) -> &str {
    s.strip_prefix('<').and_then(|r| r.strip_suffix('>')).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, Usage> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Args::parse("sendmail", &v)
    }

    #[test]
    fn common_invocations() {
        let a = p(&["-t", "-i", "-f", "<alice@example.test>", "-F", "Alice A"]).unwrap();
        assert!(a.extract_recipients && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("alice@example.test"));
        assert_eq!(a.full_name.as_deref(), Some("Alice A"));
        let a = p(&["-oi", "-oem", "-odi", "-fbob", "--", "x@y, z@w", "-v"]).unwrap();
        assert!(a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("bob"));
        assert_eq!(a.recipients, vec!["x@y", "z@w", "-v"]);
        let a = p(&["-ti", "carol"]).unwrap();
        assert!(a.extract_recipients && a.ignore_dots);
        assert_eq!(a.recipients, vec!["carol"]);
        assert_eq!(p(&["-f", "<>", "x"]).unwrap().sender.as_deref(), Some(""));
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::ListQueue);
        assert_eq!(p(&["-q"]).unwrap().mode, Mode::Flush);
        assert_eq!(p(&["-q30m"]).unwrap().mode, Mode::Flush);
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::SmtpStdio);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::NewAliases);
        assert_eq!(
            p(&["-C", "/x/etc", "a"]).unwrap().config_dir,
            Some(PathBuf::from("/x/etc"))
        );
        assert_eq!(
            Args::parse("mailq", &[]).unwrap().mode,
            Mode::ListQueue,
            "argv[0] selects mailq"
        );
        assert_eq!(Args::parse("newaliases", &[]).unwrap().mode, Mode::NewAliases);
        assert_eq!(p(&["--help"]).unwrap().mode, Mode::Help);
        assert!(super::help("mailq").starts_with("mailq [-C DIR]: list the mail queue"));
    }

    #[test]
    fn errors() {
        assert!(p(&["-k", "x"]).is_err());
        assert!(p(&["-f"]).is_err());
        assert!(p(&["-bz"]).is_err());
        assert!(p(&["bad\naddr"]).is_err());
        assert!(p(&["-v", "-n", "-L", "lbl", "-x", "ok"]).is_ok());
    }
}
