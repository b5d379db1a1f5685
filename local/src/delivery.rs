//! One delivery job, on the shared delivery-agent job ([`postern_lib::agent`]: the queue
//! file opened, locked, marked and logged there): for each pending recipient, aliases,
//! then each target (virtual mailbox, system account, `/file`, `|command`, or a forward
//! through cleanup); every failure becomes a per-recipient [`Outcome`] here, in one place.

use std::collections::{HashSet, VecDeque};

use postern_lib::address::parse_mailbox;
use postern_lib::agent::Job;
use postern_lib::dsn::Dsn;
use postern_lib::proto::deliver::status_line;
use postern_mailbox::maildir_deliver::DirSyncs;

use crate::aliases::{self, Kind, Target};
use crate::command::CommandEnv;
use crate::forward::Forward;
use crate::ids::{self, Identity};
use crate::mailbox::{self, Lookup, Users};
use crate::settings::{MailboxFormat, Settings};
use crate::system;

/// The result of one delivery (to one target or one recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// 250, 4xx, 5xx.
    pub code: u16,
    /// Enhanced status code.
    pub dsn: Dsn,
    /// Text.
    pub text: String,
}

impl Outcome {
    /// Delivered.
    pub fn sent(text: &str) -> Outcome {
        Outcome {
            code: 250,
            dsn: Dsn::OK,
            text: text.into(),
        }
    }
    /// Try again later.
    pub fn temp(dsn: Dsn, text: String) -> Outcome {
        Outcome { code: 450, dsn, text }
    }
    /// Failed for good.
    pub fn perm(dsn: Dsn, text: String) -> Outcome {
        Outcome { code: 550, dsn, text }
    }
}

/// What the message header tells about every recipient of a job: read once per job
/// ([`crate::replica::header`], one `pread`).
struct Head {
    /// The `Delivered-To:` values, lower-cased.
    seen: Vec<String>,
    /// The replica base name of a hub's message ([`crate::replica::base_in`]).
    replica: Option<String>,
}

impl Head {
    fn of(job: &Job) -> Head {
        let bytes = crate::replica::header(job);
        Head {
            seen: delivered_to(&bytes),
            replica: crate::replica::base_in(&bytes),
        }
    }
}

/// The `Delivered-To:` values of the message header `head`, lower-cased.
fn delivered_to(head: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let l = String::from_utf8_lossy(line);
        let l = l.trim_end_matches('\r');
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case("delivered-to")
        {
            out.push(value.trim().trim_matches(['<', '>']).to_lowercase());
        }
    }
    out
}

/// Delivers every pending recipient of `job`, completing each before the next starts —
/// except a recipient delivered into one virtual Maildir, whose `new/` is left to `syncs`:
/// it is completed by the agent job once the batch's shared sync succeeded
/// ([`Job::complete_after_sync`]). A recipient with several targets (an alias list, a
/// `.forward`) that reached a Maildir has its directories synced at once, so the done
/// mark of its other targets (an mbox append, a command) is not held back.
pub fn deliver(s: &mut Settings, syncs: &mut DirSyncs, job: &mut Job) {
    let head = Head::of(job);
    let mut users = std::mem::take(&mut s.users);
    for pos in job.pending() {
        let Some(r) = job.req.recipients.get(pos) else { continue };
        let matches = job
            .qf
            .recipients
            .get(r.index)
            .is_some_and(|q| q.spec.address == r.original);
        let before = syncs.added();
        let mut targets = 0;
        let mut outcome = if matches {
            deliver_one(s, &mut users, syncs, job, pos, &head, &mut targets)
        } else {
            Outcome::temp(Dsn::MAIL_SYSTEM, "recipient not found in the queue file".into())
        };
        let written = syncs.added() > before;
        if written && outcome.code < 300 && targets == 1 {
            job.complete_after_sync(pos, outcome.code, outcome.dsn, &outcome.text, "local");
            continue;
        }
        // Several targets, or one that failed after a Maildir took the message: what was
        // written is made durable (and moved into new/) now, before the outcome counts.
        if written
            && let Err(e) = syncs.sync()
            && outcome.code < 300
        {
            outcome = Outcome::temp(Dsn::MAIL_SYSTEM, format!("{}, but not made durable: {e}", outcome.text));
        }
        job.complete(pos, outcome.code, outcome.dsn, &outcome.text, "local");
    }
    s.users = users;
}

