//! The Gateway API mesh (GAMMA) conformance suite, run against Rudder with real Envoy:
//! the upstream tests as data (`data`, from `testbed/conformance/`), the comparison of
//! what came back with what a case expects (`check`), the processes and clients
//! (`world`), running one test on a shared world (`run`), and the `ConformanceReport`
//! made from the results (`report`). `tests/gamma_conformance.rs` drives it.

pub mod check;
pub mod data;
pub mod report;
pub mod run;
pub mod world;
