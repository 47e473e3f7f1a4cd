//! The echo backend: answers every request with its own name, the protocol it was
//! spoken to in, and the authority and path it saw, on a first line the scenarios read;
//! then what upstream Gateway API conformance's echo server reports, one `Key=Value` a
//! line: `Method`, `Proto`, `Host`, `URL` (path and query), `Hostname` (the pod),
//! `Namespace`, and one `RequestHeader=Name:value` per request header value. HTTP/1.1
//! and h2c on one port; a gRPC request (`content-type: application/grpc*`) gets the
//! same text back as a gRPC message (field 1, a string) with `grpc-status: 0`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// How the backend misbehaves, for policy tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Answer 503 to every Nth request (1: all of them; 0: none).
    pub fail_every: u64,
    /// Wait this long before answering.
    pub delay_ms: u64,
}

/// Who answers: the pod's name and namespace.
#[derive(Clone, Debug)]
pub struct Who {
    /// The pod name (the first word of every answer, and `Hostname=`).
    pub name: String,
    /// Its namespace (`Namespace=`).
    pub namespace: String,
}

/// The most of a gRPC request body read before answering.
const MAX_GRPC_REQUEST: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// Serves forever on `listener`. `GET /__count` answers the number of other requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    who: Who,
    behaviour: Behaviour,
) -> anyhow::Result<()> {
    let who = Arc::new(who);
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let (who, count) = (who.clone(), count.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (who, count) = (who.clone(), count.clone());
                async move { Ok::<_, Infallible>(answer(req, &who, &count, behaviour).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    who: &Who,
    count: &AtomicU64,
    behaviour: Behaviour,
) -> Response<Body> {
    if req.uri().path() == "/__count" {
        let n = count.load(Ordering::Relaxed);
        return Response::new(full(n.to_string()));
    }
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    let text = describe(&req, who, n);
    let grpc = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        // Read the request message (bounded) so the stream ends cleanly.
        let _ = Limited::new(req.into_body(), MAX_GRPC_REQUEST)
            .collect()
            .await;
    }
    if behaviour.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(behaviour.delay_ms)).await;
    }
    let fail = behaviour.fail_every > 0 && n.is_multiple_of(behaviour.fail_every);
    let mut resp = if grpc {
        grpc_reply(&text, fail)
    } else {
        Response::new(full(text))
    };
    if fail && !grpc {
        *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

/// The answer's text: the scenarios' first line, then upstream's fields.
fn describe(req: &Request<hyper::body::Incoming>, who: &Who, n: u64) -> String {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| header("host"))
        .unwrap_or_default();
    let xfcc = header("x-forwarded-client-cert").unwrap_or_else(|| "-".into());
    // Request headers named `x-echo-*` come back on the first line too, so tests can see
    // what a proxy added.
    let echoed: String = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-echo-"))
        .map(|(k, v)| format!(" {}={}", k, v.to_str().unwrap_or("?")))
        .collect();
    let mut text = format!(
        "{} proto={:?} authority={} path={} n={} xfcc={}{}\n",
        who.name,
        req.version(),
        authority,
        req.uri().path(),
        n,
        xfcc,
        echoed
    );
    let url = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let _ = write!(
        text,
        "Method={}\nProto={:?}\nHost={}\nURL={}\nHostname={}\nNamespace={}\n",
        req.method(),
        req.version(),
        authority,
        url,
        who.name,
        who.namespace
    );
    for (k, v) in req.headers() {
        let _ = writeln!(text, "RequestHeader={}:{}", k, v.to_str().unwrap_or("?"));
    }
    text
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

/// A unary gRPC answer carrying `text` as field 1 of the message; `fail` answers
/// UNAVAILABLE (14) instead.
fn grpc_reply(text: &str, fail: bool) -> Response<Body> {
    let mut trailers = hyper::HeaderMap::new();
    let status = if fail { "14" } else { "0" };
    trailers.insert(
        "grpc-status",
        hyper::header::HeaderValue::from_static(status),
    );
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::new();
    if !fail {
        frames.push(Ok(Frame::data(grpc_frame(&string_field(1, text)))));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut resp = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed());
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A protobuf length-delimited field.
pub fn string_field(number: u32, text: &str) -> Bytes {
    let mut out = BytesMut::new();
    put_varint(&mut out, u64::from(number << 3 | 2));
    put_varint(&mut out, text.len() as u64);
    out.put_slice(text.as_bytes());
    out.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A gRPC length-prefixed message (uncompressed).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The text of field 1 of the first message in a gRPC response body, as
/// [`grpc_reply`] writes it.
pub fn grpc_message_text(body: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    let msg = body.get(5..5 + len)?;
    let (tag, rest) = varint(msg)?;
    if tag != (1 << 3 | 2) {
        return None;
    }
    let (n, rest) = varint(rest)?;
    let text = rest.get(..usize::try_from(n).ok()?)?;
    String::from_utf8(text.to_vec()).ok()
}

fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// Binds `addr` and serves.
pub async fn run(addr: SocketAddr, who: Who, behaviour: Behaviour) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve(listener, who, behaviour).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_message_reads_back_as_written() {
        let text = "echo-v1-0 proto=HTTP/2.0\nHostname=echo-v1-0\n".repeat(10);
        let frame = grpc_frame(&string_field(1, &text));
        assert_eq!(grpc_message_text(&frame).as_deref(), Some(text.as_str()));
        assert_eq!(grpc_message_text(&frame[..4]), None, "a short frame");
        assert_eq!(grpc_message_text(&grpc_frame(&string_field(2, "x"))), None);
    }
}