/// One recipient: aliases, then each target (a system account's `.forward` adds more);
/// the worst outcome wins (a temporary failure of one target retries the recipient).
/// With several targets each gets its own log line. `ntargets` says how many there were.
fn deliver_one(
    s: &mut Settings,
    users: &mut Users,
    syncs: &mut DirSyncs,
    job: &Job,
    pos: usize,
    head: &Head,
    ntargets: &mut usize,
) -> Outcome {
    let Some(r) = job.req.recipients.get(pos) else {
        return Outcome::temp(Dsn::MAIL_SYSTEM, "no such recipient in the request".into());
    };
    let addr = match parse_mailbox(&r.address, true) {
        Ok(a) => a,
        Err(e) => return Outcome::perm(Dsn::BAD_ADDRESS_SYNTAX, format!("bad recipient address: {e}")),
    };
    if !s.destinations.is_local_domain(&addr.domain) {
        return Outcome::perm(Dsn::BAD_SYSTEM, format!("domain {} is not delivered here", addr.domain));
    }
    let lower = r.address.to_lowercase();
    if head.seen.contains(&lower) {
        return Outcome::perm(Dsn::ROUTING_LOOP, format!("mail forwarding loop for {}", r.address));
    }
    let local = addr.local.to_lowercase();
    let base = s
        .delimiter
        .chars()
        .filter_map(|d| local.find(d))
        .min()
        .filter(|&at| at > 0)
        .and_then(|at| local.get(..at))
        .map(str::to_string);
    let myorigin = s.myorigin.clone();
    let destinations = s.destinations.clone();
    let is_local = |d: &str| destinations.is_local_domain(d);
    if let Err(e) = s.aliases() {
        return Outcome::temp(Dsn::MAIL_SYSTEM, format!("alias table unavailable: {e}"));
    }
    let read = |path: &str, uid: u32| read_include(s, path, uid);
    let targets = aliases::expand(
        s.aliases_loaded(),
        s.alias_owners(),
        &local,
        base.as_deref(),
        &myorigin,
        &is_local,
        &read,
    );
    let targets = match targets {
        Ok(t) => t,
        Err(e) => return Outcome::perm(Dsn::ROUTING_LOOP, e),
    };
    let rcpt = Rcpt {
        address: &r.address,
        index: r.index,
        local: &local,
        extension: base
            .as_deref()
            .and_then(|b| local.get(b.len() + 1..))
            .unwrap_or_default(),
        domain: &addr.domain,
    };
    let mut work: VecDeque<Target> = targets.into();
    let mut done: Vec<(String, u64, Outcome)> = Vec::new();
    let mut remote: Vec<(String, String)> = Vec::new();
    // Targets already handled (a `.forward` naming someone already delivered to), and
    // users whose `.forward` was already followed (two files naming each other): such a
    // user gets their mailbox instead of the loop.
    let mut handled: Vec<Kind> = Vec::new();
    let mut forwarded: HashSet<String> = HashSet::new();
    let mut rounds = 0;
    while let Some(mut t) = work.pop_front() {
        if handled.contains(&t.kind) {
            continue;
        }
        handled.push(t.kind.clone());
        if let Kind::User(u) = &t.kind
            && forwarded.contains(u)
        {
            t.no_forward = true;
        }
        rounds += 1;
        if rounds > aliases::MAX_TARGETS {
            done.push((
                r.address.clone(),
                now_micros(),
                Outcome::perm(Dsn::ROUTING_LOOP, "too many forwarding targets".into()),
            ));
            break;
        }
        let start = now_micros();
        let sender = t.owner.clone().unwrap_or_else(|| job.req.sender.clone());
        let (to, o) = match &t.kind {
            Kind::Remote(a) => {
                remote.push((sender, a.clone()));
                continue;
            }
            Kind::User(u) => match user(s, users, syncs, job, head, &rcpt, &t, u, &sender) {
                UserResult::Done(to, o) => (to, o),
                UserResult::More(more) => {
                    forwarded.insert(u.clone());
                    // The user's own name in their .forward is their mailbox: let it by.
                    handled.retain(|k| k != &t.kind);
                    work.extend(more);
                    continue;
                }
            },
            Kind::File(path) => (path.clone(), file(s, job, &rcpt, &t, path, &sender)),
            Kind::Command(cmd) => (format!("|{cmd}"), command(s, job, &rcpt, &t, cmd, &sender)),
            Kind::Unusable(why) => (r.address.clone(), Outcome::temp(Dsn::MAIL_SYSTEM, why.clone())),
        };
        done.push((to, start, o));
    }
    // Remote targets: one copy per envelope sender, with all its recipients.
    let mut senders: Vec<&String> = remote.iter().map(|(s, _)| s).collect();
    senders.sort();
    senders.dedup();
    for sender in senders {
        let start = now_micros();
        let to: Vec<String> = remote
            .iter()
            .filter(|(s, _)| s == sender)
            .map(|(_, a)| a.clone())
            .collect();
        let qr = job.qf.recipients.get(r.index);
        let f = Forward {
            sender,
            recipient: &r.address,
            orcpt: qr.and_then(|q| q.spec.orcpt.as_deref()),
            attributes: &job.qf.envelope.attributes,
            size: job.qf.content_len(),
        };
        let o = match job.content() {
            Ok(mut c) => crate::forward::forward(&f, &to, &mut c),
            Err(e) => Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot read queue file: {e}")),
        };
        done.push((to.join(","), start, o));
    }
    *ntargets = done.len();
    if done.len() > 1 {
        let req = &job.req;
        for (to, start, o) in &done {
            let times = [
                req.arrival_micros,
                req.active_micros,
                req.dispatch_micros,
                *start,
                now_micros(),
            ];
            let line = status_line(to, &r.address, "local", times, o.dsn, o.status(), &o.text);
            tracing::info!(queue_id = req.queue_id.as_str(), "{line}");
        }
    }
    merge(done.into_iter().map(|(_, _, o)| o).collect())
}

