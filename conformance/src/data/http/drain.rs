//! How an HTTP connection winds down once its filter chain drains (see
//! `data::drain::Drain`), as Envoy's connection manager does: an HTTP/1 response sent while
//! draining carries `connection: close` and the connection closes after it; an HTTP/2
//! connection gets GOAWAY (its streams in flight finish, the client opens a new
//! connection for new requests). Either counts `http.PREFIX.downstream_cx_drain_close`
//! once. What is still open at the drain's deadline is closed by the listener.
//!
//! Per request, the only cost while not draining is one atomic load (the drain flag)
//! and, for HTTP/2, one relaxed store noting the protocol.

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Response, StatusCode, Version};
use tokio::sync::Notify;

use crate::data::ctx::Ctx;
use crate::data::upstream::io::Body;

/// What a connection's requests tell its task about draining.
#[derive(Debug, Default)]
pub(super) struct Winding {
    /// A request came over HTTP/2.
    h2: AtomicBool,
    /// An HTTP/2 request saw the drain: the connection should send GOAWAY.
    goaway: Notify,
    /// `downstream_cx_drain_close` was counted.
    counted: AtomicBool,
}

impl Winding {
    /// Notes the protocol of a request.
    pub(super) fn note(&self, version: Version) {
        if version == Version::HTTP_2 && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the connection is HTTP/2 (as far as its requests showed).
    pub(super) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Waits until a request asks for GOAWAY.
    pub(super) async fn goaway_asked(&self) {
        self.goaway.notified().await;
    }

    /// Counts the connection's drain close once.
    pub(super) fn count(&self, ctx: &Ctx, prefix: &str) {
        if !self.counted.swap(true, Ordering::Relaxed) {
            ctx.stats
                .counter(&format!("http.{prefix}.downstream_cx_drain_close"))
                .inc();
        }
    }

    /// Adjusts `resp` (to a request of `version`) on a draining connection: HTTP/1
    /// closes after it; HTTP/2 asks the connection for GOAWAY. A CONNECT tunnel's 200
    /// is left alone (the tunnel ends at the deadline).
    pub(super) fn on_response(
        &self,
        ctx: &Ctx,
        prefix: &str,
        version: Version,
        tunnel: bool,
        resp: &mut Response<Body>,
    ) {
        if version == Version::HTTP_2 {
            self.goaway.notify_one();
            return;
        }
        if version >= Version::HTTP_2
            || (tunnel && resp.status() == StatusCode::OK)
            || resp.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            return;
        }
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        self.count(ctx, prefix);
    }
}
