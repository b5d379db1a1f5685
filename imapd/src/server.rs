//! The event-loop side of imapd: sockets, buffers, timeouts and the auth daemon, around
//! the sans-I/O [`Session`]. Password checks go to the auth daemon (`private/auth`) from a
//! short-lived thread per attempt, so a slow or throttled answer never stalls the loop;
//! the answer comes back through a channel and a [`mio::Waker`].

use crate::session::{Need, Session, Settings};
use mio::net::TcpStream;
use mio::{Interest, Token, Waker};
use postern_lib::ipc::IpcStream;
use postern_lib::proto::auth::{self, AuthReply, AuthRequest};
use postern_lib::skeleton::event::{EventLoop, EventService};
use postern_lib::skeleton::{Accepted, Context, Peer, Stream};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
/// Most unsent output held for one client before reading from it pauses.
const MAX_PENDING_OUT: usize = 4 * 1024 * 1024;

struct Conn {
    sock: TcpStream,
    session: Session,
    out: Vec<u8>,
    last: Instant,
    peer: String,
    counted_user: Option<String>,
}

/// The imapd service.
pub struct Imapd {
    settings: Settings,
    conns: HashMap<usize, Conn>,
    next: usize,
    waker: Option<Arc<Waker>>,
    tx: Sender<(usize, Result<String, String>)>,
    rx: Receiver<(usize, Result<String, String>)>,
    per_user: HashMap<String, u32>,
    user_limit: u32,
    timeout: Duration,
    login_timeout: Duration,
    auth_socket: std::path::PathBuf,
}

impl Imapd {
    /// A service from the skeleton's context.
    pub fn new(ctx: &Context) -> Imapd {
        let m = &ctx.main;
        let (tx, rx) = channel();
        Imapd {
            settings: Settings {
                mail_base: m.virtual_mailbox_base.clone().into(),
                max_literal: m.imapd_max_literal,
                max_line: m.imapd_max_line_length as usize,
                hostname: m.myhostname.clone(),
            },
            conns: HashMap::new(),
            next: 1,
            waker: None,
            tx,
            rx,
            per_user: HashMap::new(),
            user_limit: m.imapd_user_connection_limit,
            timeout: Duration::from_secs(m.imapd_timeout.0),
            login_timeout: Duration::from_secs(m.imapd_login_timeout.0),
            auth_socket: auth::SOCKET.into(),
        }
    }

    fn handle_need(&mut self, id: usize, need: Need, lp: &EventLoop<'_>) {
        let Need::Verify { user, password } = need;
        let waker = match &self.waker {
            Some(w) => w.clone(),
            None => match Waker::new(lp.registry(), WAKER) {
                Ok(w) => {
                    let w = Arc::new(w);
                    self.waker = Some(w.clone());
                    w
                }
                Err(e) => {
                    tracing::warn!("waker: {e}");
                    return;
                }
            },
        };
        let tx = self.tx.clone();
        let socket = self.auth_socket.clone();
        let client = self.conns.get(&id).map(|c| c.peer.clone());
        let spawned = std::thread::Builder::new().name("auth".into()).spawn(move || {
            let result = verify(&socket, user, password, client);
            let _ = tx.send((id, result));
            let _ = waker.wake();
        });
        if let Err(e) = spawned {
            let _ = self.tx.send((id, Err(format!("thread: {e}"))));
        }
    }

    fn after(&mut self, id: usize, lp: &EventLoop<'_>, need: Option<Need>) {
        if let Some(need) = need {
            self.handle_need(id, need, lp);
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        // per-user session limit, checked once a login succeeds
        if c.counted_user.is_none()
            && let Some(u) = c.session.user().map(str::to_string)
        {
            let n = self.per_user.entry(u.clone()).or_insert(0);
            *n += 1;
            c.counted_user = Some(u);
            if *n > self.user_limit {
                c.session.bye("Too many connections for this user");
            }
        }
        let data = c.session.take_output();
        c.out.extend_from_slice(&data);
        if flush(c).is_err() || (c.session.closed() && c.out.is_empty()) {
            self.close(id, lp);
        }
    }

    fn close(&mut self, id: usize, lp: &EventLoop<'_>) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = lp.registry().deregister(&mut c.sock);
            if let Some(u) = c.counted_user
                && let Some(n) = self.per_user.get_mut(&u)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&u);
                }
            }
        }
    }
}

