//! `rudder-proxy`: Rudder's own data plane. It consumes the xDS Rudder sends Envoy
//! sidecars (from the same bootstrap the agent writes), validates every resource into
//! its own configuration, and serves the sidecar's data path from immutable snapshots.
//!
//! Layers, bottom up (a module imports only its own layer or lower; checked by
//! `testbed/tests/layering.rs`):
//! 1. `config` (the proxy's own configuration values and the snapshot), `stats`.
//! 2. `convert` (xDS protobuf to `config`, typed errors with field paths), `live` (the
//!    published snapshot).
//! 3. `xds` (the bootstrap, the ADS client machines for SotW and delta, the agent's
//!    SDS client), `data` (listeners, routing, upstream pools, TLS).
//! 4. `admin` (the admin port), then `run` (wiring).

pub mod admin;
pub mod config;
pub mod convert;
pub mod data;
pub mod live;
pub mod run;
pub mod stats;
pub mod xds;
