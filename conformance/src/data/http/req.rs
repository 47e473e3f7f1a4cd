//! What a request's handlers share: the request's context (`Req`), responses made by
//! the proxy itself (`local`), and an upstream body as the proxy's body type (`boxed`).

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

/// An upstream response's body as the proxy's body type.
pub(crate) fn boxed(b: Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed()
}
