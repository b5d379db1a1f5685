#!/usr/bin/env python3
"""The disk side of cleanup's group commit (issue 14), without Postern: T threads each
create a 4 KB file under a temporary name, fdatasync it, rename it into place and make
the directory entry durable, N times — cleanup's durable sequence per message.

    python3 bench/fsync_group.py DIR [T] [N]

Modes, run A B A B (ROUNDS, default 2), msg/s and directory fsyncs per message:
  parallel  each thread fsyncs the directory itself (cleanup before group commit)
  grouped   threads whose renames are done share one directory fsync that started after
            all of them (cleanup/src/dir_sync.rs's rule), one fsync at a time
DIR should be on the file system under test; it is emptied first and at the end.
"""
import os, sys, threading, time

def run(mode, d, T, N):
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    cv = threading.Condition()
    st = {"collect": [None], "running": False}
    nfs = [0]

    def dsync():
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)

    def grouped():
        with cv:
            mine = st["collect"]
            while True:
                if mine[0] is not None:
                    return
                if not st["running"] and st["collect"] is mine:
                    st["running"] = True
                    st["collect"] = [None]
                    break
                cv.wait()
        dsync()
        with cv:
            nfs[0] += 1
            mine[0] = True
            st["running"] = False
            cv.notify_all()

    data = b"x" * 4096

    def work(t):
        for i in range(N):
            tmp, fin = f"{d}/.t{t}-{i}", f"{d}/m{t}-{i}"
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.write(fd, data)
            os.fdatasync(fd)
            os.close(fd)
            os.rename(tmp, fin)
            if mode == "grouped":
                grouped()
            else:
                dsync()
                with cv:
                    nfs[0] += 1

    t0 = time.time()
    ths = [threading.Thread(target=work, args=(t,)) for t in range(T)]
    for x in ths:
        x.start()
    for x in ths:
        x.join()
    dt = time.time() - t0
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    return T * N / dt, nfs[0] / (T * N)

def main():
    d = sys.argv[1]
    T = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    N = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    os.makedirs(d, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    for r in range(int(os.environ.get("ROUNDS", "2"))):
        for mode in ("parallel", "grouped"):
            rate, per = run(mode, d, T, N)
            print(f"{mode:8} T={T}: {rate:.0f} msg/s, directory fsyncs/msg {per:.2f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")

main()
