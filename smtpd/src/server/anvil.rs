//! Per-client connection counting inside one smtpd process, the fallback while the anvil
//! daemon is away: the shared counter of [`postern_lib::anvil::local`] (imapd and pop3d
//! use the same).

pub use postern_lib::anvil::local::{Anvil, Refusal};