/// The recipient being delivered, as commands see it.
struct Rcpt<'a> {
    address: &'a str,
    index: usize,
    local: &'a str,
    extension: &'a str,
    domain: &'a str,
}

/// What a user target came to.
enum UserResult {
    /// Delivered or failed (the address for the log, the outcome).
    Done(String, Outcome),
    /// A system account's `.forward`: more targets.
    More(Vec<Target>),
}

/// `Return-Path:` and `Delivered-To:` for the recipient.
fn prefix(sender: &str, rcpt: &Rcpt<'_>) -> String {
    format!("Return-Path: <{sender}>\nDelivered-To: {}\n", rcpt.address)
}

/// The once-only Maildir name of this message for this recipient and mailbox (empty:
/// the recipient's virtual mailbox; there, a replicated message's [`crate::replica`] name).
fn once(job: &Job, head: &Head, rcpt: &Rcpt<'_>, mailbox: &str) -> String {
    // A message from a trusted hub: the name its GUID gives, the same on every replica.
    if mailbox.is_empty()
        && let Some(base) = &head.replica
    {
        return base.clone();
    }
    // Virtual mailboxes keep the tag of the address alone (the name earlier versions gave).
    let key = if mailbox.is_empty() {
        rcpt.address.to_string()
    } else {
        format!("{}\0{mailbox}", rcpt.address)
    };
    let tag = format!("{}x{:08x}", rcpt.index, fnv32(key.as_bytes()));
    let env = &job.qf.envelope;
    postern_mailbox::maildir_deliver::once_name(env.arrival.secs, env.arrival.micros, env.queue_id.as_str(), &tag)
}

