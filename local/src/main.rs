//! # local — the local delivery agent
//!
//! Serves the [`deliver`](postern_lib::proto::deliver) protocol on `private/local`, one job
//! or one batch of jobs per connection (single_server: concurrency comes from master
//! running several), on the shared delivery-agent job [`postern_lib::agent`], which opens
//! and locks the queue file, marks each finished recipient done and logs it. qmgr sends a
//! batch — several messages for the one recipient that is a `local` destination — when
//! more than one is waiting: their Maildir files are written into `tmp/`, then at the end
//! of the batch `fdatasync`ed (several at once), moved into `new/`, `new/` `fsync`ed once
//! (each Maildir opened once per batch), and only then are the recipients marked done (their queue files synced several at
//! once) and reported ([`delivery::deliver`], [`postern_mailbox::maildir_deliver::DirSyncs`]).
//! A quota is checked against what `new/` and `cur/` hold, so the files of one batch not
//! yet moved are not counted: a mailbox can go over its quota by one batch. For each
//! pending recipient of a job, all in `mydestination`:
//!
//! 1. `alias_maps` (aliases(5) format, via [`postern_lib::aliases`]) expanded recursively
//!    with loop protection (a name already expanded is not expanded again; an alias naming
//!    itself delivers to the user; at most [`aliases::MAX_DEPTH`] levels and
//!    [`aliases::MAX_TARGETS`] targets). The `user+ext` form is looked up before `user`
//!    (`recipient_delimiter`). An `owner-NAME` alias becomes the envelope sender
//!    (`Return-Path:`) of what `NAME` expands to, so errors go to the list owner.
//! 2. a user of `etc/users` — asked of auth (`LookupVirtual`, which gives the quota) when auth
//!    listens on `private/auth`, else the existence of `virtual_mailbox_base/<user>/` —
//!    gets a Maildir delivery into `virtual_mailbox_base/<user>/` (created with
//!    `tmp/ new/ cur/` on first delivery) through [`postern_mailbox::maildir_deliver`], with
//!    `Return-Path: <sender>` and `Delivered-To: <recipient>` prepended. The file's name is
//!    derived from the queue ID and the recipient and moved into `new/` only if absent, so
//!    a recipient whose delivery finished just before local was killed (before its done
//!    mark) is not delivered a second time on the retry. With `mailbox_format = "mbox"`
//!    the mailbox is instead the mbox file `mail_spool_directory/<user>` (empty:
//!    `virtual_mailbox_base/<user>`), appended under an fcntl lock, a `flock` and a
//!    dot-lock `<user>.lock` (taken over after `stale_lock_time`), quota counted on the
//!    file's size ([`mbox`]). An mbox append is not once-only: a local killed after the
//!    fsync and before the done mark delivers that message again on the retry.
//! 3. `/file` targets get the same mbox append (`From ` line, `>From ` escaping, fcntl
//!    lock and `flock`, fsync), opened with safe_open (no symlink, one link, regular
//!    file); `|command` targets run `/bin/sh -c` with the message on standard input and
//!    Postfix's environment, killed after `command_time_limit`, the exit status read as
//!    sysexits ([`command`]); each allowed only where `allow_mail_to_files` /
//!    `allow_mail_to_commands` name the target's origin (`alias`, `forward`, `include`;
//!    else `5.7.1`). `:include:/path` files are read in place ([`aliases`]), opened with
//!    the rights of the owner of the file naming them (a `.forward`'s account; root's
//!    become `default_privs`), as Postfix does.
//! 4. addresses in other domains are forwarded: one new message through cleanup with the
//!    same envelope sender and `Delivered-To:` added; the recipient is done once cleanup
//!    answered `Queued` ([`forward`]).
//! 5. with `local_system_users`, an /etc/passwd account that is no virtual user: its
//!    `forward_path` file, else `home_mailbox` or the mbox in `mail_spool_directory`, with
//!    its rights ([`system`]).
//!
//! Outcomes: unknown user `5.1.1`; a `Delivered-To:` header already naming the recipient
//! is a mail loop, `5.4.6`; over quota `4.2.2` (a temporary failure: the message waits in
//! the queue until there is room or it expires); a full disk `4.3.0`. Each finished
//! (delivered or bounced) recipient is marked in the queue file before the next one is
//! started; each attempt is logged in Postfix's `to=<…>, relay=local, …` format.
//!
//! Settings read: `alias_maps`, `virtual_mailbox_base`, `recipient_delimiter`,
//! `mydestination`, `myorigin`, `mailbox_format`, `mail_spool_directory`,
//! `stale_lock_time`, `local_system_users`, `home_mailbox`, `forward_path`,
//! `allow_mail_to_commands`, `allow_mail_to_files`, `default_privs`,
//! `command_time_limit`, `mail_owner`.
//!
//! Security stance: unprivileged (master.toml's default) local runs as mail_owner, the
//! owner of virtual mailboxes, and runs commands and writes files with that one identity
//! (the development layout); system accounts are then deferred, never written with the
//! wrong owner. Run as root (`unprivileged = false`, the production install) it rests with
//! mail_owner's effective ids and takes an account's uid and gid only for that account's
//! delivery, never root's ([`ids`]): commands and files of an alias get the alias file
//! owner's rights, of an `:include:` file its owner's, of a `.forward` the account's, and
//! `default_privs` wherever that would be root. Every file below the mailbox base is
//! opened without following symlinks, and every file a user controls (`.forward`,
//! `:include:`, `/file` targets, mailboxes) is opened `O_NOFOLLOW | O_NONBLOCK` through
//! safe_open and checked on the open descriptor (type, links, owner, mode), so a symlink,
//! hard link or FIFO in its place is refused and blocks nothing; a command started for a
//! user holds no descriptor of local's but its standard input, output and error
//! ([`command`]); user names are checked with
//! [`postern_lib::users::check_name`] before they become file names; the queue file path
//! from qmgr must be `active/<ID>` (checked by the agent job).
#![forbid(unsafe_code)]

mod aliases;
mod command;
mod delivery;
mod forward;
mod ids;
mod mailbox;
mod mbox;
mod replica;
mod settings;
mod system;

use std::cell::RefCell;
use std::process::ExitCode;

use postern_mailbox::maildir_deliver::DirSyncs;
use std::time::Duration;

use postern_lib::skeleton::Stream;

/// How long qmgr may take to send its request (and to read the reply).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    postern_lib::version::exit_if_asked();
    postern_lib::skeleton::single::single_server(
        "local",
        |ctx| Ok(settings::Settings::new(ctx)),
        |s, _ctx, conn| {
            if let Stream::Unix(sock) = conn.stream {
                if let Err(e) = s.rest() {
                    // Nothing is delivered with root's effective ids: qmgr sees the
                    // connection close and defers the job.
                    tracing::error!("cannot take mail_owner's rights: {e}");
                    return;
                }
                s.new_request();
                // A batch's Maildir deliveries share one fsync per new/ directory.
                let syncs = RefCell::new(DirSyncs::default());
                postern_lib::agent::serve_batched(
                    sock,
                    REQUEST_TIMEOUT,
                    |job| delivery::deliver(s, &mut syncs.borrow_mut(), job),
                    || syncs.borrow_mut().sync().map_err(|e| e.to_string()),
                );
            }
        },
    )
}
