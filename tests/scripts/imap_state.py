#!/usr/bin/env python3
"""The IMAP state of a user, for comparing replicas (tests/src/redundant.rs).

Usage: imap_state.py HOST PORT USER PASSWORD. Prints one line per fact, sorted:
`F NAME UIDVALIDITY` per folder, `E NAME REASON` per listed folder that SELECT refused,
`M NAME UID MESSAGE-ID FLAGS` per message (flags
sorted, \\Recent left out: it is per session), `S NAME` per subscription. Read-only
(EXAMINE, BODY.PEEK).
"""
import imaplib, re, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = imaplib.IMAP4(host, port, timeout=30)
M.login(user, pw)
def names(data):
    out = []
    for line in data:
        if not line:
            continue
        if isinstance(line, tuple):
            line = line[0] + b'"' + line[1] + b'"'
        m = re.match(rb'\((.*?)\) (NIL|"[^"]*") (.*)$', line)
        n = m.group(3).decode()
        out.append(n[1:-1] if n.startswith('"') else n)
    return out
facts = []
for f in names(M.list('""', '*')[1]):
    typ, data = M.select('"%s"' % f, readonly=True)
    if typ != 'OK':
        # listed but not selectable: a fact too (with the server's reason), so a compare
        # of two replicas says why one lacks the folder
        why = data[0].decode(errors='replace') if data and data[0] else typ
        facts.append('E %s %s' % (f, why))
        continue
    facts.append('F %s %s' % (f, M.response('UIDVALIDITY')[1][0].decode()))
    typ, data = M.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
    recs = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            recs.append([item[0], item[1]])
        elif recs:
            recs[-1][0] += item
    for meta, lit in recs:
        uid = re.search(rb'UID (\d+)', meta).group(1).decode()
        flags = re.search(rb'FLAGS \(([^)]*)\)', meta).group(1).decode().split()
        flags = ' '.join(sorted(x for x in flags if x != '\\Recent'))
        mid = re.search(rb'(?i)message-id:\s*<([^>]*)>', lit)
        facts.append('M %s %s %s %s' % (f, uid, mid.group(1).decode() if mid else '-', flags))
    M.close()
for f in names(M.lsub('""', '*')[1]):
    facts.append('S %s' % f)
M.logout()
print('\n'.join(sorted(facts)))
