#!/usr/bin/env python3
"""Lists a mailbox's Message-IDs over IMAP (loopback only), for the soak test: logs in as
USER, EXAMINEs INBOX (read-only: nothing moves or changes flags), and prints one line per
message, the value of its Message-ID header (`-` when it has none), then `count N`.

    soak_imap.py PORT USER PASSWORD
"""
import email
import imaplib
import sys


def main():
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    m = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK", (typ, data)
    exists = int(data[0])
    n = 0
    if exists:
        typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", (typ, data)
        for item in data:
            if isinstance(item, tuple):
                mid = email.message_from_bytes(item[1]).get("Message-ID", "-")
                print(" ".join(mid.split()) or "-")
                n += 1
    m.logout()
    print("count %d" % n)
    assert n == exists, "FETCH gave %d of %d messages" % (n, exists)


if __name__ == "__main__":
    main()
