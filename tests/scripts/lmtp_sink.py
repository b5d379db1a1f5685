#!/usr/bin/env python3
"""A small LMTP server (RFC 2033) for tests, on a Unix-domain socket or loopback TCP.

    lmtp_sink.py --dir D --port-file F [--unix PATH] [--rcpt ADDR=CODE ...]
                 [--final ADDR=CODE ...]

Speaks LHLO (EHLO and HELO are refused with 500, as LMTP servers do), MAIL, RCPT, DATA,
RSET, NOOP, QUIT. `--rcpt ADDR=CODE` answers RCPT for ADDR with CODE (default 250);
`--final ADDR=CODE` gives ADDR's reply after the message (default 250): one reply per
accepted recipient, in RCPT order, as RFC 2033 says. Each message is stored once as
D/<n>.eml with `X-Sink-From:` and `X-Sink-To:` (the recipients whose final reply was
250) before the message bytes as received (dot-unstuffed, CRLF kept); D/replies gets a
line `ADDR CODE` per final reply. With --unix the socket is made 0666 so that daemons
running as another user can connect; without it, it listens on 127.0.0.1 on a
kernel-chosen port. F gets the port (0 for --unix) once the server is ready. Bounded: sessions time out after 30 s idle, the process
exits after 10 minutes.
"""
import argparse
import os
import socketserver
import threading
import time

A = None
COUNTER = [0]
LOCK = threading.Lock()
TEXTS = {250: "2.1.5 Ok", 452: "4.2.2 Mailbox full, try again later", 550: "5.1.1 No such user here",
         450: "4.2.0 Mailbox busy", 552: "5.2.2 Over quota"}


def codes(pairs):
    out = {}
    for p in pairs or []:
        addr, code = p.rsplit("=", 1)
        out[addr.lower()] = int(code)
    return out


def reply(code):
    return ("%d %s\r\n" % (code, TEXTS.get(code, "Whatever"))).encode()


def addr_of(arg):
    """`TO:<a@b> PARAMS` -> `a@b`"""
    arg = arg.split(":", 1)[1].strip() if ":" in arg else arg
    arg = arg.split(" ")[0]
    return arg.strip("<>").lower()


class Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        self.wfile.write(b"220 lmtp.test LMTP test sink\r\n")
        greeted, sender, rcpts = False, None, []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("latin-1").strip()
            verb = cmd.split(" ")[0].upper()
            if verb == "LHLO":
                greeted = True
                self.wfile.write(b"250-lmtp.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb in ("EHLO", "HELO"):
                self.wfile.write(b"500 5.5.1 This is LMTP: say LHLO\r\n")
            elif not greeted and verb not in ("QUIT", "NOOP", "RSET"):
                self.wfile.write(b"503 5.5.1 Say LHLO first\r\n")
            elif verb == "MAIL":
                sender, rcpts = "<%s>" % addr_of(cmd), []
                self.wfile.write(reply(250))
            elif verb == "RCPT":
                if sender is None:
                    self.wfile.write(b"503 5.5.1 MAIL first\r\n")
                    continue
                a = addr_of(cmd)
                code = A.rcpt.get(a, 250)
                self.wfile.write(reply(code))
                if code == 250:
                    rcpts.append(a)
            elif verb == "DATA":
                if not rcpts:
                    self.wfile.write(b"503 5.5.1 No valid recipients\r\n")
                    continue
                self.wfile.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                data = []
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        return  # the client left mid-DATA: nothing was accepted
                    if l == b".\r\n":
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                finals = [(a, A.final.get(a, 250)) for a in rcpts]
                ok = [a for a, c in finals if c == 250]
                if ok:
                    with LOCK:
                        COUNTER[0] += 1
                        n = COUNTER[0]
                    tmp = os.path.join(A.dir, ".%d.tmp" % n)
                    with open(tmp, "wb") as f:
                        to = ",".join("<%s>" % a for a in ok)
                        f.write(("X-Sink-From: %s\r\nX-Sink-To: %s\r\n" % (sender, to)).encode())
                        f.write(b"".join(data))
                    os.rename(tmp, os.path.join(A.dir, "%d.eml" % n))
                with LOCK:
                    with open(os.path.join(A.dir, "replies"), "a") as f:
                        for a, c in finals:
                            f.write("%s %d\n" % (a, c))
                self.wfile.write(b"".join(reply(c) for _, c in finals))
                sender, rcpts = None, []
            elif verb == "RSET":
                sender, rcpts = None, []
                self.wfile.write(reply(250))
            elif verb == "NOOP":
                self.wfile.write(reply(250))
            elif verb == "QUIT":
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.wfile.write(b"502 5.5.2 Command not recognized\r\n")


class TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--unix")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--rcpt", action="append")
    ap.add_argument("--final", action="append")
    A = ap.parse_args()
    A.rcpt, A.final = codes(A.rcpt), codes(A.final)
    os.makedirs(A.dir, exist_ok=True)
    if A.unix:
        srv = UnixServer(A.unix, Handler)
        os.chmod(A.unix, 0o666)
        port = 0
    else:
        srv = TcpServer(("127.0.0.1", 0), Handler)
        port = srv.server_address[1]
    with open(A.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(A.port_file + ".tmp", A.port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    time.sleep(600)


if __name__ == "__main__":
    main()