fn verify(socket: &std::path::Path, user: String, password: String, client: Option<String>) -> Result<String, String> {
    let mut req = AuthRequest::Verify {
        user,
        password,
        service: "imap".into(),
        client,
    };
    let res = (|| {
        let sock = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
        let mut ipc = IpcStream::client(sock, auth::PROTOCOL, auth::VERSION, Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        ipc.send(&req).map_err(|e| e.to_string())?;
        ipc.recv::<AuthReply>().map_err(|e| e.to_string())
    })();
    if let AuthRequest::Verify { password, .. } = &mut req {
        zeroize::Zeroize::zeroize(password);
    }
    match res? {
        AuthReply::Ok { user } => Ok(user),
        AuthReply::Fail { reason } | AuthReply::TempFail { reason } => Err(reason),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl EventService for Imapd {
    fn accept(&mut self, lp: &EventLoop<'_>, _ctx: &Context, conn: Accepted) {
        let Stream::Tcp(std_sock) = conn.stream else {
            tracing::warn!("imapd serves TCP only");
            return;
        };
        if std_sock.set_nonblocking(true).is_err() {
            return;
        }
        let (peer, secure) = match &conn.peer {
            Peer::Inet(a) => (a.ip().to_string(), a.ip().is_loopback()),
            _ => ("local".into(), true),
        };
        let mut sock = TcpStream::from_std(std_sock);
        let id = self.next;
        self.next += 1;
        if lp
            .registry()
            .register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return;
        }
        tracing::info!("connect from {peer}");
        let session = Session::new(self.settings.clone(), secure);
        self.conns.insert(
            id,
            Conn {
                sock,
                session,
                out: Vec::new(),
                last: Instant::now(),
                peer,
                counted_user: None,
            },
        );
        self.after(id, lp, None);
    }

    fn ready(&mut self, lp: &EventLoop<'_>, _ctx: &Context, event: &mio::event::Event) {
        let id = event.token().0;
        if event.token() == WAKER {
            while let Ok((cid, result)) = self.rx.try_recv() {
                let need = match self.conns.get_mut(&cid) {
                    Some(c) => c.session.auth_done(result),
                    None => continue,
                };
                self.after(cid, lp, need);
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        if event.is_writable() && flush(c).is_err() {
            self.close(id, lp);
            return;
        }
        if c.session.closed() {
            if c.out.is_empty() {
                self.close(id, lp);
            }
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut need = None;
        let mut eof = false;
        loop {
            if c.out.len() > MAX_PENDING_OUT || c.session.closed() {
                break;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.last = Instant::now();
                    if let Some(nd) = c.session.input(&buf[..n]) {
                        need = Some(nd);
                    }
                    let data = c.session.take_output();
                    c.out.extend_from_slice(&data);
                    let _ = flush(c);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            self.close(id, lp);
            return;
        }
        self.after(id, lp, need);
    }

    fn tick(&mut self, lp: &EventLoop<'_>, _ctx: &Context, now: Instant) {
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            let limit = if c.session.authenticated() {
                self.timeout
            } else {
                self.login_timeout
            };
            if now.duration_since(c.last) > limit {
                c.session.bye("Idle timeout");
            } else {
                c.session.poll();
            }
            self.after(id, lp, None);
        }
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn stop(&mut self, lp: &EventLoop<'_>, _ctx: &Context) {
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.session.bye("Server shutting down");
            }
            self.after(id, lp, None);
        }
    }
}
