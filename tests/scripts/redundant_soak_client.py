#!/usr/bin/env python3
"""An IMAP client for the redundant cluster's soak (tests/tests/redundant_soak.rs).

Usage: redundant_soak_client.py HOST PORT USER PASSWORD SECONDS SEED. For SECONDS (longer,
at most twice, until it has made a change of each kind) it logs
in (HOST may be a round-robin name: a refused address is followed by the next), and in
each session makes a few changes to random messages of INBOX (a UID from SEARCH, its
Message-ID read by that UID): +FLAGS (\\Seen), or
\\Deleted and UID EXPUNGE of that one message. A connection that fails (the proxy or its
server was killed) is dropped and the client logs in again. It prints, flushed:
  seen ID        the STORE was answered OK
  try-delete ID  before a deletion is sent (its outcome is unknown until `deleted`)
  deleted ID     the UID EXPUNGE was answered OK
  error TEXT     a session that failed
"""
import imaplib
import random
import re
import sys
import time

host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
end = time.time() + float(sys.argv[5])
# Under load (a debug build's argon2 for the user's and the master login, the whole test
# suite beside it) a login through the proxy can take many seconds: a session waits up
# to 30 s, and the client goes on past SECONDS (up to twice as long) until it has made
# both kinds of change.
hard_end = end + float(sys.argv[5])
made = set()


def more():
    now = time.time()
    return now < end or (now < hard_end and len(made) < 2)
rnd = random.Random(int(sys.argv[6]))


def out(*words):
    print(*words, flush=True)


def pick(m):
    """A random message of INBOX: (UID, Message-ID) as read now, or None."""
    typ, data = m.uid('SEARCH', None, 'ALL')
    if typ != 'OK':
        raise RuntimeError('SEARCH %r' % (data,))
    uids = data[0].split() if data and data[0] else []
    if not uids:
        return None
    uid = rnd.choice(uids).decode()
    typ, data = m.uid('FETCH', uid, '(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
    if typ != 'OK':
        raise RuntimeError('FETCH %r' % (data,))
    for item in data:
        if isinstance(item, tuple):
            got = re.search(rb'UID (\d+)', item[0])
            mid = re.search(rb'<([^>]*)>', item[1])
            if got and mid and got.group(1).decode() == uid:
                return uid, mid.group(1).decode()
    return None


while more():
    try:
        m = imaplib.IMAP4(host, port, timeout=30)
        m.login(user, pw)
        if m.select('INBOX')[0] != 'OK':
            raise RuntimeError('SELECT')
        for _ in range(5):
            if not more():
                break
            got = pick(m)
            if not got:
                time.sleep(0.2)
                continue
            uid, mid = got
            if rnd.random() < 0.6:
                if m.uid('STORE', uid, '+FLAGS', '(\\Seen)')[0] == 'OK':
                    out('seen', mid)
                    made.add('seen')
            else:
                out('try-delete', mid)
                if m.uid('STORE', uid, '+FLAGS', '(\\Deleted)')[0] == 'OK' and m.uid('EXPUNGE', uid)[0] == 'OK':
                    out('deleted', mid)
                    made.add('deleted')
            time.sleep(0.1)
        m.logout()
    except Exception as e:  # the proxy or its server died: log in again
        out('error', type(e).__name__, str(e).replace('\n', ' ')[:200])
        time.sleep(0.3)
