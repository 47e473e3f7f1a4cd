//! The front door of the xDS port and of every HTTP shell. It accepts TCP, enforces the
//! connection limits, runs the TLS handshake under a timeout, verifies the client
//! certificate against the CA that issues workload certificates (never a sibling under
//! the same root), and hands tonic connections that carry who the peer is
//! ([`ConnInfo`]): the verified SPIFFE ID is a stream's identity, nothing the peer
//! claims later.
//!
//! A connection over a limit is not silently dropped while there is room in a small
//! overflow lane: it completes its handshake, every RPC on it is refused with
//! `RESOURCE_EXHAUSTED` naming the limit, and it is closed shortly after. Past that lane,
//! connections are closed at once. Every refusal is counted and logged (rate-limited).
//! The xDS port's HTTP/2 server also refuses this way a connection its peer's memory
//! budget cannot take ([`Conn::refuse`], [`crate::xds::wire::budget`]).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::Duration;

use ca::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use crate::config::ConnLimits;
use crate::log_limit::RateLimited;
use crate::observability::metrics::Metrics;
use crate::runtime::Stop;
use crate::xds::wire::budget::{Charge, ConnAccount};

mod tls;

use tls::{HANDSHAKE_LOG, not_after, verified_identity};
pub use tls::{ServingKey, ServingTls, TlsSetup};

/// Connections over a limit that are still answered with a gRPC status.
/// Listen backlog: deep enough for a fleet reconnecting at once (the kernel caps it at
/// `net.core.somaxconn`). The 128 a plain bind gets overflows when a thousand sidecars
/// reconnect after a control-plane restart, and the overflow costs them resets and
/// second-long SYN retries.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening TCP socket with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

const OVERFLOW_LANE: usize = 16;
/// How long an over-limit connection stays open to say why.
const OVERFLOW_LINGER: Duration = Duration::from_secs(2);

/// What a connection is, as the gRPC services see it (a request extension).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The SPIFFE ID in the peer's verified client certificate (None in plain text).
    pub identity: Option<SpiffeId>,
    /// When the peer's certificate expires: its streams end then.
    pub not_after: Option<std::time::SystemTime>,
    /// ADS streams open on this connection.
    pub streams: Arc<AtomicUsize>,
    /// Set on a connection over a limit: every RPC is refused with this.
    pub refused: Option<Arc<str>>,
    /// The connection's standing with its identity's memory budget (xDS port only).
    pub account: Option<Arc<ConnAccount>>,
    /// When the connection reaches its maximum age ([`ConnLimits::max_age`], jittered):
    /// it is then asked to close (HTTP/2 GOAWAY) and its streams end soon after.
    pub max_age_at: Option<tokio::time::Instant>,
}

impl ConnInfo {
    /// The info of a request, if it came through [`incoming`].
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&ConnInfo> {
        Self::in_extensions(req.extensions())
    }

    /// The connection's info from a request's extensions.
    pub(crate) fn in_extensions(ext: &http::Extensions) -> Option<&ConnInfo> {
        ext.get::<ConnInfo>()
    }
}

/// Counts of open connections.
#[derive(Default)]
struct Counts {
    total: usize,
    overflow: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One counted connection; uncounted when dropped.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    peer: IpAddr,
    overflow: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        if self.overflow {
            c.overflow = c.overflow.saturating_sub(1);
            return;
        }
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_peer.remove(&self.peer);
            }
        }
    }
}

/// What [`admit`] decided.
enum Admission {
    /// Within the limits.
    Ok(Slot),
    /// Over a limit: answered with this reason, then closed.
    Refuse(Slot, String),
    /// Over a limit with the overflow lane full: closed at once.
    Drop(String),
}

/// The address a per-peer limit counts by: the IPv4 address, or the /64 an IPv6 address
/// is in (one host usually holds a whole /64).
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Raises the soft file-descriptor limit to the hard one and caps `max_connections` to
/// what fits, keeping a reserve for everything else the process opens.
pub(crate) fn fit_to_fd_limit(limits: &mut ConnLimits) {
    const RESERVE: u64 = 256;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        }
    }
    let usable = usize::try_from(rl.rlim_cur.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
    if limits.max_connections > usable {
        tracing::warn!(
            requested = limits.max_connections,
            file_descriptors = rl.rlim_cur,
            max_connections = usable,
            "--max-connections lowered to fit the file-descriptor limit"
        );
        limits.max_connections = usable.max(1);
    }
}

