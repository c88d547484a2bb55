//! The coordinator: the source of truth for checks, the receiver of every
//! region's results, and the engine that turns them into incidents and
//! notifications.
//!
//! * [`config`] — the config dir (`probes/`, `alert-rules/`,
//!   `coordinator.toml` with tokens and settings);
//! * [`verdict`] — pure per-region state and per-check verdicts;
//! * [`rules`], [`silence`], [`latency`] — alert rules, silences and
//!   maintenance windows, latency percentiles;
//! * [`engine`] — results in, incidents and outbox rows out;
//! * [`store`] — SQLite persistence;
//! * [`api`] and [`daemon`] — the HTTP API and the `varde coordinator`
//!   process.

pub mod api;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod latency;
pub mod rules;
pub mod silence;
pub mod store;
pub mod verdict;
