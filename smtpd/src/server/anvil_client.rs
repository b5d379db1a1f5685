//! smtpd's side of the [`anvil`](postern_lib::proto::anvil) protocol: the shared client of
//! [`postern_lib::anvil::client`] (imapd and pop3d use the same), on [`TOKEN`] (client
//! connections use `4*id + 0..=2`).

pub use postern_lib::anvil::client::{Answer, AnvilClient, TIMEOUT, TOKEN};
