//! The connection driver is [`postern_util::conn`] (the `Protocol` trait, `Connection`,
//! `Pool`), re-exported here under its old path; [`Gated`], the service around a pool
//! whose clients pass anvil's per-address gate, needs this crate's skeleton and anvil
//! client and so lives here.

pub use postern_util::conn::*;

mod gated;
#[cfg(test)]
mod gated_tests;

pub use gated::{ANVIL, Front, Gated, Start, WAKER, by_address, inet};
