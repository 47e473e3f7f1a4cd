//! The Rudder control plane: sources feed one model, the translator turns it into
//! per-proxy snapshots, and ADS streams deliver them.

pub mod ads;
pub mod bootstrap;
pub mod ca_store;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod containment;
pub mod csds;
pub mod ctl;
pub mod grpc;
pub mod lease;
pub mod listener;
pub mod metrics;
pub mod nack;
pub mod proxies;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod status;