/// A local user: virtual (etc/users), else a system account when enabled.
#[allow(clippy::too_many_arguments)]
fn user(
    s: &Settings,
    users: &mut Users,
    syncs: &mut DirSyncs,
    job: &Job,
    head: &Head,
    rcpt: &Rcpt<'_>,
    t: &Target,
    u: &str,
    sender: &str,
) -> UserResult {
    let name = base_user(u, &s.delimiter);
    let to = format!("{u}@{}", rcpt.domain);
    if postern_lib::users::check_name(&name).is_err() {
        return UserResult::Done(to, Outcome::perm(Dsn::BAD_MAILBOX, format!("unknown user: \"{u}\"")));
    }
    let prefix = prefix(sender, rcpt);
    // Read with pread: no descriptor of its own, no shared file offset.
    let mut content = job.content_at();
    let size = job.qf.content_len();
    let lookup_base = match s.mailbox_format {
        MailboxFormat::Mbox => s.spool_dir(),
        MailboxFormat::Maildir => s.mailbox_base.clone(),
    };
    let quota = match users.lookup(&lookup_base, &name) {
        Lookup::Exists(quota) => quota,
        Lookup::TempFail(why) => return UserResult::Done(to, Outcome::temp(Dsn::MAIL_SYSTEM, why)),
        Lookup::Unknown if !s.system_users => {
            return UserResult::Done(to, Outcome::perm(Dsn::BAD_MAILBOX, format!("unknown user: \"{name}\"")));
        }
        Lookup::Unknown => {
            let account = match Identity::by_name(&name) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return UserResult::Done(to, Outcome::perm(Dsn::BAD_MAILBOX, format!("unknown user: \"{name}\"")));
                }
                Err(e) => return UserResult::Done(to, Outcome::temp(Dsn::MAIL_SYSTEM, e)),
            };
            let once = once(job, head, rcpt, &format!("system:{name}"));
            return match system::deliver(
                s,
                &account,
                t.no_forward,
                sender,
                &once,
                prefix.as_bytes(),
                &mut content,
            ) {
                system::Delivery::Done(o) => UserResult::Done(to, o),
                system::Delivery::Forward(list, uid) => {
                    let tables = s.aliases_loaded();
                    let destinations = s.destinations.clone();
                    let is_local = |d: &str| destinations.is_local_domain(d);
                    // Include files of a `.forward` open with the account's rights.
                    let read = |path: &str, uid: u32| read_include(s, path, uid);
                    match aliases::expand_forward(
                        tables,
                        s.alias_owners(),
                        &name,
                        &list,
                        uid,
                        t.owner.clone(),
                        &s.myorigin,
                        &is_local,
                        &read,
                    ) {
                        Ok(more) => UserResult::More(more),
                        Err(e) => UserResult::Done(to, Outcome::perm(Dsn::ROUTING_LOOP, e)),
                    }
                }
            };
        }
    };
    let once = once(job, head, rcpt, "");
    // As mail_owner: local rests with its rights when it runs as root (see ids.rs).
    let o = if s.mailbox_format == MailboxFormat::Mbox {
        crate::mbox::deliver_user(
            &s.spool_dir(),
            &name,
            sender,
            quota,
            size,
            prefix.as_bytes(),
            &mut content,
            s.lock_stale,
        )
    } else {
        mailbox::deliver(
            &s.mailbox_base,
            &name,
            &once,
            quota,
            size,
            prefix.as_bytes(),
            &mut content,
            syncs,
        )
    };
    UserResult::Done(to, o)
}

/// The account whose rights a command or file target of `t` gets: the owner of the file
/// it came from, `default_privs` for root (or an owner with no account).
fn target_rights(s: &Settings, t: &Target) -> Result<Identity, Outcome> {
    rights_of(s, t.owner_uid)
}

/// The rights the owner `uid` of an alias table, `.forward` or include file lends to what
/// the file names: its own, `default_privs` for root or a uid with no account; local's
/// own when it cannot switch.
fn rights_of(s: &Settings, uid: u32) -> Result<Identity, Outcome> {
    let owner = match Identity::by_uid(uid) {
        Ok(Some(id)) => id,
        Ok(None) => Identity {
            uid: 0,
            ..Identity::current()
        },
        Err(e) => return Err(Outcome::temp(Dsn::MAIL_SYSTEM, e)),
    };
    if !ids::can_switch() {
        // Unprivileged (the development layout): everything runs as local itself.
        return Ok(Identity::current());
    }
    system::rights(s, &owner)
}

