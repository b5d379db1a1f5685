//! TLS for the network daemons (smtpd, pop3d, imapd): loading a certificate and key into a
//! rustls [`ServerConfig`], and [`TlsSession`], a sans-I/O adapter between the bytes an
//! event loop reads from and writes to a socket and the plaintext the protocol code sees.
//!
//! ```text
//!   socket ──read──► session.receive(ciphertext, &mut plaintext, max) ──► protocol code
//!   socket ◄─write── session.transmit(&mut outbuf)  ◄── session.send(reply bytes)
//! ```
//!
//! The adapter never touches a socket: the daemon reads what the socket has into a
//! buffer, passes it to [`TlsSession::receive`] (which says how much it consumed and
//! appends the decrypted bytes, never more than the caller's bound), queues replies with
//! [`TlsSession::send`], and after every step drains [`TlsSession::transmit`] into its
//! write buffer (handshake records, encrypted replies, alerts). STARTTLS / STLS is the same
//! session started after the plaintext reply "go ahead" has been written out.
//!
//! Use:
//! ```no_run
//! # use postern_lib::tls;
//! let config = tls::server_config("/etc/postern/cert.pem".as_ref(), "/etc/postern/key.pem".as_ref())?;
//! let mut session = tls::TlsSession::new(config)?;
//! let mut plain = Vec::new();
//! let consumed = session.receive(b"...bytes from the socket...", &mut plain, 64 * 1024)?;
//! session.send(b"+OK\r\n")?;
//! let mut out = Vec::new();
//! session.transmit(&mut out); // write `out` to the socket
//! # Ok::<(), tls::TlsError>(())
//! ```
//!
//! Security stance: only rustls's safe defaults (TLS 1.2 and 1.3, ring provider, no
//! renegotiation, no client certificates). The key file is read once, before the
//! privilege drop (call [`server_config`] from `pre_init`), at most [`MAX_PEM_SIZE`]
//! bytes. rustls buffers are bounded: unread plaintext is capped at [`PLAINTEXT_LIMIT`]
//! and [`TlsSession::receive`] stops consuming ciphertext while the caller's plaintext
//! bound is reached, so a peer cannot make a session grow.

use rustls::ServerConfig;
use rustls::server::ServerConnection;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The largest certificate or key file read.
pub const MAX_PEM_SIZE: u64 = 1 << 20;

/// The most decrypted-but-unread bytes (and unsent plaintext) rustls holds per session.
pub const PLAINTEXT_LIMIT: usize = 64 * 1024;

/// Why TLS could not be set up or went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a usable configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The peer broke the TLS protocol (bad record, failed handshake, alert); the
    /// connection must be closed after [`TlsSession::transmit`] has sent the alert.
    #[error("TLS: {0}")]
    Protocol(String),
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_SIZE {
        return Err(err(format!("larger than {MAX_PEM_SIZE} bytes")));
    }
    Ok(bytes)
}

/// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1) and builds a server configuration with rustls's defaults (ring provider).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read_pem(cert_file)?;
    let key_pem = read_pem(key_file)?;
    server_config_from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        TlsError::File { reason, .. } => TlsError::File {
            path: format!("{} / {}", cert_file.display(), key_file.display()),
            reason,
        },
        other => other,
    })
}

