#!/usr/bin/env python3
"""The POP3 view of a user: `UIDL MESSAGE-ID` a line, in message order
(tests/src/redundant.rs). Usage: pop3_state.py HOST PORT USER PASSWORD. Changes nothing
(TOP, QUIT without DELE). A message listed whose TOP fails (the maildrop changed under
the session) is printed as `UIDL TOP-failed:ANSWER`.
"""
import poplib, re, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=30)
p.user(user)
p.pass_(pw)
for l in p.uidl()[1]:
    n, uid = l.decode().split()
    try:
        head = b'\n'.join(p.top(int(n), 0)[1])
    except poplib.error_proto as e:
        # Listed but gone (the maildrop changed under the session): say so, go on.
        print(uid, 'TOP-failed:' + e.args[0].decode(errors='replace').replace(' ', '_'))
        continue
    mid = re.search(rb'(?i)message-id:\s*<([^>]*)>', head)
    print(uid, mid.group(1).decode() if mid else '-')
p.quit()
