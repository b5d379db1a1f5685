//! The replicator (placeholder doc, see below).

pub mod merge;
pub mod replica;
pub mod state;

#[cfg(test)]
mod merge_tests;