/// Reads the `:include:` file `path` named in a file owned by `uid`, with that owner's
/// rights ([`rights_of`]), as Postfix opens include files: a `.forward` can include only
/// what its account may read.
fn read_include(s: &Settings, path: &str, uid: u32) -> Result<(Vec<String>, u32), String> {
    if !ids::can_switch() {
        return aliases::read_include_file(path);
    }
    let id = rights_of(s, uid).map_err(|o| o.text)?;
    ids::as_account(&id, || aliases::read_include_file(path)).and_then(|r| r)
}

/// For a `/file` (`command` false) or `|command` target: whether its origin may have it,
/// the rights it runs with, the message.
fn permitted(
    s: &Settings,
    job: &Job,
    t: &Target,
    command: bool,
) -> Result<(Identity, std::io::Take<std::fs::File>), Outcome> {
    if !s.allowed(command, t.class) {
        let (what, setting) = if command {
            ("commands", "allow_mail_to_commands")
        } else {
            ("files", "allow_mail_to_files")
        };
        return Err(Outcome::perm(
            Dsn::NOT_AUTHORIZED,
            format!("mail to {what} is restricted ({} not in {setting})", t.class.word()),
        ));
    }
    let id = target_rights(s, t)?;
    let content = job
        .content()
        .map_err(|e| Outcome::temp(Dsn::MAIL_SYSTEM, format!("cannot read queue file: {e}")))?;
    Ok((id, content))
}

/// A `/file` target.
fn file(s: &Settings, job: &Job, rcpt: &Rcpt<'_>, t: &Target, path: &str, sender: &str) -> Outcome {
    let (id, mut content) = match permitted(s, job, t, false) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let prefix = prefix(sender, rcpt);
    ids::as_account(&id, || {
        crate::mbox::append(path, sender, prefix.as_bytes(), &mut content)
    })
    .unwrap_or_else(|e| Outcome::temp(Dsn::MAIL_SYSTEM, e))
}

/// A `|command` target.
fn command(s: &Settings, job: &Job, rcpt: &Rcpt<'_>, t: &Target, cmd: &str, sender: &str) -> Outcome {
    let (id, content) = match permitted(s, job, t, true) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let original = job
        .qf
        .recipients
        .get(rcpt.index)
        .map(|q| q.spec.address.as_str())
        .unwrap_or(rcpt.address);
    let env = CommandEnv {
        sender,
        recipient: rcpt.address,
        original,
        local: rcpt.local,
        extension: rcpt.extension,
        domain: rcpt.domain,
    };
    let head = format!("{}{}", crate::mbox::from_line(sender), prefix(sender, rcpt));
    crate::command::run(
        cmd,
        &id,
        ids::can_switch(),
        &env,
        head.into_bytes(),
        content,
        s.command_limit,
    )
}

/// FNV-1a, 32 bits: tells apart the addresses one queue recipient was routed to.
fn fnv32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// `user+ext` → `user` for the mailbox name.
fn base_user(u: &str, delimiter: &str) -> String {
    delimiter
        .chars()
        .filter_map(|d| u.find(d))
        .min()
        .filter(|&at| at > 0)
        .and_then(|at| u.get(..at))
        .unwrap_or(u)
        .to_string()
}

/// The recipient's outcome from its targets': any temporary failure → that; else any
/// success → sent; else the first permanent failure.
fn merge(outcomes: Vec<Outcome>) -> Outcome {
    if let Some(t) = outcomes.iter().find(|o| (400..500).contains(&o.code)) {
        return t.clone();
    }
    if outcomes.len() > 1 && outcomes.iter().any(|o| o.code < 300) {
        return Outcome::sent("delivered to alias targets");
    }
    outcomes
        .into_iter()
        .next()
        .unwrap_or_else(|| Outcome::perm(Dsn::BAD_MAILBOX, "alias expands to nothing".into()))
}

impl Outcome {
    fn status(&self) -> &'static str {
        match self.code {
            200..=299 => "sent",
            500.. => "bounced",
            _ => "deferred",
        }
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
