#!/usr/bin/env python3
"""The client of bench/imap_compress.sh (COMPRESS=DEFLATE beside Dovecot).

    compress_load.py run --server LABEL=PORT [--server ...] --user U --password PW
                         --rounds R --range 1:2000 --json-out OUT
        one untimed FETCH per server first (the envelopes then in its cache); then R
        rounds, each server in turn, each two new sessions: LOGIN, SELECT INBOX, then
          plain:      FETCH <range> ENVELOPE
          compressed: COMPRESS DEFLATE, FETCH <range> ENVELOPE
        counting the bytes the server sent for the FETCH (from the command to its tagged
        OK, both included): in the plain session the bytes read from the socket; in the
        compressed one the bytes read from the socket (compressed, TCP payload) and what
        they inflate to (the stream uncompressed). Times from sending the FETCH to reading
        its tagged OK (inflating included). JSON lines into OUT.
    compress_load.py table OUT
        medians per server, the compression ratios and the Postern/Dovecot ratios

Python's zlib is the client: raw deflate (wbits -15), level 6, a sync flush after each
command, as RFC 4978 asks. Not a test: nothing here asserts a figure.
"""
import argparse
import json
import re
import socket
import statistics
import time
import zlib


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.buf = bytearray()
        self.n = 0
        self.comp = None
        self.decomp = None
        self.wire = 0  # bytes read from the socket since the last mark
        self.plain = 0  # those bytes as the protocol sees them (inflated when compressed)
        self._line()  # greeting

    def _recv(self):
        chunk = self.s.recv(1 << 16)
        if not chunk:
            raise RuntimeError("connection closed")
        self.wire += len(chunk)
        data = self.decomp.decompress(chunk) if self.decomp else chunk
        self.plain += len(data)
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._recv()
        end = self.buf.find(b"\r\n")
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    def cmd(self, text):
        """Sends `text`, returns (untagged bytes, tagged line); raises unless OK."""
        self.n += 1
        tag = b"z%d" % self.n
        data = tag + b" " + text.encode() + b"\r\n"
        if self.comp:
            data = self.comp.compress(data) + self.comp.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)
        want = tag + b" "
        # line by line from the start of the answer (ENVELOPE answers are one line each
        # unless a field is a literal; none is in the benchmark's messages)
        pos = 0
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end == -1:
                self._recv()
                continue
            if self.buf.startswith(want, pos):
                break
            pos = end + 2
        body, tagged = bytes(self.buf[:pos]), bytes(self.buf[pos:end])
        del self.buf[:end + 2]
        if not tagged[len(want):].startswith(b"OK"):
            raise RuntimeError("%s: %r" % (text, tagged))
        return body, tagged

    def compress(self):
        self.cmd("COMPRESS DEFLATE")
        assert not self.buf, "data after COMPRESS's OK"
        self.comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.decomp = zlib.decompressobj(-15)

    def mark(self):
        self.wire = 0
        self.plain = 0


def session(a, label, port, compressed):
    c = Client(port)
    c.cmd("LOGIN %s %s" % (a.user, a.password))
    caps = c.cmd("CAPABILITY")[0]
    if compressed and b"COMPRESS=DEFLATE" not in caps:
        raise SystemExit("%s does not offer COMPRESS=DEFLATE after login: %r" % (label, caps))
    c.cmd("SELECT INBOX")
    if compressed:
        c.compress()
    c.mark()
    t = time.perf_counter()
    body, _ = c.cmd("FETCH %s ENVELOPE" % a.range)
    took = time.perf_counter() - t
    wire, plain = c.wire, c.plain
    n = len(re.findall(rb"^\* \d+ FETCH ", body, re.M))
    c.cmd("LOGOUT")
    return {"wire": wire, "plain": plain, "ms": took * 1000, "fetched": n}


def run(a):
    servers = [(s.split("=")[0], int(s.split("=")[1])) for s in a.server]
    for label, port in servers:
        session(a, label, port, False)  # untimed: the envelopes into the server's cache
    got = {label: ([], []) for label, _ in servers}
    # rounds interleaved: both servers see the same load
    for _ in range(a.rounds):
        for label, port in servers:
            got[label][0].append(session(a, label, port, False))
            got[label][1].append(session(a, label, port, True))
    for label, _ in servers:
        plain, comp = got[label]
        r = {
            "bench": "imap_compress", "label": label, "range": a.range,
            "fetched": comp[0]["fetched"],
            "plain_bytes": [p["wire"] for p in plain],
            "compressed_wire_bytes": [c["wire"] for c in comp],
            "compressed_inflated_bytes": [c["plain"] for c in comp],
            "plain_ms": [round(p["ms"], 2) for p in plain],
            "compressed_ms": [round(c["ms"], 2) for c in comp],
        }
        for k in ("plain_bytes", "compressed_wire_bytes", "compressed_inflated_bytes", "plain_ms",
                  "compressed_ms"):
            r[k + "_median"] = statistics.median(r[k])
        print("RESULT %s FETCH %s ENVELOPE (%d messages): plain %d B %.1f ms; compressed %d B on the "
              "wire for %d B, %.1f ms" % (
                  label, a.range, r["fetched"], r["plain_bytes_median"], r["plain_ms_median"],
                  r["compressed_wire_bytes_median"], r["compressed_inflated_bytes_median"],
                  r["compressed_ms_median"]))
        with open(a.json_out, "a") as f:
            f.write(json.dumps(r) + "\n")


def table(a):
    rows = [json.loads(line) for line in open(a.out)]
    by = {r["label"]: r for r in rows if r.get("bench") == "imap_compress"}
    print("| server | messages | plain bytes | compressed: wire bytes | inflated bytes | saved "
          "| inflated / wire | plain ms | compressed ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label in ("postern", "dovecot"):
        r = by.get(label)
        if not r:
            continue
        w, p = r["compressed_wire_bytes_median"], r["compressed_inflated_bytes_median"]
        print("| %s | %d | %d | %d | %d | %.1f %% | %.1f× | %.1f | %.1f |" % (
            label, r["fetched"], r["plain_bytes_median"], w, p, 100.0 * (1 - w / p), p / w,
            r["plain_ms_median"], r["compressed_ms_median"]))
    if "postern" in by and "dovecot" in by:
        p, d = by["postern"], by["dovecot"]
        print()
        print("Postern / Dovecot, same run: plain bytes %.2f, compressed wire bytes %.2f, "
              "plain time %.2f, compressed time %.2f" % (
                  p["plain_bytes_median"] / d["plain_bytes_median"],
                  p["compressed_wire_bytes_median"] / d["compressed_wire_bytes_median"],
                  p["plain_ms_median"] / d["plain_ms_median"],
                  p["compressed_ms_median"] / d["compressed_ms_median"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    for k in ("--user", "--password", "--json-out"):
        r.add_argument(k, required=True)
    r.add_argument("--server", action="append", required=True, help="LABEL=PORT, repeated")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--range", default="1:2000")
    t = sub.add_parser("table")
    t.add_argument("out")
    a = ap.parse_args()
    {"run": run, "table": table}[a.what](a)


if __name__ == "__main__":
    main()
