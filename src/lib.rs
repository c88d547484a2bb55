#![forbid(unsafe_code)]
//! varde: synthetic monitoring probes and the coordinator that turns their
//! findings into incidents. This crate is the library the `varde` binary and
//! the tests drive.

pub mod check;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod notify;
pub mod oncall;
pub mod probe;
pub mod resolve;
pub mod serve;
pub mod up;
pub mod wire;
