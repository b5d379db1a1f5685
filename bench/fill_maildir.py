#!/usr/bin/env python3
"""Fill a Maildir's new/ with N messages, as a delivery would, for the IMAP/POP3 benchmark.

The messages are ../peer/imap_pop_load.py's (`make_msg`: subject "msg NNNNN", body
tokNNNNN), stored with LF line ends and the true size in the `,S=` part of the name (which
Dovecot trusts). The Maildir is emptied first (messages and Dovecot's index files), and
every file is given to --owner, the user the server reads the mailbox as (Dovecot: the
mailbox's system user; Postern: mail_owner), so the server can also rename and index.

    bench/fill_maildir.py --maildir /home/benchbox/Maildir -n 10000 --owner benchbox
"""
import argparse
import os
import pwd
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
import benchlib  # noqa: E402
from imap_pop_load import make_msg  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--owner", default=None, help="user (and its group) to own the Maildir and every file")
    a = ap.parse_args()
    if not 0 < a.n <= 1_000_000:
        ap.error("-n must be 1..1000000")
    pw = pwd.getpwnam(a.owner) if a.owner else None
    for d in ("", "new", "cur", "tmp"):
        os.makedirs(os.path.join(a.maildir, d), mode=0o700, exist_ok=True)
        if pw:
            os.chown(os.path.join(a.maildir, d), pw.pw_uid, pw.pw_gid)
    benchlib.maildir_clean(a.maildir)
    newd = os.path.join(a.maildir, "new")
    base = int(time.time())
    for i in range(1, a.n + 1):
        msg = make_msg(i, a.size).replace(b"\r\n", b"\n")
        path = os.path.join(newd, "%d.M%dP%d.bench,S=%d" % (base, i, os.getpid(), len(msg)))
        with open(path, "wb") as f:
            f.write(msg)
        if pw:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    print("filled %s with %d messages" % (a.maildir, a.n))


if __name__ == "__main__":
    main()
