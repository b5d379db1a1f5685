#!/usr/bin/env python3
"""IMAP changes for the replication tests (tests/src/redundant.rs), each asserted OK.

Usage: imap_ops.py HOST PORT USER PASSWORD OP... where messages are named by Message-ID
(without <>), found in INBOX, or in FOLDER when given as FOLDER/ID:
  store ID FLAG...     UID STORE +FLAGS      unstore ID FLAG...   UID STORE -FLAGS
  move ID FOLDER       UID MOVE              copy ID FOLDER       UID COPY
  expunge ID           \\Deleted, EXPUNGE    append FOLDER ID FLAG...
  create F  rename F G  delete F  subscribe F  unsubscribe F
Prints `done OP` after each; exits non-zero with the server's answer on the first failure.
"""
import imaplib, re, sys, time
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = imaplib.IMAP4(host, port, timeout=30)
M.login(user, pw)
def ok(what, r):
    if r[0] != 'OK':
        sys.exit('%s: %r' % (what, r))
    return r
def uid_of(ref):
    folder, mid = ref.split('/', 1) if '/' in ref else ('INBOX', ref)
    ok('select ' + folder, M.select('"%s"' % folder))
    typ, data = ok('fetch', M.uid('FETCH', '1:*', '(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])'))
    for item in data:
        if isinstance(item, tuple) and ('<%s>' % mid).encode() in item[1]:
            return re.search(rb'UID (\d+)', item[0]).group(1).decode()
    sys.exit('no message %s in %s' % (mid, folder))
for op in sys.argv[5:]:
    w = op.split()
    if w[0] in ('store', 'unstore'):
        u = uid_of(w[1])
        ok(op, M.uid('STORE', u, '+FLAGS' if w[0] == 'store' else '-FLAGS', '(%s)' % ' '.join(w[2:])))
    elif w[0] in ('move', 'copy'):
        u = uid_of(w[1])
        ok(op, M.uid(w[0].upper(), u, '"%s"' % w[2]))
    elif w[0] == 'expunge':
        u = uid_of(w[1])
        ok(op, M.uid('STORE', u, '+FLAGS', '(\\Deleted)'))
        ok(op, M.expunge())
    elif w[0] == 'append':
        msg = ('From: carol@client.test\r\nSubject: appended\r\nMessage-ID: <%s>\r\n\r\nappended\r\n' % w[2]).encode()
        ok(op, M.append('"%s"' % w[1], '(%s)' % ' '.join(w[3:]), imaplib.Time2Internaldate(time.time()), msg))
    elif w[0] == 'rename':
        ok(op, M.rename('"%s"' % w[1], '"%s"' % w[2]))
    elif w[0] in ('create', 'delete', 'subscribe', 'unsubscribe'):
        ok(op, getattr(M, w[0])('"%s"' % w[1]))
    else:
        sys.exit('unknown op ' + op)
    print('done', op, flush=True)
M.logout()
