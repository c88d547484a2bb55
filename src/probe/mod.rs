//! The probe daemon (`varde probe`): runs configured checks on schedules in
//! one region, exports Prometheus metrics, answers blackbox-style `/probe`
//! requests and pushes every result to the coordinator.

pub mod def;

pub use def::CheckDef;
