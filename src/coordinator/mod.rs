//! The coordinator, being built piece by piece: ingest of probe results,
//! per-check verdicts across regions, incidents, and the store that persists
//! them. So far: [`verdict`], the pure (no I/O, no clock) per-region state and
//! per-check verdict logic; [`latency`], the windowed latency percentiles
//! `latency` rules judge; [`rules`], the validated `alert-rules/*.toml`;
//! and [`store`], the SQLite store that persists results, check state and
//! (soon) incidents.

pub mod latency;
pub mod rules;
pub mod store;
pub mod verdict;
