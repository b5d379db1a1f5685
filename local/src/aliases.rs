//! Alias expansion: a local name to the targets it finally stands for, with `:include:`
//! files read in place. Each target remembers where it came from ([`Class`]: Postfix's
//! `alias`, `forward`, `include`, which `allow_mail_to_commands`/`allow_mail_to_files`
//! name) and whose rights a command or file delivery for it gets ([`Target::owner_uid`]:
//! the owner of the alias file or `:include:` file; root means `default_privs`).
//!
//! An `:include:` file is one or more targets a line ([`postern_lib::aliases::parse_list`]).
//! It is opened with the rights of the owner of the file that names it — the alias table's
//! owner, the `.forward`'s account, an outer include file's owner; root's become
//! `default_privs` — as Postfix opens it (the caller's [`ReadInclude`] does the switch), so
//! a user's `.forward` can include only what that user may read, and the text of a
//! refusal names the file and the reason, never its content.
//!
//! `.forward` and include files ([`read_list`]) are opened with safe_open's
//! [`open_read`](postern_lib::safe_open::open_read): `O_NOFOLLOW | O_NONBLOCK` (a symlink
//! is refused, and a FIFO put in place of the file cannot block local), then the opened
//! descriptor must be a regular file with one link, writable by its owner only, owned as
//! required, at most [`MAX_INCLUDE`] bytes (a larger one is refused whole, never cut at a
//! byte count that could change a target). One expansion reads at most
//! [`MAX_INCLUDE_FILES`] include files, nests at most [`MAX_DEPTH`] deep and yields at
//! most [`MAX_TARGETS`] targets. An include file that cannot be read defers the recipient.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use postern_lib::aliases::Aliases;
use postern_lib::safe_open::{Expect, SafeOpenError, open_read};

/// Deepest alias nesting.
pub const MAX_DEPTH: usize = 20;
/// Most targets one recipient may expand to.
pub const MAX_TARGETS: usize = 1000;
/// Largest `:include:` or `.forward` file read.
pub const MAX_INCLUDE: u64 = 1 << 20;
/// Most `:include:` files read for one recipient.
pub const MAX_INCLUDE_FILES: usize = 100;

/// Reads the `:include:` file `path` with the rights of `uid`, the owner of the file that
/// names it: its targets and its owner, or why it cannot be used.
pub type ReadInclude<'a> = &'a dyn Fn(&str, u32) -> Result<(Vec<String>, u32), String>;

/// Where a target was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// In an alias table.
    Alias,
    /// In a user's `.forward`.
    Forward,
    /// In an `:include:` file.
    Include,
}

impl Class {
    /// The word `allow_mail_to_commands` and `allow_mail_to_files` use.
    pub fn word(self) -> &'static str {
        match self {
            Class::Alias => "alias",
            Class::Forward => "forward",
            Class::Include => "include",
        }
    }
}

/// Where an expanded alias delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A local user (mailbox name, lower-case).
    User(String),
    /// Append to a file (mbox style).
    File(String),
    /// Pipe to a command.
    Command(String),
    /// An address in another domain: forwarded through cleanup.
    Remote(String),
    /// A target that cannot be used now (an unreadable `:include:` file): defers.
    Unusable(String),
}

/// One final target, with the envelope sender its delivery uses (`owner-` aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What and where.
    pub kind: Kind,
    /// `Some(owner-NAME@myorigin)` when an owner alias applies.
    pub owner: Option<String>,
    /// Where it was found.
    pub class: Class,
    /// Whose rights commands and files get (file owner; 0: `default_privs`).
    pub owner_uid: u32,
    /// A user target that must not read that user's `.forward` again (`\user`, or the
    /// user named in their own `.forward`).
    pub no_forward: bool,
}

/// Where targets are being read from: the class and rights they get.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Class of the targets.
    pub class: Class,
    /// Owner of the file they come from.
    pub uid: u32,
}

/// The first table that has `name`, with its index.
fn lookup<'a>(tables: &'a [Aliases], name: &str) -> Option<(usize, &'a [String])> {
    tables.iter().enumerate().find_map(|(i, t)| t.get(name).map(|v| (i, v)))
}

/// Expands the local part `name` (already lower-case; `ext_base` is the name without its
/// address extension, tried when `name` itself is no alias). `owners` are the owners of
/// the tables; `is_local(domain)` says whether a domain is ours; `read` opens include
/// files.
pub fn expand(
    tables: &[Aliases],
    owners: &[u32],
    name: &str,
    ext_base: Option<&str>,
    myorigin: &str,
    is_local: &dyn Fn(&str) -> bool,
    read: ReadInclude<'_>,
) -> Result<Vec<Target>, String> {
    let key = if lookup(tables, name).is_some() {
        name
    } else {
        ext_base.filter(|b| lookup(tables, b).is_some()).unwrap_or(name)
    };
    let mut w = Walk::new(tables, owners, myorigin, is_local, read);
    w.name(
        key,
        0,
        None,
        Source {
            class: Class::Alias,
            uid: 0,
        },
    )?;
    Ok(w.out)
}

