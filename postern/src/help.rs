//! `postern --help`, `postern help [COMMAND]` and `postern COMMAND --help`: one line per
//! command in the overview, the full usage and a few sentences for one command.

/// (command, usage after `postern [-c CONFIG_DIR]`, one-line summary, more). One entry per
/// command, in the order `--help` lists them.
const COMMANDS: &[(&str, &str, &str, &str)] = &[
    (
        "start",
        "start [--foreground] [--quiet]",
        "start the mail system; lists the open ports and the log file",
        "Checks the configuration, starts master in the background and returns once every listener is open,\n\
         printing one line per listener and where the log goes (--quiet: nothing). --foreground runs\n\
         master in place with the log on standard error. As root it creates the mail_owner account if missing.",
    ),
    (
        "stop",
        "stop",
        "stop the mail system; returns once every process has exited",
        "Sends SIGTERM to master; the daemons finish the work in hand and exit.",
    ),
    (
        "reload",
        "reload",
        "reread main.toml and master.toml",
        "Checks the configuration first (a broken file is reported and master is left alone), then sends SIGHUP.",
    ),
    (
        "status",
        "status [--health [--timeout SECS] [--stuck-after SECS]]",
        "per service: processes, busy/idle, connections, restarts",
        "Exit status 0 while the mail system runs, 1 when it is stopped.\n\
         --health checks that it is accepting and delivering, within --timeout (default 5 s): exit 0 healthy,\n\
         1 master not running or not answering, 2 smtpd does not greet with 220 (or smtpd/cleanup throttled),\n\
         3 qmgr not running, a service throttled, or a file older than --stuck-after (default 600 s) in\n\
         maildrop/ or incoming/, 4 the check itself did not finish in time. For keepalived's vrrp_script.",
    ),
    (
        "check",
        "check [--fix]",
        "configuration, directories, owners and modes, ports, postmaster",
        "Errors (exit status 1) are what would stop the mail system or lose mail: a port another program\n\
         holds, a missing program, a table or restriction list a daemon would refuse. Warnings (exit 0)\n\
         are advice: modes, owners, where postmaster's mail goes. --fix repairs what it can.",
    ),
    (
        "config",
        "config [KEY...] | config set KEY=VALUE... | config --doc [KEY...]",
        "print effective settings, or edit main.toml / master.toml",
        "Without KEY, every setting with its effective value, defaults included. `config set` edits main.toml\n\
         (or NAME/TYPE.FIELD in master.toml, e.g. 'smtp/inet.listen=127.0.0.1:2525'), keeping comments;\n\
         nothing is written unless the result loads. `config --doc` prints each setting's doc, type,\n\
         default, bounds, the programs that read it and its effective value.",
    ),
    (
        "user",
        "user add NAME [QUOTA] | passwd NAME | quota NAME QUOTA | del NAME | list | where NAME | move NAME PAIR | pin | rebalance",
        "mailbox accounts in CONFIG_DIR/users (password on standard input); the director's pairs",
        "The password is read from standard input (echo 'secret' | postern user add alice), never from the\n\
         command line; at a terminal it is asked for twice without echo. With director_pairs: where prints\n\
         a user's pair; move copies the mailbox to PAIR by the replicators, switches the user in\n\
         director_user_map and then empties the old copy; pin records every user's pair (before adding a\n\
         pair), rebalance moves the pinned users whose hashed pair differs (after adding it).",
    ),
    (
        "log",
        "log QUEUE_ID [--all] [--follow] [--file PATH] | log --message-id ID [--follow]",
        "one message's timeline from the mail log: smtpd, cleanup, qmgr, delivery, bounce",
        "Every log line of the message in order, up to qmgr's `removed`. A queue ID used more than once\n\
         shows its latest use (--all: each); --message-id finds the queue IDs through cleanup's line;\n\
         --follow waits for new lines until the message is removed.",
    ),
    (
        "mirror",
        "mirror status | mirror adopt [--if-peer-down] | mirror rejoin",
        "two-node durability: the queue mirror's state; take over a dead peer's mail",
        "status: the peer (queue_mirror_peer), reachable or unreachable/degraded since when, and how many copies\n\
         of the peer's queue files this node holds. adopt moves every copy into incoming/ (same queue ID) for\n\
         delivery; run it only when the peer is gone for good. --if-peer-down (the keepalived notify hook's\n\
         form) adopts nothing while the peer's mirror service answers. rejoin (run by `postern start` itself when\n\
         queue_mirror_peer is set) removes from this node's queue what the peer adopted while it was down, and\n\
         drops copies of messages the peer has finished.",
    ),
    (
        "migrate",
        "migrate [--apply] [MAIN_CF]",
        "main.toml equivalents of a Postfix main.cf",
        "Prints what it would set (default /etc/postfix/main.cf); --apply writes it with `config set`.",
    ),
    (
        "install",
        "install [--root DIR] [--prefix /usr] [--config-dir /etc/postern] [--queue-dir /var/spool/postern]",
        "install as the host's mail system (as root)",
        "Copies the programs, writes the production configuration unless one exists, creates the accounts,\n\
         the queue and a systemd unit. --root DIR stages everything inside DIR.",
    ),
    (
        "uninstall",
        "uninstall [--root DIR] [--prefix /usr]",
        "remove the programs and the unit; configuration, queue and mail stay",
        "Puts back another MTA's sendmail that install moved aside.",
    ),
    (
        "help",
        "help [COMMAND]",
        "this overview, or the usage of one command",
        "",
    ),
];

/// The overview `postern --help` and `postern help` print.
pub fn overview() -> String {
    let mut out = String::from(
        "usage: postern [-c CONFIG_DIR] COMMAND [ARGS]\n\n\
         Postern's administration command (Postfix's postfix and postconf in one).\n\
         CONFIG_DIR defaults to the checkout's etc/ when run from target/*/, else /etc/postern.\n\n\
         commands:\n",
    );
    for (name, _, summary, _) in COMMANDS {
        out.push_str(&format!("  {name:<10} {summary}\n"));
    }
    out.push_str("\npostern help COMMAND shows the usage of one; postern --version the version.\n");
    out
}

/// The help of one command, or `None` when there is no such command.
pub fn command(name: &str) -> Option<String> {
    let (_, usage, summary, more) = COMMANDS.iter().find(|(n, ..)| *n == name)?;
    let mut out = format!("usage: postern [-c CONFIG_DIR] {usage}\n\n{summary}.\n");
    if !more.is_empty() {
        out.push_str(&format!("{more}\n"));
    }
    Some(out)
}

/// The one-line reminder after a usage error.
pub const HINT: &str = "(postern --help lists the commands)";

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_per_command() {
        let o = super::overview();
        for (name, ..) in super::COMMANDS {
            assert_eq!(
                o.lines().filter(|l| l.starts_with(&format!("  {name} "))).count(),
                1,
                "{name}"
            );
        }
        assert!(
            super::command("start")
                .unwrap()
                .starts_with("usage: postern [-c CONFIG_DIR] start [--foreground] [--quiet]\n")
        );
        assert!(super::command("nope").is_none());
    }
}