/// [`server_config`] from PEM text in memory.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let bad = |reason: String| TlsError::File {
        path: String::new(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the PEM file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("bad private key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// One server-side TLS session, sans-I/O. See the module docs for the data flow.
pub struct TlsSession {
    conn: ServerConnection,
    /// Records encrypted by `send` while rustls's own buffer was full, not yet transmitted.
    pending: Vec<u8>,
    peer_closed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl TlsSession {
    /// A new session waiting for the client's hello.
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, TlsError> {
        let mut conn = ServerConnection::new(config).map_err(|e| TlsError::Config(e.to_string()))?;
        conn.set_buffer_limit(Some(PLAINTEXT_LIMIT));
        Ok(TlsSession {
            conn,
            pending: Vec::new(),
            peer_closed: false,
        })
    }

    /// Feeds ciphertext read from the socket. Appends the plaintext it yields to `plain`
    /// while `plain.len() < max_plain`, and returns how many bytes of `input` it consumed;
    /// keep the rest and offer it again once the plaintext has been used. After an error,
    /// call [`transmit`](Self::transmit) once (it holds the alert) and close.
    pub fn receive(&mut self, input: &[u8], plain: &mut Vec<u8>, max_plain: usize) -> Result<usize, TlsError> {
        let mut consumed = 0;
        loop {
            self.drain_plaintext(plain, max_plain)?;
            if plain.len() >= max_plain || consumed >= input.len() {
                return Ok(consumed);
            }
            let mut rest = input.get(consumed..).unwrap_or_default();
            let n = match self.conn.read_tls(&mut rest) {
                Ok(n) => n,
                // rustls's own buffer is full: use what it has first.
                Err(e) if e.kind() == io::ErrorKind::Other => return Ok(consumed),
                Err(e) => return Err(TlsError::Protocol(e.to_string())),
            };
            if n == 0 {
                return Ok(consumed);
            }
            consumed += n;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsError::Protocol(e.to_string()))?;
            if state.peer_has_closed() {
                self.peer_closed = true;
            }
        }
    }

    fn drain_plaintext(&mut self, plain: &mut Vec<u8>, max_plain: usize) -> Result<(), TlsError> {
        let mut buf = [0u8; 4096];
        while plain.len() < max_plain {
            let room = (max_plain - plain.len()).min(buf.len());
            let Some(chunk) = buf.get_mut(..room) else {
                return Ok(());
            };
            match self.conn.reader().read(chunk) {
                Ok(0) => {
                    self.peer_closed = true;
                    return Ok(());
                }
                Ok(n) => plain.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.peer_closed = true;
                    return Ok(());
                }
                Err(e) => return Err(TlsError::Protocol(e.to_string())),
            }
        }
        Ok(())
    }

    /// Queues plaintext to send, encrypted once the handshake is done. Any amount may be
    /// queued (the caller bounds what it sends, e.g. one message of at most
    /// `message_size_limit`); drain [`transmit`](Self::transmit) after each call. Before
    /// the handshake completes at most [`PLAINTEXT_LIMIT`] bytes can wait; more is an error.
    pub fn send(&mut self, data: &[u8]) -> Result<(), TlsError> {
        let mut rest = data;
        while !rest.is_empty() {
            match self.conn.writer().write(rest) {
                Ok(0) if self.conn.wants_write() => {
                    // rustls's buffer of records is full: move them out and go on.
                    while self.conn.wants_write() {
                        match self.conn.write_tls(&mut self.pending) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                Ok(0) => {
                    return Err(TlsError::Protocol(
                        "TLS send buffer full before the handshake completed".into(),
                    ));
                }
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) => return Err(TlsError::Protocol(e.to_string())),
            }
        }
        Ok(())
    }

    /// Moves pending ciphertext (handshake, records, alerts) to the end of `out`; returns
    /// how many bytes were added.
    pub fn transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let before = out.len();
        out.append(&mut self.pending);
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.len() - before
    }

    /// Starts an orderly close: queues a close_notify alert (then call `transmit`).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer has sent close_notify (no more plaintext will come).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The negotiated protocol version in Postfix's wording (`TLSv1.3`), for the log and
    /// the `Received:` header; `TLS` before the handshake is done.
    pub fn version(&self) -> String {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(v) => format!("{v:?}"),
            None => "TLS".into(),
        }
    }

    /// The negotiated cipher suite by its IANA name (`TLS_AES_256_GCM_SHA384`);
    /// `unknown` before the handshake is done.
    pub fn cipher(&self) -> String {
        self.conn
            .negotiated_cipher_suite()
            .map(|s| {
                let name = format!("{:?}", s.suite());
                name.strip_prefix("TLS13_").map(|r| format!("TLS_{r}")).unwrap_or(name)
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// Version and cipher suite, for the log (`TLSv1.3 TLS_AES_256_GCM_SHA384`).
    pub fn describe(&self) -> String {
        format!("{} {}", self.version(), self.cipher())
    }
}

#[cfg(test)]
mod tests;
