//! The connection to a backend (a mailbox server's pop3d or imapd): a non-blocking mio
//! socket on one of the client connection's auxiliary tokens, with the bytes waiting to
//! go to it and the bytes read from it not yet relayed. Edge-triggered: what a readiness
//! event announced is remembered (`readable`) until a read says the socket is empty, so
//! a connection that stopped reading for back-pressure reads on when it is driven again.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes read from the backend per read call.
const CHUNK: usize = 16 * 1024;

/// One backend connection.
pub struct Backend {
    sock: TcpStream,
    token: Token,
    /// The backend as configured (`host:port`), for logs.
    pub name: String,
    /// Whether the TCP connection is established.
    pub connected: bool,
    /// Bytes to send.
    pub out: Vec<u8>,
    /// Bytes read, not yet used.
    pub inp: Vec<u8>,
    readable: bool,
    /// The backend closed its side (or the socket failed).
    pub eof: bool,
    write_interest: bool,
    /// When the backend last sent something (or the connection started).
    pub last: Instant,
}

impl Backend {
    /// Starts connecting to `addr` and registers the socket on `token`.
    pub fn connect(name: &str, addr: SocketAddr, registry: &Registry, token: Token) -> std::io::Result<Backend> {
        let mut sock = TcpStream::connect(addr)?;
        registry.register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Backend {
            sock,
            token,
            name: name.to_string(),
            connected: false,
            out: Vec::new(),
            inp: Vec::new(),
            readable: true,
            eof: false,
            write_interest: true,
            last: Instant::now(),
        })
    }

    /// A readiness event for the socket.
    pub fn event(&mut self, event: &mio::event::Event) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
    }

    /// Whether the connection is established now; `Err` when it failed.
    pub fn check_connected(&mut self, registry: &Registry) -> Result<bool, String> {
        if self.connected {
            return Ok(true);
        }
        match self.sock.take_error() {
            Ok(Some(e)) | Err(e) => return Err(e.to_string()),
            Ok(None) => {}
        }
        match self.sock.peer_addr() {
            Ok(_) => {
                self.connected = true;
                let _ = self.sock.set_nodelay(true);
                self.last = Instant::now();
                self.readable = true;
                self.update_interest(registry);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn update_interest(&mut self, registry: &Registry) {
        let want = !self.out.is_empty() || !self.connected;
        postern_lib::skeleton::conn::write_interest(
            registry,
            &mut self.sock,
            self.token,
            &mut self.write_interest,
            want,
        );
    }

    /// Writes what waits; `Err` when the connection failed.
    pub fn flush(&mut self, registry: &Registry) -> Result<usize, String> {
        if !self.connected {
            return Ok(0);
        }
        let before = self.out.len();
        postern_lib::ipc::codec::write_pending(&mut self.sock, &mut self.out).map_err(|e| e.to_string())?;
        self.update_interest(registry);
        Ok(before - self.out.len())
    }

    /// Reads while the socket has input and fewer than `max` bytes wait; returns the bytes
    /// read. The end of input sets [`eof`](Self::eof).
    pub fn read(&mut self, max: usize) -> usize {
        let mut total = 0;
        let mut buf = [0u8; CHUNK];
        while self.connected && self.readable && !self.eof && self.inp.len() < max {
            match self.sock.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    total += n;
                    self.inp.extend_from_slice(buf.get(..n).unwrap_or_default());
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::info!("backend {}: read: {e}", self.name);
                    self.eof = true;
                }
            }
        }
        total
    }

    /// Takes the socket off the event loop.
    pub fn close(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // the login line (the master password) may still be in the buffer's capacity
        zeroize::Zeroize::zeroize(&mut self.out);
    }
}
