#!/usr/bin/env python3
"""The POP3 view of a user: `UIDL MESSAGE-ID` a line, in message order
(tests/src/redundant.rs). Usage: pop3_state.py HOST PORT USER PASSWORD. Changes nothing
(TOP, QUIT without DELE).
"""
import poplib, re, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=30)
p.user(user)
p.pass_(pw)
for l in p.uidl()[1]:
    n, uid = l.decode().split()
    head = b'\n'.join(p.top(int(n), 0)[1])
    mid = re.search(rb'(?i)message-id:\s*<([^>]*)>', head)
    print(uid, mid.group(1).decode() if mid else '-')
p.quit()
