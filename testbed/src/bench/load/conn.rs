//! One generator connection: dialing (TCP, then TLS when configured), the HTTP/1.1 or
//! HTTP/2 handshake, sending one request and reading its answer to the end, and naming
//! each failure by its kind.

use std::error::Error as StdError;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A request body: the pre-built payload, shared by every request.
pub(crate) type ReqBody = Full<Bytes>;

/// Why a request did not count as ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The TCP connection could not be opened.
    Connect,
    /// The TLS handshake failed, or the peer sent a TLS alert (a client certificate
    /// refused under TLS 1.3 shows on the first read).
    Tls,
    /// An answer with a status other than 2xx.
    Status(u16),
    /// No whole answer within the timeout.
    Timeout,
    /// The connection or the stream was reset.
    Reset,
    /// The peer closed the connection before a whole answer.
    Closed,
    /// Any other HTTP-level error.
    Http,
}

impl Failure {
    /// The kind's name in the report (`status_503`, `timeout`, ...).
    pub(crate) fn kind(self) -> std::borrow::Cow<'static, str> {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Tls => "tls".into(),
            Failure::Status(code) => format!("status_{code}").into(),
            Failure::Timeout => "timeout".into(),
            Failure::Reset => "reset".into(),
            Failure::Closed => "closed".into(),
            Failure::Http => "http".into(),
        }
    }
}

/// How to reach the target: where to dial, whether to wrap in TLS, which HTTP version.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<(TlsConnector, ServerName<'static>)>,
    pub(crate) http2: bool,
}

/// A handle to send requests on one connection.
pub(crate) enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Sender {
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

impl Dialer {
    /// Opens a connection; its driver runs as a task on the current runtime.
    pub(crate) async fn dial(&self) -> Result<Sender, Failure> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| classify_io(&e).unwrap_or(Failure::Tls))?;
                self.handshake(tls).await
            }
        }
    }

    async fn handshake<S>(&self, io: S) -> Result<Sender, Failure>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io = TokioIo::new(io);
        if self.http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| classify(&e))?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(|e| classify(&e))?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }
}

/// Sends `req` and reads the answer's body to its end: the body's length when the
/// status is 2xx.
pub(crate) async fn send(sender: &mut Sender, req: Request<ReqBody>) -> Result<u64, Failure> {
    let resp = match sender {
        Sender::H1(s) => {
            s.ready().await.map_err(|e| classify(&e))?;
            s.send_request(req).await
        }
        Sender::H2(s) => s.send_request(req).await,
    }
    .map_err(|e| classify(&e))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut read = 0u64;
    // The body is read (and dropped) frame by frame even for a failure status, so an
    // HTTP/1.1 connection stays usable.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(&e))?;
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
        }
    }
    if status.is_success() {
        Ok(read)
    } else {
        Err(Failure::Status(status.as_u16()))
    }
}

/// Names a hyper error by what caused it.
fn classify(e: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if let Some(f) = h2.get_io().and_then(classify_io) {
                return f;
            }
            if h2.is_reset() || h2.is_go_away() {
                return Failure::Reset;
            }
        }
        if let Some(f) = err.downcast_ref::<std::io::Error>().and_then(classify_io) {
            return f;
        }
        if err.downcast_ref::<rustls::Error>().is_some() {
            return Failure::Tls;
        }
        source = err.source();
    }
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
        Failure::Closed
    } else {
        Failure::Http
    }
}

/// An I/O error's kind, when it says more than "some error": TLS (rustls wraps its
/// errors in `io::Error` of kind `InvalidData`, and h2 keeps only the kind and the
/// message; plain TCP does not produce that kind), reset or closed.
fn classify_io(io: &std::io::Error) -> Option<Failure> {
    use std::io::ErrorKind;
    if io
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
    {
        return Some(Failure::Tls);
    }
    match io.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Some(Failure::Reset)
        }
        ErrorKind::UnexpectedEof => Some(Failure::Closed),
        ErrorKind::InvalidData => Some(Failure::Tls),
        _ => None,
    }
}
