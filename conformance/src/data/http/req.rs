//! What a request's handlers share: the request's context (`Req`), responses made by
//! the proxy itself (`local`; `local_reply` answers a gRPC request as Envoy's local
//! replies do), and an upstream body as the proxy's body type (`boxed`).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body;
use crate::config::Snapshot;
use crate::config::listener::HttpManager;
use crate::data::ctx::{ConnInfo, Ctx};
use crate::data::upstream::io::{Body, BoxError};

/// What one request needs from its connection and snapshot.
pub(crate) struct Req<'a> {
    pub(crate) ctx: &'a Arc<Ctx>,
    pub(crate) conn: &'a ConnInfo,
    pub(crate) hcm: &'a HttpManager,
    pub(crate) snapshot: &'a Snapshot,
    /// The authority routed on.
    pub(crate) authority: String,
    /// The downstream scheme.
    pub(crate) scheme: &'static str,
}

/// A response made here (not by an upstream), with a text body.
pub(crate) fn local(status: StatusCode, text: &'static str) -> Response<Body> {
    local_bytes(status, Bytes::from_static(text.as_bytes()))
}

pub(super) fn local_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::whole(body.clone()));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    resp
}

/// A local reply as Envoy sends one: to a gRPC request (see [`is_grpc`]) a
/// trailers-only 200 with `content-type: application/grpc`, the `grpc-status` Envoy
/// maps `status` to and `text` as `grpc-message`; to any other, [`local`].
pub(crate) fn local_reply(
    request: &http::HeaderMap,
    status: StatusCode,
    text: &'static str,
) -> Response<Body> {
    if !is_grpc(request) {
        return local(status, text);
    }
    let mut resp = local(StatusCode::OK, "");
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(grpc_status(status)));
    if !text.is_empty() {
        h.insert("grpc-message", HeaderValue::from_static(text));
    }
    resp
}

/// Envoy's test of a gRPC request: `content-type` is `application/grpc` or starts with
/// `application/grpc+` (so `application/grpc-web` is not).
pub(crate) fn is_grpc(request: &http::HeaderMap) -> bool {
    request
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+'))
}

/// Envoy's `httpToGrpcStatus` (gRPC's HTTP-to-status mapping).
pub(crate) fn grpc_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// An upstream response's body as the proxy's body type.
pub(crate) fn boxed(b: Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(v).expect("value"),
        );
        h
    }

    #[test]
    fn grpc_requests_get_a_trailers_only_status_and_others_the_text() {
        assert!(is_grpc(&content_type("application/grpc")));
        assert!(is_grpc(&content_type("application/grpc+proto")));
        assert!(!is_grpc(&content_type("application/grpc-web")));
        assert!(!is_grpc(&content_type("text/plain")));
        assert!(!is_grpc(&http::HeaderMap::new()));
        let g = local_reply(
            &content_type("application/grpc"),
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
        );
        assert_eq!(g.status(), StatusCode::OK);
        assert_eq!(g.headers()["grpc-status"], "7");
        assert_eq!(g.headers()["grpc-message"], "RBAC: access denied");
        assert_eq!(g.headers()[http::header::CONTENT_TYPE], "application/grpc");
        let p = local_reply(&http::HeaderMap::new(), StatusCode::FORBIDDEN, "no");
        assert_eq!(p.status(), StatusCode::FORBIDDEN);
        assert!(p.headers().get("grpc-status").is_none());
        assert_eq!(grpc_status(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_status(StatusCode::NOT_FOUND), 12);
        assert_eq!(grpc_status(StatusCode::IM_A_TEAPOT), 2);
    }
}
