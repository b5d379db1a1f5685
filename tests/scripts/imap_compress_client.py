"""A raw IMAP client for COMPRESS=DEFLATE (RFC 4978), with Python's zlib (raw deflate,
wbits=-15, a sync flush after each command): argv PORT USER PASSWORD MODE.
MODE `session`: login, COMPRESS, SELECT, FETCH 1:* ENVELOPE, a second COMPRESS, then
waits for a line on stdin (the test runs a zip bomb meanwhile) and does NOOP + LOGOUT.
MODE `bomb`: login, COMPRESS, then 64 MB of one line compressed to about 64 KB; prints
what came back. MODE `tls`: `session` over implicit TLS (compression under TLS), without
the wait. Prints KEY value lines."""
import socket
import ssl
import sys
import zlib

port, user, password, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(30)
if mode == "tls":
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(s)
plain_buf = b""
wire_in = 0
plain_in = 0
comp = None
decomp = None


def recv():
    global plain_buf, wire_in, plain_in
    chunk = s.recv(65536)
    if not chunk:
        raise EOFError
    if decomp is None:
        plain_buf += chunk
    else:
        wire_in += len(chunk)
        data = decomp.decompress(chunk)
        plain_in += len(data)
        plain_buf += data


def until(tag):
    """Reads up to and including the line tagged `tag`; returns all of it."""
    global plain_buf
    pat = tag + b" "
    while True:
        pos = 0
        while (end := plain_buf.find(b"\r\n", pos)) != -1:
            if plain_buf.startswith(pat, pos):
                out, plain_buf = plain_buf[: end + 2], plain_buf[end + 2 :]
                return out
            pos = end + 2
        recv()


def send(line):
    data = line + b"\r\n"
    if comp is None:
        s.sendall(data)
    else:
        s.sendall(comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH))


while b"\r\n" not in plain_buf:
    recv()
plain_buf = plain_buf[plain_buf.find(b"\r\n") + 2 :]
send(b"a1 CAPABILITY")
print("CAP_BEFORE", until(b"a1").split(b"\r\n")[0].decode())
send(b"a2 LOGIN " + user.encode() + b" " + password.encode())
print("LOGIN", until(b"a2").splitlines()[-1].decode())
send(b"a3 CAPABILITY")
print("CAP_AFTER", until(b"a3").split(b"\r\n")[0].decode())
send(b"a4 COMPRESS DEFLATE")
print("COMPRESS", until(b"a4").decode().strip())
comp = zlib.compressobj(6, zlib.DEFLATED, -15)
decomp = zlib.decompressobj(-15)
if mode == "bomb":
    bomb = comp.compress(b"a" * (64 * 1024 * 1024)) + comp.flush(zlib.Z_SYNC_FLUSH)
    print("BOMB", len(bomb))
    try:
        s.sendall(bomb)
        while True:
            recv()
    except (EOFError, ConnectionError, socket.timeout) as e:
        print("END", type(e).__name__)
    print("GOT", plain_buf.decode(errors="replace").strip())
    sys.exit(0)
send(b"a5 CAPABILITY")
print("CAP_COMPRESSED", until(b"a5").split(b"\r\n")[0].decode())
send(b"a6 COMPRESS DEFLATE")
print("AGAIN", until(b"a6").decode().strip())
send(b"a7 SELECT INBOX")
print("SELECT", [l for l in until(b"a7").decode().splitlines() if "EXISTS" in l or l.startswith("a7")])
wire_before, plain_before = wire_in, plain_in
send(b"a8 FETCH 1:* ENVELOPE")
fetched = until(b"a8").decode()
print("FETCHES", sum(1 for l in fetched.splitlines() if " FETCH (ENVELOPE (" in l))
print("SUBJECTS", sum(1 for i in range(1, 1000) if '"Message number %d of the test"' % i in fetched))
print("FETCH_TAG", fetched.splitlines()[-1])
print("FETCH_WIRE", wire_in - wire_before)
print("FETCH_PLAIN", plain_in - plain_before)
print("READY", flush=True)
if mode != "tls":
    sys.stdin.readline()
send(b"a9 NOOP")
print("NOOP", until(b"a9").decode().splitlines()[-1])
send(b"a10 LOGOUT")
print("LOGOUT", until(b"a10").decode().splitlines()[-1])
