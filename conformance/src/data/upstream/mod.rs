//! Clusters at run time: endpoint choice (round robin, least request, locality
//! priority), connections to an endpoint (plain or mTLS as its transport match says),
//! and HTTP/1.1 and HTTP/2 connection pools per endpoint.
//!
//! State is kept per cluster name and survives snapshots: a new load assignment keeps
//! the pools of endpoints that stay and drops those of removed endpoints (their idle
//! connections close; busy ones finish their requests first).

mod choose;
pub(crate) mod connect;
pub(crate) mod endpoint;
pub(crate) mod io;
mod lb;
pub(crate) mod pool;
pub(crate) mod state;
pub(crate) mod transport;

pub use connect::connect;
pub use io::{Io, Target, UpstreamError, UpstreamIo};
pub use state::Upstreams;
