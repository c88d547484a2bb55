//! The coordinator, being built piece by piece: ingest of probe results,
//! per-check verdicts across regions, incidents, and the store that persists
//! them. So far: [`verdict`], the pure (no I/O, no clock) per-region state and
//! per-check verdict logic; [`latency`], latency percentiles; [`rules`], the validated `alert-rules/*.toml`;
//! [`silence`], silences and weekly maintenance windows (pure, `now` as an
//! argument); and [`store`], the SQLite store that persists results, check
//! state and (soon) incidents.

pub mod latency;
pub mod rules;
pub mod silence;
pub mod store;
pub mod verdict;
