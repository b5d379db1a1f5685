#!/usr/bin/env python3
"""The soak test's SMTP load (loopback only): THREADS concurrent smtplib sessions send
COUNT messages, message I with Message-ID <soak.I@example.test> to the recipients
rcpts(I) below, each message tried until it gets a 250 after DATA (at most TRIES times,
and never after DEADLINE seconds).

    soak_load.py --port P --count N --out FILE [--threads 32] [--users 8]
                 [--tries 40] [--deadline 900]

Every recipient must get 250 at RCPT, or the attempt is abandoned with RSET (so a
message that is accepted is accepted for all its recipients). One line per attempt goes
to FILE:
    ok I                 250 after DATA
    lost I               the connection failed after the message was sent, before the
                         reply (the server may have queued it: "accepted, reply lost")
    tempdata I CODE WHY  a 4xx after the message was sent (the server may still have
                         queued it: cleanup made the file durable and died before its answer)
    temp I WHY           a 4xx or a connection failure before the message was sent
    perm I WHY           a 5xx: the message is given up
and, at the end, `done`. `--list` prints `I RCPT...` for every message instead of sending,
so the test needs no copy of the rule.
"""
import argparse
import smtplib
import threading
import time


def rcpts(i, users):
    """Message I goes to one local user, every 4th to a second one, every 3rd also to a
    relayed address, every 25th also to the deferring destination."""
    r = ["u%d@example.test" % (i % users)]
    if i % 4 == 0:
        r.append("u%d@example.test" % ((i + 3) % users))
    if i % 3 == 0:
        r.append("r%d@relay.test" % (i % 5))
    if i % 25 == 0:
        r.append("d%d@defer.test" % (i % 2))
    return r


def message(i, users):
    to = ", ".join(rcpts(i, users))
    head = ("From: sender@example.test\r\nTo: %s\r\nSubject: soak %d\r\n"
            "Message-ID: <soak.%d@example.test>\r\n\r\n" % (to, i, i))
    body = "".join("soak %d line %d %s\r\n" % (i, n, "x" * 60) for n in range(30))
    return (head + body).encode()


def close(s):
    try:
        s.close()
    except Exception:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--count", type=int)
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--tries", type=int, default=40)
    ap.add_argument("--deadline", type=float, default=900)
    ap.add_argument("--list", action="store_true", help="print each message's recipients, send nothing")
    a = ap.parse_args()
    if a.list:
        for i in range(a.count):
            print(i, " ".join(rcpts(i, a.users)))
        return
    end = time.monotonic() + a.deadline
    lock = threading.Lock()
    out = open(a.out, "w")

    def rec(line):
        with lock:
            out.write(line + "\n")
            out.flush()

    def worker(k):
        s = None
        for i in range(k, a.count, a.threads):
            data = message(i, a.users)
            for _ in range(a.tries):
                if time.monotonic() > end:
                    rec("temp %d deadline" % i)
                    break
                try:
                    if s is None:
                        s = smtplib.SMTP("127.0.0.1", a.port, timeout=60)
                        s.ehlo("soak.test")
                    code, text = s.mail("sender@example.test")
                    bad = None if code == 250 else (code, text)
                    for r in rcpts(i, a.users) if bad is None else []:
                        code, text = s.rcpt(r)
                        if code != 250:
                            bad = (code, text)
                            break
                    if bad is None:
                        code, text = s.docmd("DATA")
                        bad = None if code == 354 else (code, text)
                    if bad is not None:
                        kind = "perm" if bad[0] >= 500 else "temp"
                        rec("%s %d %d %s" % (kind, i, bad[0], bad[1].decode("latin-1", "replace")))
                        s.rset()
                        if kind == "perm":
                            break
                        time.sleep(0.05)
                        continue
                except Exception as e:
                    rec("temp %d %r" % (i, e))
                    close(s)
                    s = None
                    time.sleep(0.05)
                    continue
                try:
                    s.send(data + b".\r\n")
                    code, text = s.getreply()
                except Exception as e:
                    rec("lost %d %r" % (i, e))
                    close(s)
                    s = None
                    continue
                if code == 250:
                    rec("ok %d" % i)
                    break
                kind = "perm" if code >= 500 else "tempdata"
                rec("%s %d %d %s" % (kind, i, code, text.decode("latin-1", "replace")))
                if code >= 500:
                    break
        if s is not None:
            try:
                s.quit()
            except Exception:
                pass

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec("done")


if __name__ == "__main__":
    main()