fn admit(counts: &Arc<Mutex<Counts>>, peer: IpAddr, limits: &ConnLimits) -> Admission {
    let peer = peer_key(peer);
    let mut c = counts.lock();
    let from_peer = c.per_peer.get(&peer).copied().unwrap_or(0);
    let over = if c.total >= limits.max_connections {
        Some(format!(
            "the control plane has {} connections open (--max-connections {})",
            c.total, limits.max_connections
        ))
    } else if from_peer >= limits.max_connections_per_peer {
        Some(format!(
            "{peer} has {from_peer} connections open (--max-connections-per-peer {}; proxies \
             that share an address, behind NAT or a node-level agent, need it raised: chart \
             value xds.maxConnectionsPerPeer)",
            limits.max_connections_per_peer
        ))
    } else {
        None
    };
    match over {
        None => {
            c.total += 1;
            *c.per_peer.entry(peer).or_insert(0) += 1;
            Admission::Ok(Slot {
                counts: counts.clone(),
                peer,
                overflow: false,
            })
        }
        Some(reason) if c.overflow < OVERFLOW_LANE => {
            c.overflow += 1;
            Admission::Refuse(
                Slot {
                    counts: counts.clone(),
                    peer,
                    overflow: true,
                },
                reason,
            )
        }
        Some(reason) => Admission::Drop(reason),
    }
}

static REFUSED_LOG: RateLimited = RateLimited::new();

/// `age` give or take a tenth, at random: connections opened together (after a replica
/// restarted) do not all reconnect at once.
fn jittered(age: Duration) -> Duration {
    age.mul_f64(rand::random_range(0.9..=1.1))
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    /// Closes an over-limit connection after it said why.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: Slot,
    /// What the connection is charged to its identity.
    _charge: Option<Charge>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl Conn {
    /// The connection holds `charge` on `account` while it is open.
    pub(crate) fn charged(mut self, account: Arc<ConnAccount>, charge: Charge) -> Self {
        self.info.account = Some(account);
        self._charge = Some(charge);
        self
    }

    /// Refuses every RPC on the connection with `reason` and closes it shortly after, as
    /// a connection over a limit.
    pub(crate) fn refuse(mut self, reason: String) -> Self {
        if self.info.refused.is_none() {
            self.info.refused = Some(Arc::from(reason));
            self.deadline = Some(Box::pin(tokio::time::sleep(OVERFLOW_LINGER)));
        }
        self
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Ok(())); // end of stream: the connection closes
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Sets TCP keepalive (and no-delay) on an accepted socket.
pub(crate) fn configure_socket(stream: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(idle) = keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 4).max(Duration::from_secs(1)))
            .with_retries(4);
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

/// Accepts connections on `listener` until `stop` fires; TLS with client certificates
/// when `tls` is given, plain text otherwise.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsSetup>>,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> impl futures::Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Conn>(64);
    tokio::spawn(accept_loop(listener, tls, limits, metrics, stop, tx));
    tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsSetup>>,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    stop: Stop,
    tx: mpsc::Sender<Conn>,
) {
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an xDS connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stopped => return, // drops the listener: no new connections
        };
        let (slot, refused) = match admit(&counts, remote.ip(), &limits) {
            Admission::Ok(slot) => (slot, None),
            Admission::Refuse(slot, reason) => {
                refused_log(remote, &reason, true);
                metrics.refused("connections");
                (slot, Some(Arc::<str>::from(reason)))
            }
            Admission::Drop(reason) => {
                refused_log(remote, &reason, false);
                metrics.refused("connections");
                continue;
            }
        };
        if let Err(e) = configure_socket(&stream, limits.keepalive) {
            tracing::debug!(peer = %remote, error = %e, "socket options");
        }
        let tls = tls.clone();
        let (tx, metrics, timeout) = (tx.clone(), metrics.clone(), limits.handshake_timeout);
        tokio::spawn(async move {
            let info = ConnInfo {
                remote: Some(remote),
                identity: None,
                not_after: None,
                streams: Arc::default(),
                refused: refused.clone(),
                account: None,
                max_age_at: limits
                    .max_age
                    .map(|age| tokio::time::Instant::now() + jittered(age)),
            };
            let deadline = refused
                .is_some()
                .then(|| Box::pin(tokio::time::sleep(OVERFLOW_LINGER)));
            let conn = match tls {
                None => Conn {
                    io: Io::Plain(stream),
                    info,
                    deadline,
                    _slot: slot,
                    _charge: None,
                },
                Some(tls) => {
                    let Some(conn) = handshake(stream, remote, &tls, &metrics, timeout).await
                    else {
                        return;
                    };
                    let leaf = conn.get_ref().1.peer_certificates().and_then(|c| c.first());
                    let identity = leaf.and_then(|c| verified_identity(c));
                    let not_after = leaf.and_then(|c| not_after(c));
                    Conn {
                        io: Io::Tls(Box::new(conn)),
                        info: ConnInfo {
                            identity,
                            not_after,
                            ..info
                        },
                        deadline,
                        _slot: slot,
                        _charge: None,
                    }
                }
            };
            let _ = tx.send(conn).await;
        });
    }
}

