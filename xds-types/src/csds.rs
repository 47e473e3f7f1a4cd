//! What Rudder adds to the CSDS answers it serves, so that the server that writes them
//! and `xdsctl` that reads them agree.

/// Node metadata key CSDS adds: the proxy's stream type (`sotw` or `delta`).
pub const META_STREAM: &str = "rudder.dev/stream";
/// Node metadata key CSDS adds: the proxy's identity.
pub const META_IDENTITY: &str = "rudder.dev/identity";
