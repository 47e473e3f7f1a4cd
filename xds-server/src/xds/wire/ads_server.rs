//! ADS as a tower service for tonic's router: routes the two ADS methods to the stream
//! machines and writes their responses as frames, each one allocation of exactly its
//! size, charged to the stream's identity until HTTP/2 has taken all of it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::xds::ads::AdsService;
use crate::xds::wire::budget;

/// The gRPC service name of ADS.
const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// ADS as a tower service for tonic's router.
#[derive(Clone)]
pub struct AdsServer {
    ads: Arc<AdsService>,
    max_message_bytes: usize,
}

impl AdsServer {
    /// Serves `ads`, refusing requests over `max_message_bytes`.
    pub fn new(ads: AdsService, max_message_bytes: usize) -> Self {
        AdsServer {
            ads: Arc::new(ads),
            max_message_bytes,
        }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = SERVICE;
}

impl tonic::codegen::Service<http::Request<Body>> for AdsServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(SERVICE))
            .and_then(|m| m.strip_prefix('/'));
        let limit = self.max_message_bytes;
        let response = match method {
            Some("DeltaAggregatedResources") => self.ads.delta(req, limit),
            Some("StreamAggregatedResources") => self.ads.sotw(req, limit),
            _ => Err(Status::unimplemented("no such method")),
        };
        std::future::ready(Ok(match response {
            Ok(frames) => {
                let mut resp = http::Response::new(Body::new(Outbound::new(frames)));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                resp
            }
            // A status before any message: the trailers-only form.
            Err(status) => status.into_http(),
        }))
    }
}

/// A stream's response body: frames from the stream's task, then the status as trailers.
/// A frame goes out in pieces of at most [`budget::CHUNK`] bytes, each released from the
/// stream's charge as HTTP/2 takes it (it asks for the next only once it has room). The
/// stream's fixed charge lasts as long as the body; then what HTTP/2 may still hold of
/// it is charged to the connection.
pub(crate) struct Outbound {
    rx: mpsc::Receiver<Result<Bytes, Status>>,
    /// What is left of the frame being sent.
    current: Bytes,
    queued: Option<Arc<budget::Queued>>,
    open: Option<(budget::Charge, Arc<budget::ConnAccount>)>,
    done: bool,
}

impl Outbound {
    pub(crate) fn new(frames: crate::xds::ads::Frames) -> Self {
        Outbound {
            rx: frames.rx,
            current: Bytes::new(),
            queued: frames.queued,
            open: frames.open,
            done: false,
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if let Some((_open, conn)) = self.open.take() {
            conn.finished(budget::HTTP2_HELD);
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("13"));
    }
    map
}

impl http_body::Body for Outbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // A body shared with other proxies is not freed with this frame.
                    if frame.is_unique() {
                        crate::observability::memory::note_freed(frame.len());
                    }
                    self.current = frame;
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(end) => {
                    self.done = true;
                    let status = match end {
                        Some(Err(status)) => status,
                        _ => Status::ok(""),
                    };
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
            }
        }
        let n = self.current.len().min(budget::CHUNK);
        let piece = self.current.split_to(n);
        if let Some(q) = &self.queued {
            q.release(n);
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Takes every data piece of `out` until its trailers, handing each to `each`.
#[cfg(test)]
pub(crate) async fn drain(out: &mut Outbound, mut each: impl FnMut(Bytes)) {
    use http_body_util::BodyExt;
    while let Some(frame) = out.frame().await {
        match frame.expect("ok").into_data() {
            Ok(d) => each(d),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn the_body_ends_with_the_status_as_trailers() {
        let (tx, rx) = mpsc::channel(4);
        let mut out = Outbound::new(crate::xds::ads::Frames {
            rx,
            queued: None,
            open: None,
        });
        tx.send(Ok(Bytes::from_static(b"abc"))).await.expect("send");
        tx.send(Err(Status::unavailable("bye")))
            .await
            .expect("send");
        let first = out.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"abc"));
        let last = out.frame().await.expect("frame").expect("ok");
        let t = last.into_trailers().expect("trailers");
        assert_eq!(t.get("grpc-status").expect("status"), "14");
        assert_eq!(t.get("grpc-message").expect("message"), "bye");
        assert!(out.frame().await.is_none());
        // A clean end is status 0.
        let (tx, rx) = mpsc::channel::<Result<Bytes, Status>>(1);
        drop(tx);
        let mut out = Outbound::new(crate::xds::ads::Frames {
            rx,
            queued: None,
            open: None,
        });
        let t = out
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_trailers()
            .expect("trailers");
        assert_eq!(t.get("grpc-status").expect("status"), "0");
    }

    #[tokio::test]
    async fn a_frame_goes_out_in_chunks_each_released_from_its_charge() {
        use prometheus_client::metrics::gauge::Gauge;

        use crate::config::BudgetConfig;
        use crate::xds::wire::budget::{Budget, CHUNK, Queued};
        let b = Budget::new(
            BudgetConfig {
                total: 1 << 30,
                share: 1 << 20,
                per_pod: 0,
            },
            Gauge::default(),
        );
        let q = Queued::new(b.account("id", None));
        let len = 2 * CHUNK + 100;
        assert!(q.admit(len, || false).await);
        let (tx, rx) = mpsc::channel(4);
        tx.send(Ok(Bytes::from(vec![7u8; len])))
            .await
            .expect("send");
        drop(tx);
        let mut out = Outbound::new(crate::xds::ads::Frames {
            rx,
            queued: Some(q.clone()),
            open: None,
        });
        let mut pieces = Vec::new();
        drain(&mut out, |d| {
            pieces.push(d.len());
            assert_eq!(b.used(), len - pieces.iter().sum::<usize>());
        })
        .await;
        assert_eq!(pieces, [CHUNK, CHUNK, 100]);
        assert_eq!((q.held(), b.used()), (0, 0));
    }
}