fn refused_log(remote: SocketAddr, reason: &str, answered: bool) {
    if let Some(suppressed) = REFUSED_LOG.allow() {
        tracing::warn!(
            peer = %remote,
            reason,
            answered_with_status = answered,
            suppressed,
            "refused an xDS connection: over a connection limit"
        );
    }
}

async fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    tls: &TlsSetup,
    metrics: &Arc<Metrics>,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let config = match tls.config(remote, metrics) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "building the TLS config");
            return None;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            // Certificate problems were logged by the verifier with what the peer claimed.
            let cert_problem = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if !cert_problem {
                metrics.handshake_failed("tls_error");
                if let Some(suppressed) = HANDSHAKE_LOG.allow() {
                    tracing::warn!(peer = %remote, error = %e, suppressed, "xDS TLS handshake failed");
                }
            }
            None
        }
        Err(_) => {
            metrics.handshake_failed("timeout");
            if let Some(suppressed) = HANDSHAKE_LOG.allow() {
                tracing::warn!(peer = %remote, timeout_ms = timeout.as_millis() as u64, suppressed, "xDS TLS handshake timed out; closing");
            }
            None
        }
    }
}

/// The SPIFFE ID of the peer's verified client certificate, from the connection.
pub(crate) fn peer_identity<T>(request: &tonic::Request<T>) -> Option<SpiffeId> {
    ConnInfo::of(request)?.identity.clone()
}

/// When a request is on a connection over a limit, the status that refuses it.
pub fn refusal<T>(req: &tonic::Request<T>) -> Option<tonic::Status> {
    refusal_in(req.extensions())
}

/// [`refusal`] from a request's extensions.
pub(crate) fn refusal_in(ext: &http::Extensions) -> Option<tonic::Status> {
    let reason = ConnInfo::in_extensions(ext)?.refused.as_ref()?;
    Some(tonic::Status::resource_exhausted(format!(
        "connection refused: {reason}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listen backlog the kernel gave a socket (`tcpi_sacked` of a listener).
    fn backlog(l: &TcpListener) -> u32 {
        use std::os::fd::AsRawFd;
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_INFO");
        info.tcpi_sacked
    }

    #[tokio::test]
    async fn the_listener_backlog_holds_a_fleet_reconnecting_at_once() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .expect("somaxconn")
            .trim()
            .parse()
            .expect("number");
        let l = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        assert_eq!(backlog(&l), LISTEN_BACKLOG.min(somaxconn));
        let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        assert!(
            backlog(&plain) < LISTEN_BACKLOG.min(somaxconn),
            "a plain bind's backlog ({}) is what this guards against",
            backlog(&plain)
        );
    }

    #[tokio::test]
    async fn accepted_sockets_get_tcp_keepalive() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        configure_socket(&server, Some(Duration::from_secs(60))).expect("configure");
        let sock = socket2::SockRef::from(&server);
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn admission_counts_per_peer_and_in_all_and_frees_on_drop() {
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let limits = ConnLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..ConnLimits::default()
        };
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = admit(&counts, a, &limits);
        let s2 = admit(&counts, a, &limits);
        assert!(matches!(s1, Admission::Ok(_)) && matches!(s2, Admission::Ok(_)));
        let Admission::Refuse(_, why) = admit(&counts, a, &limits) else {
            panic!("a third from one peer is refused")
        };
        assert!(why.contains("--max-connections-per-peer 2"), "{why}");
        assert!(
            why.contains("behind NAT") && why.contains("xds.maxConnectionsPerPeer"),
            "the refusal says when and how to raise it: {why}"
        );
        let s3 = admit(&counts, b, &limits);
        assert!(matches!(s3, Admission::Ok(_)));
        let Admission::Refuse(_, why) = admit(&counts, b, &limits) else {
            panic!("a fourth in all is refused")
        };
        assert!(why.contains("--max-connections 3"), "{why}");
        drop(s1);
        let s4 = admit(&counts, b, &limits);
        assert!(matches!(s4, Admission::Ok(_)), "a freed slot is reused");
        // The overflow lane is bounded too: past it, connections are dropped at once.
        let lane: Vec<Admission> = (0..OVERFLOW_LANE)
            .map(|_| admit(&counts, a, &limits))
            .collect();
        assert!(lane.iter().all(|x| matches!(x, Admission::Refuse(..))));
        assert!(matches!(admit(&counts, a, &limits), Admission::Drop(_)));
    }

    #[test]
    fn connection_ages_are_spread_over_a_tenth_either_side() {
        let age = Duration::from_secs(1000);
        let ages: Vec<Duration> = (0..200).map(|_| jittered(age)).collect();
        assert!(ages.iter().all(|a| (900..=1100).contains(&a.as_secs())));
        let (lo, hi) = (ages.iter().min(), ages.iter().max());
        assert!(
            hi.zip(lo)
                .is_some_and(|(h, l)| *h - *l > Duration::from_secs(100)),
            "spread, not one value: {lo:?}..{hi:?}"
        );
    }
}
