# A plain IMAP client for whole-system tests that assert exact response lines
# (tests/src/imap_script.rs puts it before each test's script): Raw(port).cmd(b'...')
# returns (untagged lines, tagged reply without the tag); literals in answers are read whole.
import socket, re, sys
class Raw:
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=30)
        self.f = self.s.makefile('rb')
        self.n = 0
        greet = self.f.readline()
        assert greet.startswith(b'* OK'), greet
    def cmd(self, text):
        self.n += 1
        tag = b'x%d' % self.n
        self.s.sendall(tag + b' ' + text + b'\r\n')
        lines = []
        for _ in range(100000):
            l = self.f.readline()
            assert l, 'connection closed'
            l = l.rstrip(b'\r\n')
            while True:
                m = re.search(rb'\{(\d+)\}$', l)
                if not m:
                    break
                l += b'\r\n' + self.f.read(int(m.group(1))) + self.f.readline().rstrip(b'\r\n')
            if l.startswith(tag + b' '):
                return lines, l[len(tag) + 1:]
            lines.append(l)
        raise SystemExit('no tagged reply')
    def ok(self, text):
        lines, done = self.cmd(text)
        assert done.startswith(b'OK'), (text, lines, done)
        return [l.decode() for l in lines]
    def reply(self, text):
        return self.cmd(text)[1].decode()
