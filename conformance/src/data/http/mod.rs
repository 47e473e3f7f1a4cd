//! The HTTP connection manager and router: virtual host and route choice, header edits,
//! direct responses and redirects, weighted clusters, retries with budgets, timeouts,
//! mirrors; absolute-form and CONNECT requests of the explicit-proxy port.

mod headers;
mod matching;
mod redirect;
mod retry;

use std::sync::Arc;

use crate::config::listener::HttpManager;
use crate::data::upstream::UpstreamIo;
use crate::data::{ConnInfo, Ctx};

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN `h2` under TLS) on `io` until
/// the connection ends.
pub async fn serve(_ctx: Arc<Ctx>, _io: UpstreamIo, _conn: ConnInfo, _hcm: Arc<HttpManager>) {}
