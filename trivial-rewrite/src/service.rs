//! trivial-rewrite's handler on the framed-IPC server ([`postern_lib::ipc::server`]):
//! client connections on `private/rewrite`, each request answered at once.

use std::time::Duration;

use postern_lib::ipc::server::{Answer, ClientId, Config, Handler, Outbox, Server};
use postern_lib::proto::resolve::{PROTOCOL, ResolveReply, ResolveRequest, VERSION};

use crate::resolver::Resolver;

/// A client idle this long is closed (qmgr reconnects when it needs us).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most bytes of replies queued for one client before it must read them.
const MAX_OUT: usize = 4 << 20;

/// The resolver, as the server's handler.
pub struct Service {
    resolver: Resolver,
}

/// The server of `resolver`.
pub fn server(resolver: Resolver) -> Server<Service> {
    let config = Config {
        name: "rewrite",
        protocol: PROTOCOL,
        version: VERSION,
        max_request: postern_lib::ipc::MAX_MESSAGE_LEN,
        max_output: MAX_OUT,
        idle_timeout: Some(IDLE_TIMEOUT),
    };
    Server::new(config, Service { resolver })
}

impl Handler for Service {
    type Request = ResolveRequest;
    type Reply = ResolveReply;

    fn request(
        &mut self,
        _out: &mut Outbox<ResolveReply>,
        _client: ClientId,
        req: ResolveRequest,
    ) -> Answer<ResolveReply> {
        self.resolver.refresh();
        Answer::Reply(match req {
            ResolveRequest::Rewrite { address } => match self.resolver.rewrite(&address) {
                Some(a) => ResolveReply::Rewritten { address: a },
                None => ResolveReply::Rewritten { address },
            },
            ResolveRequest::Resolve { address } => self.resolver.resolve(&address),
        })
    }
}
