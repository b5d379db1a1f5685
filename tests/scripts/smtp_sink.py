#!/usr/bin/env python3
"""A small SMTP server for tests (loopback only): accepts sessions, stores each message
as DIR/<n>.eml with `X-Sink-From:` / `X-Sink-To:` lines holding the envelope, and can be
told to answer RCPT or the end of DATA with a given code, or to refuse at the greeting.

    smtp_sink.py --port-file F --dir D [--rcpt CODE] [--data CODE] [--greeting CODE]
                 [--starttls CERT KEY] [--listen ADDR:PORT] [--dsn] [--hang]
                 [--data-delay SECONDS]

Writes the port it listens on (127.0.0.1, kernel-chosen) to F. Also records, in D:
`connections` (a line per connection), `commands` (every MAIL and RCPT line as
received), `max-concurrent` (the most sessions open at once so far) and `events` (a
line `open N` when a session opens with N open in all, `delivered` after each stored
message, `close` when one ends). `--dsn` announces DSN; `--hang` accepts connections and
never says a word (until the client leaves); `--data-delay` waits before the reply to
the end of DATA, so that sessions overlap. Bounded: each session times out after 30 s
idle (an hour with --hang, still bounded by the process's own lifetime); the process
exits after 10 minutes.
"""
import argparse
import os
import socket
import socketserver
import ssl
import threading
import time

A = None
COUNTER = [0]
LOCK = threading.Lock()
OPEN = [0, 0]  # open now, most at once


def record(name, line):
    with LOCK:
        with open(os.path.join(A.dir, name), "a") as f:
            f.write(line + "\n")


def session_opened():
    with LOCK:
        OPEN[0] += 1
        OPEN[1] = max(OPEN[1], OPEN[0])
        with open(os.path.join(A.dir, "events"), "a") as f:
            f.write("open %d\n" % OPEN[0])
        tmp = os.path.join(A.dir, ".max-concurrent.tmp")
        with open(tmp, "w") as f:
            f.write("%d\n" % OPEN[1])
        os.rename(tmp, os.path.join(A.dir, "max-concurrent"))


def session_closed():
    with LOCK:
        OPEN[0] -= 1
        with open(os.path.join(A.dir, "events"), "a") as f:
            f.write("close\n")


def reply(code):
    texts = {250: "2.0.0 Ok", 450: "4.2.0 Mailbox busy, try later", 550: "5.1.1 No such user here",
             554: "5.7.1 Go away", 421: "4.3.2 Not now", 452: "4.3.1 Insufficient storage"}
    return ("%d %s\r\n" % (code, texts.get(code, "Whatever"))).encode()


class Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        with LOCK:
            with open(os.path.join(A.dir, "connections"), "a") as f:
                f.write("1\n")
        session_opened()
        self.closed = False
        try:
            self.session()
        finally:
            if not self.closed:
                session_closed()

    def session(self):
        if A.hang:
            self.connection.settimeout(3600)
            while self.connection.recv(4096):
                pass
            return
        if A.greeting != 220:
            self.wfile.write(reply(A.greeting))
            return
        self.wfile.write(b"220 sink.test ESMTP test sink\r\n")
        sender, rcpts = None, []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("latin-1").strip()
            verb = cmd.split(" ")[0].upper()
            if verb in ("EHLO", "LHLO"):
                ext = ["sink.test", "PIPELINING", "SIZE 10240000", "8BITMIME"]
                if A.dsn:
                    ext.append("DSN")
                if A.starttls and not isinstance(self.connection, ssl.SSLSocket):
                    ext.append("STARTTLS")
                out = "".join("250-%s\r\n" % e for e in ext[:-1]) + "250 %s\r\n" % ext[-1]
                self.wfile.write(out.encode())
            elif verb == "HELO":
                self.wfile.write(b"250 sink.test\r\n")
            elif verb == "STARTTLS" and A.starttls:
                self.wfile.write(b"220 2.0.0 Ready to start TLS\r\n")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(A.starttls[0], A.starttls[1])
                self.connection = ctx.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb", buffering=0)
                with open(os.path.join(A.dir, "tls-used"), "w") as f:
                    f.write("yes\n")
            elif verb == "MAIL":
                record("commands", cmd)
                path = cmd[10:].strip()
                path = path.split(" ")[0]
                sender, rcpts = path[: path.find(">") + 1] if ">" in path else path, []
                self.wfile.write(reply(250))
            elif verb == "RCPT":
                record("commands", cmd)
                code = A.rcpt
                self.wfile.write(reply(code))
                if code == 250:
                    rcpts.append(cmd[8:].strip().split(" ")[0])
            elif verb == "DATA":
                if not rcpts:
                    self.wfile.write(b"503 5.5.1 No recipients\r\n")
                    continue
                self.wfile.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                data = []
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        return  # the client went away mid-DATA: nothing was accepted
                    if l == b".\r\n":
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                if A.data == 250:
                    with LOCK:
                        COUNTER[0] += 1
                        n = COUNTER[0]
                    tmp = os.path.join(A.dir, ".%d.tmp" % n)
                    with open(tmp, "wb") as f:
                        f.write(("X-Sink-From: %s\r\nX-Sink-To: %s\r\n" % (sender, ",".join(rcpts))).encode())
                        f.write(b"".join(data))
                    os.rename(tmp, os.path.join(A.dir, "%d.eml" % n))
                if A.data_delay:
                    time.sleep(A.data_delay)
                if A.data == 250:
                    record("events", "delivered")
                self.wfile.write(reply(A.data))
            elif verb == "RSET":
                sender, rcpts = None, []
                self.wfile.write(reply(250))
            elif verb == "QUIT":
                # Counted as closed before the client hears 221 and moves on.
                self.closed = True
                session_closed()
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.wfile.write(b"502 5.5.2 Command not recognized\r\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--rcpt", type=int, default=250)
    ap.add_argument("--data", type=int, default=250)
    ap.add_argument("--greeting", type=int, default=220)
    ap.add_argument("--starttls", nargs=2, default=None)
    ap.add_argument("--listen", default="127.0.0.1:0", help="ADDR:PORT (port 25 needs root)")
    ap.add_argument("--dsn", action="store_true", help="announce DSN")
    ap.add_argument("--hang", action="store_true", help="accept, never answer")
    ap.add_argument("--data-delay", type=float, default=0.0, help="seconds before the end-of-DATA reply")
    A = ap.parse_args()
    os.makedirs(A.dir, exist_ok=True)
    host, port = A.listen.rsplit(":", 1)
    srv = Server((host, int(port)), Handler)
    with open(A.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(A.port_file + ".tmp", A.port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    time.sleep(600)


if __name__ == "__main__":
    main()
