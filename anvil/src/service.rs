//! anvil's handler on the framed-IPC server ([`postern_lib::ipc::server`]): daemon
//! (smtpd, imapd, pop3d) connections on `private/anvil`, each holding the counts it made
//! (given back when it closes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use postern_lib::ipc::server::{Answer, ClientId, Config, Handler, Outbox, Server};
use postern_lib::proto::anvil::{AnvilReply, AnvilRequest, PROTOCOL, VERSION};

use crate::table::{Key, MAX_CLIENTS, Table};

/// Longest service name accepted.
const MAX_SERVICE: usize = 128;
/// Most bytes of replies queued for one client before it must read them.
const MAX_OUT: usize = 1 << 20;

/// The table, and per client the connections it has counted and not yet disconnected.
pub struct Service {
    table: Table,
    held: HashMap<ClientId, HashMap<Key, u32>>,
}

/// The server of a table counting rates over `window`.
pub fn server(window: Duration) -> Server<Service> {
    let config = Config {
        name: "anvil",
        protocol: PROTOCOL,
        version: VERSION,
        max_request: postern_lib::ipc::MAX_MESSAGE_LEN,
        max_output: MAX_OUT,
        idle_timeout: None,
    };
    Server::new(
        config,
        Service {
            table: Table::new(MAX_CLIENTS, window),
            held: HashMap::new(),
        },
    )
}

impl Service {
    fn answer(&mut self, client: ClientId, req: AnvilRequest, now: Instant) -> Result<AnvilReply, String> {
        let held = self.held.entry(client).or_default();
        match req {
            AnvilRequest::Connect { service, client } => {
                let key = key(service, &client)?;
                Ok(match self.table.connect(&key, now) {
                    Some((count, rate)) => {
                        *held.entry(key).or_insert(0) += 1;
                        AnvilReply::Counts { count, rate }
                    }
                    None => AnvilReply::Untracked,
                })
            }
            AnvilRequest::Disconnect { service, client } => {
                let key = key(service, &client)?;
                // Only what this connection counted: a client cannot lower another's counts.
                if let Some(n) = held.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        held.remove(&key);
                    }
                    self.table.disconnect(&key, 1, now);
                }
                Ok(AnvilReply::Ok)
            }
        }
    }
}

/// A request's key, checked.
fn key(service: String, client: &str) -> Result<Key, String> {
    if service.len() > MAX_SERVICE {
        return Err("service name too long".into());
    }
    let ip: IpAddr = client.parse().map_err(|_| {
        format!(
            "bad client address {:?}",
            postern_lib::strbuf::printable_bounded(client.as_bytes(), 64)
        )
    })?;
    Ok((service, ip))
}

impl Handler for Service {
    type Request = AnvilRequest;
    type Reply = AnvilReply;

    fn request(&mut self, _out: &mut Outbox<AnvilReply>, client: ClientId, req: AnvilRequest) -> Answer<AnvilReply> {
        match self.answer(client, req, Instant::now()) {
            Ok(r) => Answer::Reply(r),
            Err(e) => Answer::Refuse(e),
        }
    }

    fn disconnected(&mut self, _out: &mut Outbox<AnvilReply>, client: ClientId) {
        let now = Instant::now();
        for (key, n) in self.held.remove(&client).unwrap_or_default() {
            self.table.disconnect(&key, n, now);
        }
    }

    fn tick(&mut self, _out: &mut Outbox<AnvilReply>, now: Instant) {
        self.table.expire(now);
    }
}
