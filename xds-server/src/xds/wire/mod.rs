//! The ADS wire: the HTTP/2 service that routes the two ADS methods to the stream
//! machines, reads requests with a buffer that does not keep the largest request alive,
//! and writes the machines' responses as frames encoded straight from the shared
//! resources ([`frames`]).
//!
//! tonic's generated server would encode every response through a per-stream buffer that
//! grows to the largest response ever sent (the first CDS response: hundreds of KB) and
//! stays that size for the stream's life; with thousands of proxies that buffer was most
//! of the server's memory. Here each frame is one allocation of exactly its size, freed
//! once written.

pub mod budget;
pub mod frames;
pub mod sotw_request;

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::xds::grpc::AdsService;

/// The gRPC service name of ADS.
const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/// A read buffer larger than this is dropped once empty (a large request, such as a
/// SotW ACK naming every cluster, is not kept per stream).
const KEEP_BUFFER: usize = 16 * 1024;

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
            Ok(rx) => {
                let mut resp = http::Response::new(Body::new(Outbound { rx, done: false }));
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

/// The requests of one stream, decoded one at a time as the stream asks.
pub struct Inbound<T> {
    body: Body,
    buf: BytesMut,
    limit: usize,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Inbound<T> {
    /// Reads `body`, refusing any message over `limit` bytes.
    pub fn new(body: Body, limit: usize) -> Self {
        Inbound {
            body,
            buf: BytesMut::new(),
            limit,
            done: false,
            _message: PhantomData,
        }
    }

    /// The next request; `None` when the client closed its side.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(m) = self.take()? {
                return Ok(Some(m));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Status::invalid_argument(
                    "the request stream ended inside a message",
                ));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(Status::cancelled(format!("reading requests: {e}"))),
                None => self.done = true,
            }
        }
    }

    /// One whole message from the buffer, if it holds one.
    fn take(&mut self) -> Result<Option<T>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not accepted",
            ));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(Status::resource_exhausted(format!(
                "request too large: {len} bytes, the limit is {} bytes",
                self.limit
            )));
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        let message = T::decode(self.buf.split_to(len).freeze())
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
        if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
            self.buf = BytesMut::new();
        }
        Ok(Some(message))
    }
}

/// A stream's response body: frames from the stream's task, then the status as trailers.
struct Outbound {
    rx: mpsc::Receiver<Result<Bytes, Status>>,
    done: bool,
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
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                crate::observability::memory::note_freed(frame.len());
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            Poll::Ready(end) => {
                self.done = true;
                let status = match end {
                    Some(Err(status)) => status,
                    _ => Status::ok(""),
                };
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use prost::Message;

    use super::*;

    fn framed(m: &impl Message) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A body delivering `bytes` in chunks of `chunk`.
    fn body(bytes: Vec<u8>, chunk: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    fn req(nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: "t".into(),
            response_nonce: nonce.into(),
            resource_names_subscribe: vec!["x".repeat(40_000)],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_and_joined_across_frames_are_read_whole() {
        let mut bytes = framed(&req("1"));
        bytes.extend(framed(&req("2")));
        for chunk in [1, 7, 16_384, bytes.len()] {
            let mut inbound =
                Inbound::<DeltaDiscoveryRequest>::new(body(bytes.clone(), chunk), 1 << 20);
            assert_eq!(inbound.message().await.expect("ok"), Some(req("1")));
            assert_eq!(inbound.message().await.expect("ok"), Some(req("2")));
            assert_eq!(inbound.message().await.expect("ok"), None);
            assert!(
                inbound.buf.capacity() <= KEEP_BUFFER,
                "a large request's buffer is not kept"
            );
        }
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let bytes = framed(&req("1"));
        let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(body(bytes[..5].to_vec(), 5), 1000);
        let err = inbound.message().await.expect_err("too large");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("too large"), "{}", err.message());
    }

    #[tokio::test]
    async fn compressed_truncated_and_malformed_requests_end_the_stream() {
        let mut compressed = framed(&req("1"));
        compressed[0] = 1;
        let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(body(compressed, 64), 1 << 20);
        assert_eq!(
            inbound.message().await.expect_err("compressed").code(),
            tonic::Code::Unimplemented
        );
        let mut truncated = framed(&req("1"));
        truncated.truncate(100);
        let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(body(truncated, 64), 1 << 20);
        assert_eq!(
            inbound.message().await.expect_err("truncated").code(),
            tonic::Code::InvalidArgument
        );
        let garbage = vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(body(garbage, 64), 1 << 20);
        assert_eq!(
            inbound.message().await.expect_err("garbage").code(),
            tonic::Code::InvalidArgument
        );
    }

    #[tokio::test]
    async fn the_body_ends_with_the_status_as_trailers() {
        let (tx, rx) = mpsc::channel(4);
        let mut out = Outbound { rx, done: false };
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
        let mut out = Outbound { rx, done: false };
        let t = out
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_trailers()
            .expect("trailers");
        assert_eq!(t.get("grpc-status").expect("status"), "0");
    }
}
