//! Where one stream's responses go: each admitted by its identity's charge before it is
//! encoded, a shared body kept with its head, and a proxy that takes nothing for
//! [`SEND_TIMEOUT`] let go.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use super::Framed;
use crate::xds::wire::budget::Queued;
use crate::xds::wire::frames::Framing;

/// Longest a response may wait for the proxy to read it (Envoy applying 10,000 clusters
/// takes under 10 s).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a stream's responses go: the response body's channel, and the charge that
/// admits each frame before it is encoded.
pub(super) struct Out {
    pub(super) tx: mpsc::Sender<Result<Bytes, Status>>,
    pub(super) queued: Option<Arc<Queued>>,
    pub(super) stop: crate::runtime::Stop,
}

impl Out {
    /// Encodes and sends one response once its identity has room for it (a peer that
    /// does not read its responses stalls its own streams); false once the client is gone.
    /// A proxy that takes nothing for [`SEND_TIMEOUT`] is gone (or holding the stream open
    /// on purpose): the stream ends rather than wait on it forever.
    pub(super) async fn send<R: Framed>(&self, resp: &R) -> bool {
        let go = async {
            // A body already encoded for another proxy is not encoded again, nor walked
            // to learn its length.
            let kept = resp.kept_body();
            if let Some(q) = &self.queued {
                let gone = || self.tx.is_closed() || self.stop.is_stopped();
                if !q.admit(resp.frame_len(&kept), gone).await {
                    return false;
                }
            }
            let Framing { head, shared } = resp.framing(kept);
            let Some(body) = shared else {
                return self.tx.send(Ok(head)).await.is_ok();
            };
            // Both pieces or neither: a head cut off from its body would end the stream
            // with a message cut short.
            let Ok(mut permits) = self.tx.reserve_many(2).await else {
                return false;
            };
            match (permits.next(), permits.next()) {
                (Some(first), Some(second)) => {
                    first.send(Ok(head));
                    second.send(Ok(body));
                    true
                }
                _ => false,
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, go).await {
            Ok(sent) => sent,
            Err(_) => {
                tracing::info!(
                    timeout_s = SEND_TIMEOUT.as_secs(),
                    "ending a stream: the proxy takes no responses"
                );
                false
            }
        }
    }
}