/// Expands the targets of `user`'s `.forward` (`list`, found in a file owned by `uid`):
/// local names through the alias tables, the user's own name to their mailbox.
#[allow(clippy::too_many_arguments)]
pub fn expand_forward(
    tables: &[Aliases],
    owners: &[u32],
    user: &str,
    list: &[String],
    uid: u32,
    owner: Option<String>,
    myorigin: &str,
    is_local: &dyn Fn(&str) -> bool,
    read: ReadInclude<'_>,
) -> Result<Vec<Target>, String> {
    let mut w = Walk::new(tables, owners, myorigin, is_local, read);
    let src = Source {
        class: Class::Forward,
        uid,
    };
    for t in list {
        w.target(t, Some(user), 0, &owner, src)?;
    }
    Ok(w.out)
}

/// Reads the targets of a `.forward` or `:include:` file (see the module doc):
/// `Ok(None)` when there is no such file, else (targets, owner uid) or why it cannot be
/// used. `allowed_owner` (besides root) must own it when given. Runs with the caller's
/// rights: the caller switches to the right account first.
pub fn read_list(path: &str, allowed_owner: Option<u32>) -> Result<Option<(Vec<String>, u32)>, String> {
    let file = match open_read(Path::new(path), &Expect::any()) {
        Ok(f) => f,
        Err(SafeOpenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // Every check on the opened descriptor, not on the name.
    let md = file.metadata().map_err(|e| format!("fstat {path}: {e}"))?;
    if md.mode() & 0o022 != 0 {
        return Err(format!("{path}: group or world writable"));
    }
    if let Some(u) = allowed_owner
        && md.uid() != u
        && md.uid() != 0
    {
        return Err(format!("{path}: not owned by the user or root"));
    }
    if md.len() > MAX_INCLUDE {
        return Err(format!("{path}: larger than {MAX_INCLUDE} bytes"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_INCLUDE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() as u64 > MAX_INCLUDE {
        return Err(format!("{path}: larger than {MAX_INCLUDE} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
    Ok(Some((postern_lib::aliases::parse_list(&text), md.uid())))
}

/// [`read_list`] for an `:include:` file, which must exist; any owner.
pub fn read_include_file(path: &str) -> Result<(Vec<String>, u32), String> {
    read_list(path, None)?.ok_or_else(|| format!("{path}: No such file or directory"))
}

struct Walk<'a> {
    tables: &'a [Aliases],
    owners: &'a [u32],
    myorigin: &'a str,
    is_local: &'a dyn Fn(&str) -> bool,
    read: ReadInclude<'a>,
    includes: usize,
    seen: HashSet<String>,
    out: Vec<Target>,
}

impl<'a> Walk<'a> {
    fn new(
        tables: &'a [Aliases],
        owners: &'a [u32],
        myorigin: &'a str,
        is_local: &'a dyn Fn(&str) -> bool,
        read: ReadInclude<'a>,
    ) -> Self {
        Walk {
            tables,
            owners,
            myorigin,
            is_local,
            read,
            includes: 0,
            seen: HashSet::new(),
            out: Vec::new(),
        }
    }

    fn push(&mut self, kind: Kind, owner: &Option<String>, src: Source, no_forward: bool) -> Result<(), String> {
        if self.out.len() >= MAX_TARGETS {
            return Err(format!("alias expands to more than {MAX_TARGETS} targets"));
        }
        if !self.out.iter().any(|t| t.kind == kind) {
            self.out.push(Target {
                kind,
                owner: owner.clone(),
                class: src.class,
                owner_uid: src.uid,
                no_forward,
            });
        }
        Ok(())
    }

    /// A local name: its alias targets, or the user of that name.
    fn name(&mut self, name: &str, depth: usize, owner: Option<String>, src: Source) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("alias nesting deeper than {MAX_DEPTH} at {name}"));
        }
        let Some((table, targets)) = lookup(self.tables, name) else {
            return self.push(Kind::User(name.to_string()), &owner, src, false);
        };
        if !self.seen.insert(name.to_string()) {
            // Already expanded on this path or another: a loop or a duplicate; nothing more.
            return Ok(());
        }
        let owner_name = format!("owner-{name}");
        let owner = if lookup(self.tables, &owner_name).is_some() {
            Some(format!("{owner_name}@{}", self.myorigin))
        } else {
            owner
        };
        let src = Source {
            class: Class::Alias,
            uid: self.owners.get(table).copied().unwrap_or(0),
        };
        for t in targets {
            self.target(t, Some(name), depth, &owner, src)?;
        }
        Ok(())
    }

    /// One target as written; `parent` is the alias it belongs to (a target naming its
    /// own alias delivers to the user of that name).
    fn target(
        &mut self,
        t: &str,
        parent: Option<&str>,
        depth: usize,
        owner: &Option<String>,
        src: Source,
    ) -> Result<(), String> {
        let t = t.trim().trim_matches('"');
        if let Some(cmd) = t.strip_prefix('|') {
            return self.push(Kind::Command(cmd.to_string()), owner, src, false);
        }
        if t.starts_with('/') {
            return self.push(Kind::File(t.to_string()), owner, src, false);
        }
        if let Some(inc) = t.strip_prefix(":include:") {
            return self.include(inc.trim(), depth, owner, src);
        }
        if let Some(user) = t.strip_prefix('\\') {
            return self.push(Kind::User(user.to_lowercase()), owner, src, true);
        }
        let local = match t.rsplit_once('@') {
            Some((l, d)) if (self.is_local)(&d.trim_end_matches('.').to_lowercase()) => l.to_lowercase(),
            Some(_) => return self.push(Kind::Remote(t.to_string()), owner, src, false),
            None => t.to_lowercase(),
        };
        if Some(local.as_str()) == parent {
            self.push(Kind::User(local), owner, src, src.class == Class::Forward)
        } else {
            self.name(&local, depth + 1, owner.clone(), src)
        }
    }

    /// An `:include:` file named in a file of `parent` (whose owner's rights open it).
    fn include(&mut self, path: &str, depth: usize, owner: &Option<String>, parent: Source) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("include nesting deeper than {MAX_DEPTH} at {path}"));
        }
        if !self.seen.insert(format!(":include:{path}")) {
            return Ok(());
        }
        if self.includes >= MAX_INCLUDE_FILES {
            return Err(format!("more than {MAX_INCLUDE_FILES} include files"));
        }
        self.includes += 1;
        let read = if path.starts_with('/') {
            (self.read)(path, parent.uid).map_err(|why| format!("cannot read include file: {why}"))
        } else {
            Err(format!(":include:{path}: must be an absolute path"))
        };
        let (targets, uid) = match read {
            Ok(r) => r,
            Err(why) => {
                let src = Source {
                    class: Class::Include,
                    uid: 0,
                };
                return self.push(Kind::Unusable(why), owner, src, false);
            }
        };
        let src = Source {
            class: Class::Include,
            uid,
        };
        for t in &targets {
            self.target(t, None, depth + 1, owner, src)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(t: &[Target]) -> Vec<String> {
        t.iter()
            .map(|t| match &t.kind {
                Kind::User(u) => u.clone(),
                Kind::File(f) => format!("file:{f}"),
                Kind::Remote(r) => format!("remote:{r}"),
                Kind::Command(c) => format!("cmd:{c}"),
                Kind::Unusable(u) => format!("unusable:{u}"),
            })
            .collect()
    }

    #[test]
    fn expands_recursively_with_loops_and_owner() {
        let a = Aliases::parse(
            "staff: alice, bob@example.test, ops\nops: carol, staff\nowner-staff: alice\n\
             self: self, dave\nremote: x@other.org\nlog: /tmp/log, |cmd\n",
        )
        .unwrap();
        let is_local = |d: &str| d == "example.test";
        let here = |p: &str, _: u32| read_include_file(p);
        let t = expand(
            std::slice::from_ref(&a),
            &[7],
            "staff",
            None,
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert_eq!(users(&t), vec!["alice", "bob", "carol"]);
        assert!(t.iter().all(|t| t.owner.as_deref() == Some("owner-staff@example.test")));
        let t = expand(
            std::slice::from_ref(&a),
            &[7],
            "self",
            None,
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert_eq!(users(&t), vec!["self", "dave"]);
        let t = expand(
            std::slice::from_ref(&a),
            &[7],
            "nobody",
            None,
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert_eq!(users(&t), vec!["nobody"]);
        let t = expand(
            std::slice::from_ref(&a),
            &[7],
            "staff+x",
            Some("staff"),
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert_eq!(users(&t).len(), 3);
        let t = expand(
            std::slice::from_ref(&a),
            &[7],
            "remote",
            None,
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert_eq!(users(&t), vec!["remote:x@other.org"]);
        let t = expand(&[a], &[7], "log", None, "example.test", &is_local, &here).unwrap();
        assert_eq!(users(&t), vec!["file:/tmp/log", "cmd:cmd"]);
        assert!(t.iter().all(|t| t.class == Class::Alias && t.owner_uid == 7));
    }

    #[test]
    fn includes_carry_their_class_and_owner_and_forward_names_self() {
        let dir = tempfile::tempdir().unwrap();
        let inc = dir.path().join("members");
        std::fs::write(&inc, "# list\nalice, |/bin/true\nx@other.org\n").unwrap();
        let a = Aliases::parse(&format!(
            "list: :include:{}\nbad: :include:{}/missing\n",
            inc.display(),
            dir.path().display()
        ))
        .unwrap();
        let is_local = |d: &str| d == "example.test";
        let here = |p: &str, _: u32| read_include_file(p);
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&inc).unwrap());
        let t = expand(
            std::slice::from_ref(&a),
            &[0],
            "list",
            None,
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert_eq!(users(&t), vec!["alice", "cmd:/bin/true", "remote:x@other.org"]);
        assert!(t.iter().all(|t| t.owner_uid == me));
        assert_eq!(t.get(1).map(|t| t.class), Some(Class::Include));
        let t = expand(
            std::slice::from_ref(&a),
            &[0],
            "bad",
            None,
            "example.test",
            &is_local,
            &here,
        )
        .unwrap();
        assert!(matches!(t.first().map(|t| &t.kind), Some(Kind::Unusable(_))));
        let list = vec!["me".to_string(), "\\carol".to_string(), "list".to_string()];
        let t = expand_forward(&[a], &[0], "me", &list, 5, None, "example.test", &is_local, &here).unwrap();
        assert_eq!(
            users(&t),
            vec!["me", "carol", "alice", "cmd:/bin/true", "remote:x@other.org"]
        );
        assert!(
            t.first()
                .is_some_and(|t| t.no_forward && t.class == Class::Forward && t.owner_uid == 5)
        );
        assert!(t.get(1).is_some_and(|t| t.no_forward));
    }

    #[test]
    fn lists_are_opened_safely_and_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(read_list(&p("missing"), None).unwrap(), None);
        std::fs::write(p("ok"), "alice, bob\n").unwrap();
        assert_eq!(
            read_list(&p("ok"), Some(me)).unwrap(),
            Some((vec!["alice".to_string(), "bob".to_string()], me))
        );
        // A FIFO returns at once (no writer needed) and is refused.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p("fifo").as_str(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = read_list(&p("fifo"), None).unwrap_err();
        assert!(e.contains("not a regular file (fifo)"), "{e}");
        std::os::unix::fs::symlink(p("ok"), p("link")).unwrap();
        assert!(read_list(&p("link"), None).unwrap_err().contains("symbolic link"));
        std::fs::hard_link(p("ok"), p("hard")).unwrap();
        assert!(read_list(&p("hard"), None).unwrap_err().contains("2 hard links"));
        std::fs::remove_file(p("hard")).unwrap();
        std::fs::write(p("gw"), "x\n").unwrap();
        std::fs::set_permissions(p("gw"), std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(read_list(&p("gw"), None).unwrap_err().contains("writable"));
        if me != 0 {
            assert!(read_list(&p("ok"), Some(me + 1)).unwrap_err().contains("not owned"));
        }
        // Too large: refused whole, never cut short.
        let big = "a\n".repeat((MAX_INCLUDE / 2) as usize + 1);
        std::fs::write(p("big"), big).unwrap();
        assert!(read_list(&p("big"), None).unwrap_err().contains("larger than"));
    }

    #[test]
    fn include_files_are_read_by_the_callers_reader_with_the_parents_owner_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let inc = dir.path().join("inc");
        std::fs::write(&inc, "alice\n").unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let read = |p: &str, uid: u32| {
            seen.borrow_mut().push(uid);
            read_include_file(p)
        };
        let is_local = |d: &str| d == "example.test";
        let list = vec![format!(":include:{}", inc.display())];
        let t = expand_forward(&[], &[], "me", &list, 1234, None, "example.test", &is_local, &read).unwrap();
        assert_eq!(users(&t), vec!["alice"]);
        assert_eq!(*seen.borrow(), vec![1234], "opened with the .forward owner's rights");
        // More include files than allowed: refused, not read on and on.
        let many: Vec<String> = (0..=MAX_INCLUDE_FILES)
            .map(|i| format!(":include:{}/none{i}", dir.path().display()))
            .collect();
        let e = expand_forward(&[], &[], "me", &many, 1234, None, "example.test", &is_local, &read).unwrap_err();
        assert!(e.contains("include files"), "{e}");
    }
}
