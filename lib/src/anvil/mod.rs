//! Connection limits per client address for the network daemons (smtpd, imapd, pop3d):
//! the shared client of the anvil daemon ([`client`], counts over all processes of a
//! service), the in-process counter used while anvil is away ([`local`]), and the
//! admission gate imapd and pop3d put new connections through ([`gate`]).

pub mod client;
pub mod gate;
pub mod local;
