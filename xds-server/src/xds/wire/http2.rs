//! The xDS port's HTTP/2 server: hyper serving the gRPC routes (ADS, CSDS) on the
//! connections the front door accepted ([`crate::net::front_door`]), with every buffer a
//! peer can fill bounded: one receive window per connection ([`RECEIVE_WINDOW`], charged
//! with the connection), the frame being read ([`MAX_FRAME`], likewise), a send buffer
//! per stream ([`SEND_BUFFER`], charged with the stream) and header lists. tonic's own
//! server leaves hyper's send buffer at 400 KB per stream, which a peer that stops
//! reading could fill on every stream.
//!
//! Each connection is charged to its peer's identity before it is served (a connection
//! the identity's allowance or the budget cannot take is refused like one over a limit),
//! and each request carries its connection's
//! [`ConnInfo`](crate::net::front_door::ConnInfo): who the peer is, its account. On
//! shutdown the server stops accepting and asks every connection to close gracefully; a
//! connection past its maximum age is asked the same way.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::transport::server::Connected;

use super::budget::{
    Budget, CONNECTION_BYTES, Charge, ConnAccount, HTTP2_HELD, MAX_FRAME, MAX_HEADER_LIST,
    RECEIVE_WINDOW, SEND_BUFFER,
};
use crate::log_limit::RateLimited;
use crate::net::front_door::Conn;
use crate::observability::metrics::Metrics;
use crate::runtime::Stop;

/// Refused connections are logged at most once a second.
static REFUSED_LOG: RateLimited = RateLimited::new();

/// After a connection's maximum age: how long its streams have to finish after GOAWAY
/// before the connection is closed under them.
const AGE_GRACE: Duration = Duration::from_secs(10);

/// HTTP/2 settings beyond the bounded buffers.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Streams open at once on one connection (a backstop; ADS refuses past its own
    /// limit with a status).
    pub max_streams: u32,
    /// PING interval on an idle connection.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// What connections are charged to, and where refusals are counted.
#[derive(Clone)]
pub struct Charging {
    /// The budget.
    pub budget: Arc<Budget>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Charges a connection to its peer's account: its identity's SPIFFE ID, or for a
/// plain-text peer (no identity) its address. Over the allowance or the budget, the
/// connection is refused.
fn charge(conn: Conn, to: &Charging, settings: &Settings) -> Conn {
    let info = conn.connect_info();
    if info.refused.is_some() {
        return conn;
    }
    let account = match &info.identity {
        Some(id) => to.budget.account(
            &id.to_string(),
            Some(format!("{}/{}", id.namespace, id.service_account)),
        ),
        None => {
            let ip = info.remote.map(|r| r.ip().to_string()).unwrap_or_default();
            to.budget.account(&format!("unverified {ip}"), None)
        }
    };
    let mut charge = Charge::new(account.clone());
    match charge.resize(CONNECTION_BYTES) {
        Ok(()) => {
            // Each HTTP/2 stream slot may be left holding a finished stream's responses.
            let slots = usize::try_from(settings.max_streams).unwrap_or(usize::MAX);
            let conn_account = ConnAccount::new(account, slots.saturating_mul(HTTP2_HELD));
            conn.charged(conn_account, charge)
        }
        Err(e) => {
            to.metrics.refused(e.limit());
            if let Some(suppressed) = REFUSED_LOG.allow() {
                tracing::warn!(
                    peer = ?info.remote,
                    identity = e.identity(),
                    error = %e,
                    suppressed,
                    "refused an xDS connection: over the memory budget"
                );
            }
            conn.refuse(e.to_string())
        }
    }
}

/// Serves `routes` on every connection from `incoming`, charged to `charging`, until
/// `stop` fires, then waits for the connections to close.
pub async fn serve<S>(
    incoming: impl Stream<Item = Result<Conn, std::io::Error>>,
    routes: S,
    settings: Settings,
    charging: Charging,
    stop: Stop,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_connection_window_size(RECEIVE_WINDOW)
        .initial_stream_window_size(RECEIVE_WINDOW)
        .max_send_buf_size(SEND_BUFFER)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(settings.max_streams)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout);
    let mut conns = tokio::task::JoinSet::new();
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    tokio::pin!(incoming);
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(conn)) => {
                    let conn = charge(conn, &charging, &settings);
                    conns.spawn(serve_one(conn, routes.clone(), builder.clone(), stop.clone()));
                }
                Some(Err(e)) => tracing::debug!(error = %e, "accepting an xDS connection"),
                None => break,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut stopped => break,
        }
    }
    while conns.join_next().await.is_some() {}
}

async fn serve_one<S>(
    conn: Conn,
    routes: S,
    builder: hyper::server::conn::http2::Builder<TokioExecutor>,
    stop: Stop,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let info = conn.connect_info();
    let max_age_at = info.max_age_at;
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(info.clone());
        routes.clone().call(req)
    });
    let connection = builder.serve_connection(TokioIo::new(conn), service);
    tokio::pin!(connection);
    let aged = async move {
        match max_age_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = stop.stopped() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        () = aged => {
            // GOAWAY: the peer opens its next stream on a new connection (perhaps to
            // another replica); ADS streams here end just after (`ads`), and whatever is
            // still open after the grace is cut.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(AGE_GRACE, connection.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "xDS connection ended");
    }
}
