//! The proxy's settings, read from `main.toml` in `pre_init` (while still privileged: the
//! master password file is mode 0600). Backend names are resolved here, once, so the event
//! loop never waits for a resolver.

use postern_lib::config::{Cidr, MainConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Which protocol a proxy process speaks (its service's first argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// POP3 (RFC 1939).
    Pop3,
    /// IMAP (RFC 3501 / 9051).
    Imap,
}

/// Most bytes of the master password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// What one proxy process needs.
pub struct Settings {
    /// The protocol.
    pub kind: Kind,
    /// The service (`pop3-proxy/inet`): anvil counts per service.
    pub service: String,
    /// Backends in order of preference: as configured, and one address each (a name with
    /// several addresses is one entry per address).
    pub backends: Vec<(String, SocketAddr)>,
    /// The backend login: `USER` + this (`*proxy`).
    pub master_suffix: String,
    /// The master user's password.
    pub master_password: Zeroizing<String>,
    /// `proxy_connect_timeout`.
    pub connect_timeout: Duration,
    /// `proxy_backend_timeout`.
    pub backend_timeout: Duration,
    /// The longest wait for the replicator's answer to a sync (twice `replica_timeout`:
    /// it may wait that long for a peer, and for the user's lock).
    pub sync_timeout: Duration,
    /// TLS for STLS/STARTTLS (`pop3d_tls_*` / `imapd_tls_*`: the same host's certificate).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `proxy_secure_networks`.
    pub secure_networks: Vec<Cidr>,
    /// Idle time of a session (`pop3d_timeout` / `imapd_timeout`).
    pub idle: Duration,
    /// From connecting to a login (`pop3d_login_timeout` / `imapd_login_timeout`).
    pub login_timeout: Duration,
    /// `login_client_connection_count_limit`.
    pub login_limit: u32,
    /// The longest command line from a client (IMAP: `imapd_max_line_length`).
    pub max_line: usize,
    /// The largest literal a client may send (IMAP: `imapd_max_literal`).
    pub max_literal: u64,
    /// The director (issue 16), when `director_pairs` is set.
    pub director: Option<Director>,
}

/// Which pair holds each user's mailbox, and where that pair is reached.
pub struct Director {
    /// The pairs, the ring, the exceptions table.
    pub map: postern_lib::director::Director,
    /// Per pair (in `director_pairs` order), its addresses for this protocol, resolved.
    pub backends: Vec<Vec<(String, SocketAddr)>>,
    /// `director_pair`: this host's pair, whose users go to `backends` above with a sync.
    pub local: Option<usize>,
}

fn resolve(hp: &str) -> Vec<SocketAddr> {
    if let Ok(a) = hp.parse::<SocketAddr>() {
        return vec![a];
    }
    match hp.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            tracing::warn!("backend {hp}: cannot resolve: {e}");
            Vec::new()
        }
    }
}

/// Reads the first line of the master password file.
fn master_password(path: &Path) -> Result<Zeroizing<String>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("proxy_master_password_file {}: {e}", path.display()))?;
    let mut text = Zeroizing::new(String::new());
    f.take(MAX_PASSWORD_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("proxy_master_password_file {}: {e}", path.display()))?;
    let line = Zeroizing::new(text.lines().next().unwrap_or_default().to_string());
    if line.is_empty() {
        return Err(format!("proxy_master_password_file {}: empty", path.display()));
    }
    if line.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "proxy_master_password_file {}: control characters in the password",
            path.display()
        ));
    }
    Ok(line)
}

impl Settings {
    /// The settings of a `kind` proxy for `service`.
    pub fn load(m: &MainConfig, kind: Kind, service: &str) -> Result<Settings, String> {
        if m.proxy_master_password_file.is_empty() {
            return Err("proxy_master_password_file is not set".into());
        }
        let master_password = master_password(m.proxy_master_password_file.path())?;
        let (list, cert, key) = match kind {
            Kind::Pop3 => (&m.proxy_pop3_backends, &m.pop3d_tls_cert_file, &m.pop3d_tls_key_file),
            Kind::Imap => (&m.proxy_imap_backends, &m.imapd_tls_cert_file, &m.imapd_tls_key_file),
        };
        if list.is_empty() {
            return Err(format!("no backends: proxy_{}_backends is empty", name(kind)));
        }
        let backends = list
            .iter()
            .flat_map(|hp| resolve(hp).into_iter().map(move |a| (hp.clone(), a)))
            .collect();
        let director = match postern_lib::director::Director::from_config(m)? {
            Some(map) => {
                let backends = map
                    .pairs()
                    .iter()
                    .map(|p| {
                        let list = match kind {
                            Kind::Pop3 => &p.pop3,
                            Kind::Imap => &p.imap,
                        };
                        list.iter()
                            .flat_map(|hp| resolve(hp).into_iter().map(move |a| (hp.clone(), a)))
                            .collect()
                    })
                    .collect();
                let local = map.index(&m.director_pair);
                Some(Director { map, backends, local })
            }
            None => None,
        };
        let tls = if cert.is_empty() {
            None
        } else {
            Some(postern_lib::tls::server_config(cert.path(), key.path()).map_err(|e| e.to_string())?)
        };
        let (idle, login_timeout) = match kind {
            Kind::Pop3 => (m.pop3d_timeout.duration(), m.pop3d_login_timeout.duration()),
            Kind::Imap => (m.imapd_timeout.duration(), m.imapd_login_timeout.duration()),
        };
        Ok(Settings {
            kind,
            service: service.to_string(),
            backends,
            master_suffix: format!("{}{}", m.auth_master_user_separator, m.proxy_master_user),
            master_password,
            connect_timeout: m.proxy_connect_timeout.duration(),
            backend_timeout: m.proxy_backend_timeout.duration(),
            sync_timeout: m.replica_timeout.duration() * 2 + Duration::from_secs(5),
            tls,
            secure_networks: m.proxy_secure_networks.clone(),
            idle,
            login_timeout,
            login_limit: m.login_client_connection_count_limit,
            max_line: match kind {
                Kind::Pop3 => crate::pop3::MAX_LINE,
                Kind::Imap => m.imapd_max_line_length as usize,
            },
            max_literal: m.imapd_max_literal,
            director,
        })
    }
}

/// Where a user is served: see [`Settings::route`].
pub struct Route<'a> {
    /// The backends, in order.
    pub backends: &'a [(String, SocketAddr)],
    /// Whether the local replicator syncs the user (no director, or this host's pair).
    pub local_sync: bool,
    /// The director's pair.
    pub pair: Option<usize>,
}

impl Settings {
    /// Where `user` is served: the backends in order, whether the local replicator syncs
    /// the user (this host's pair, or no director), and the pair's index. `Err`: the
    /// director cannot place the user now (logged by the caller; the client is told to
    /// try later).
    pub fn route(&self, user: &str) -> Result<Route<'_>, String> {
        let Some(d) = &self.director else {
            return Ok(Route {
                backends: &self.backends,
                local_sync: true,
                pair: None,
            });
        };
        let (i, _) = d.map.pair_of(user)?;
        if d.local == Some(i) {
            return Ok(Route {
                backends: &self.backends,
                local_sync: true,
                pair: Some(i),
            });
        }
        Ok(Route {
            backends: d.backends.get(i).map(Vec::as_slice).unwrap_or_default(),
            local_sync: false,
            pair: Some(i),
        })
    }
}

/// `pop3` or `imap`.
pub fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Pop3 => "pop3",
        Kind::Imap => "imap",
    }
}
