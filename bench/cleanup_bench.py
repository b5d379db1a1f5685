#!/usr/bin/env python3
"""Throughput of cleanup alone: messages made durable per second.

Starts a throwaway Postern instance (copy of etc/, cleanup only) in a temporary
directory, then submits messages over the cleanup protocol (lib/src/ipc framing,
lib/src/proto/cleanup.rs) from N concurrent clients, each waiting for `Queued`
(which cleanup sends only after fsync of the file, rename, fsync of the directory).

    cargo build --release -p master -p postern -p cleanup
    python3 bench/cleanup_bench.py --bin target/release --size 4096 --count 2000 --conc 1 8 32
"""
import argparse, json, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time


def frame(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("cleanup closed the connection")
        buf += chunk
    return buf


def recv_msg(s):
    n, kind = struct.unpack(">IB", recv_exact(s, 5))
    return json.loads(recv_exact(s, n))


def submit(path, content):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    hello = json.dumps({"protocol": "cleanup", "version": 1}).encode()
    sub = {"type": "submit", "sender": "bench@example.test",
           "recipients": [{"address": "rcpt@example.test"}], "origin": "smtp"}
    data = frame(b"M", hello) + frame(b"M", json.dumps(sub).encode())
    for i in range(0, len(content), 65536):
        data += frame(b"D", content[i:i + 65536])
    data += frame(b"E", b"")
    s.sendall(data)
    recv_msg(s)  # hello
    reply = recv_msg(s)
    s.close()
    if reply.get("type") != "queued":
        raise RuntimeError(reply)
    return reply


def run(path, content, count, conc):
    per = [count // conc + (1 if i < count % conc else 0) for i in range(conc)]
    errors = []

    def worker(n):
        try:
            for _ in range(n):
                submit(path, content)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in per]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    if errors:
        raise errors[0]
    return count / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--dir", default=None, help="parent of the temporary instance (default: /tmp)")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bindir = os.path.abspath(a.bin)
    root = tempfile.mkdtemp(prefix="postern-bench", dir=a.dir)
    os.chmod(root, 0o755)
    etc = os.path.join(root, "etc")
    os.mkdir(etc)
    shutil.copy(os.path.join(repo, "etc", "main.toml"), etc)
    with open(os.path.join(etc, "master.toml"), "w") as f:
        f.write('[[service]]\nname = "cleanup"\ntype = "unix"\ncommand = "%s"\nmaxproc = 64\nmax_use = 100000\n'
                % os.path.join(bindir, "cleanup"))
    postern = os.path.join(bindir, "postern")
    subprocess.run([postern, "-c", etc, "start"], check=True)
    try:
        path = os.path.join(root, "var", "spool", "private", "cleanup")
        body = b"Subject: bench\nFrom: bench@example.test\n\n"
        content = body + (b"x" * 75 + b"\n") * max(0, (a.size - len(body)) // 76)
        submit(path, content)  # warm up
        for c in a.conc:
            rate = run(path, content, a.count, c)
            print("cleanup %d B messages, %2d concurrent: %7.0f messages/s" % (len(content), c, rate))
            sys.stdout.flush()
    finally:
        subprocess.run([postern, "-c", etc, "stop"])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
