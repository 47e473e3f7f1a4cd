//! Shared helpers of the listener, TLS and RBAC tests: a context with `listen::run`
//! going, snapshots, STATIC clusters to TCP echo and HTTP upstreams, certificates from
//! Rudder's CA and mutual-TLS clients holding them.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use conformance::config::Snapshot;
use conformance::config::cluster::UpstreamTls;
use conformance::config::cluster::{
    Cluster, Discovery, Endpoint, LbPolicy, LoadAssignment, Locality, Transport, UpstreamProtocol,
};
use conformance::config::listener::{
    ChainMatch, DownstreamTls, FilterChain, ForwardClientCert, HttpFilter, HttpManager, Listener,
    RouteSource, SecretRef, SecretSource, StringMatch, TcpProxy, Terminal, Validation,
};
use conformance::config::route::{
    Action, Destination, HeaderEdits, PathMatch, Route, RouteAction, RouteConfig, RouteMatch,
    VirtualHost,
};
use conformance::config::secret::{CertifiedKey, Secret, TrustBundle};
use conformance::data::Ctx;
use conformance::data::tls::TlsCache;
use conformance::live::Live;
use conformance::stats::Stats;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// A proxy context with the listener manager running.
pub struct Proxy {
    pub ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// Where `tcp_proxy` clusters the snapshot lacks go, if set.
    upstream: Mutex<Option<SocketAddr>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let ctx = Ctx::new(Arc::new(Live::default()), Arc::new(Stats::default()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(conformance::data::listen::run(ctx.clone(), stopped));
        Proxy {
            ctx,
            stop,
            task: Some(task),
            upstream: Mutex::new(None),
        }
    }

    /// Publishes the current snapshot changed by `f`.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.ctx.live.update(|s| {
            let mut next = s.clone();
            f(&mut next);
            next
        });
    }

    pub fn set_listeners(&self, listeners: Vec<Listener>) {
        let upstream = *self.upstream.lock();
        self.update(|s| {
            if let Some(addr) = upstream {
                let mut m = (*s.clusters).clone();
                for name in listeners.iter().flat_map(tcp_clusters) {
                    m.entry(name.clone())
                        .or_insert_with(|| Arc::new(static_cluster(&name, addr)));
                }
                s.clusters = Arc::new(m);
            }
            s.listeners = Arc::new(
                listeners
                    .into_iter()
                    .map(|l| (l.name.clone(), Arc::new(l)))
                    .collect(),
            )
        });
    }

    /// From now on, every `tcp_proxy` cluster the listeners name that the snapshot
    /// lacks is published as a STATIC cluster of `upstream` (with the listeners).
    pub fn route_tcp_to(&self, upstream: SocketAddr) {
        *self.upstream.lock() = Some(upstream);
    }

    /// Publishes `cluster` (replacing one of its name).
    pub fn add_cluster(&self, cluster: Cluster) {
        self.update(|s| {
            let mut m = (*s.clusters).clone();
            m.insert(cluster.name.clone(), Arc::new(cluster));
            s.clusters = Arc::new(m);
        });
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.ctx.stats.counter(name).get()
    }

    pub fn gauge(&self, name: &str) -> i64 {
        self.ctx.stats.gauge(name).get()
    }

    /// Waits until the listener manager has applied the latest publication.
    pub async fn settled(&self) {
        let version = self.ctx.live.version();
        self.ctx
            .live
            .binds_after(version, WAIT)
            .await
            .expect("the listener manager applies the publication");
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("listen::run ends on stop")
                .expect("test setup");
        }
    }
}

/// A free loopback address (bound and released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
    l.local_addr().expect("test setup")
}

/// The clusters of the `tcp_proxy` chains of `l`.
fn tcp_clusters(l: &Listener) -> Vec<String> {
    l.chains
        .iter()
        .chain(&l.default_chain)
        .filter_map(|c| match &c.terminal {
            Terminal::Tcp(t) => Some(t.cluster.clone()),
            Terminal::Http(_) => None,
        })
        .collect()
}

/// A STATIC plain-text cluster of one endpoint.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: Discovery::Static(LoadAssignment {
            name: name.into(),
            localities: vec![Locality {
                weight: 1,
                endpoints: vec![Endpoint {
                    address: addr,
                    healthy: true,
                    weight: 1,
                    transport_match: vec![],
                }],
                ..Default::default()
            }],
        }),
        lb: LbPolicy::RoundRobin,
        connect_timeout: Duration::from_secs(2),
        transport: Transport::Plain,
        transport_matches: vec![],
        protocol: UpstreamProtocol::Http1,
        retry_budget: None,
        max_requests_per_connection: None,
        source: Vec::new(),
    }
}

/// A TCP echo server: echoes until EOF, then closes its write side.
pub async fn echo_server() -> SocketAddr {
    greeter("").await
}

/// A TCP server that first writes `line` and a newline (nothing when empty), then
/// echoes until EOF and closes its write side.
pub async fn greeter(line: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr = l.local_addr().expect("test setup");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if !line.is_empty() && w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

pub fn tcp_chain(name: &str, tls: Option<DownstreamTls>) -> FilterChain {
    FilterChain {
        name: name.into(),
        matcher: ChainMatch::default(),
        tls,
        filters: Vec::new(),
        terminal: Terminal::Tcp(TcpProxy {
            stat_prefix: name.into(),
            cluster: format!("cluster-{name}"),
            idle_timeout: None,
        }),
    }
}

pub fn tcp_listener(name: &str, address: SocketAddr) -> Listener {
    Listener {
        name: name.into(),
        address,
        original_dst: false,
        tls_inspector: false,
        chains: vec![tcp_chain(name, None)],
        default_chain: None,
    }
}

/// An HTTP connection manager routing every request to `cluster`.
pub fn http_manager(cluster: &str, forward_client_cert: ForwardClientCert) -> HttpManager {
    let action = RouteAction {
        destination: Destination::Cluster(cluster.into()),
        timeout: None,
        retry: None,
        mirrors: vec![],
        rewrite: None,
        host_rewrite: None,
        max_stream_duration: None,
        connect: false,
        cluster_not_found_status: 503,
    };
    let route = Route {
        name: String::new(),
        matcher: RouteMatch {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query: vec![],
            connect: false,
        },
        action: Action::Route(Arc::new(action)),
        headers: HeaderEdits::default(),
    };
    HttpManager {
        stat_prefix: "inbound".into(),
        routes: RouteSource::Inline(Arc::new(RouteConfig {
            name: "inbound".into(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![route],
                headers: HeaderEdits::default(),
                retry: None,
            }],
        })),
        connect: false,
        forward_client_cert,
        filters: vec![HttpFilter::Router],
        max_request_headers_bytes: 60 * 1024,
        idle_timeout: None,
        path: Default::default(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Connects as soon as `addr` accepts (the manager binds asynchronously).
pub async fn connect_when_up(addr: SocketAddr) -> TcpStream {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        assert!(tokio::time::Instant::now() < until, "{addr} never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `addr` refuses connections.
pub async fn wait_refused(addr: SocketAddr) {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "{addr} still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `msg` and reads back as many bytes.
pub async fn roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    s.flush().await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo"))??;
    Ok(back)
}

/// Reads until the peer closes (EOF or reset), within `WAIT`; panics if it stays open.
pub async fn assert_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => panic!("the connection stayed open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// A CA of a trust domain issuing workload certificates.
pub struct Pki {
    pub ca: ca::Authority,
}

impl Pki {
    pub fn new(trust_domain: &str) -> Pki {
        Pki {
            ca: ca::Authority::generate_root(trust_domain, SystemTime::now()).expect("test setup"),
        }
    }

    pub fn spiffe(&self, ns: &str, sa: &str) -> String {
        format!("spiffe://{}/ns/{ns}/sa/{sa}", self.ca.trust_domain())
    }

    pub fn issue(&self, ns: &str, sa: &str) -> CertifiedKey {
        let id = ca::SpiffeId::new(self.ca.trust_domain(), ns, sa).expect("test setup");
        let cert = self
            .ca
            .issue(&id, Duration::from_secs(3600), SystemTime::now())
            .expect("test setup");
        let chain = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
            .map(|c| c.expect("test setup").to_vec())
            .collect();
        let key =
            PrivateKeyDer::from_pem_slice(cert.private_key_pem().as_bytes()).expect("test setup");
        CertifiedKey {
            chain,
            key: key.secret_der().to_vec(),
            uris: vec![id.to_string()],
        }
    }

    pub fn bundle(&self) -> TrustBundle {
        TrustBundle {
            anchors: CertificateDer::pem_slice_iter(self.ca.trust_bundle_pem().as_bytes())
                .map(|c| c.expect("test setup").to_vec())
                .collect(),
        }
    }
}

pub fn ads(name: &str) -> SecretRef {
    SecretRef {
        name: name.into(),
        source: SecretSource::Ads,
    }
}

/// Rudder's inbound TLS: certificate `default`, clients checked against `ROOTCA`.
pub fn downstream_tls(require: bool, sans: Vec<StringMatch>) -> DownstreamTls {
    DownstreamTls {
        certificate: ads("default"),
        validation: Some(Validation {
            trust: ads("ROOTCA"),
            uri_sans: sans,
        }),
        require_client_certificate: require,
        alpn: vec![],
    }
}

/// Secrets map with `default` and `ROOTCA`.
pub fn secrets(cert: CertifiedKey, bundle: TrustBundle) -> BTreeMap<String, Arc<Secret>> {
    BTreeMap::from([
        (
            "default".to_string(),
            Arc::new(Secret::Certificate(Arc::new(cert))),
        ),
        (
            "ROOTCA".to_string(),
            Arc::new(Secret::Bundle(Arc::new(bundle))),
        ),
    ])
}

/// A client holding `cert` (if any) that trusts `bundle` and wants the server's SAN
/// to start with `spiffe://`.
pub fn client(cert: Option<CertifiedKey>, bundle: TrustBundle) -> Arc<rustls::ClientConfig> {
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert(
        "ROOTCA".to_string(),
        Arc::new(Secret::Bundle(Arc::new(bundle))),
    );
    if let Some(c) = cert {
        secrets.insert(
            "default".to_string(),
            Arc::new(Secret::Certificate(Arc::new(c))),
        );
    }
    let has_cert = secrets.contains_key("default");
    let snap = Snapshot {
        secrets: Arc::new(secrets),
        ..Default::default()
    };
    TlsCache::default()
        .client_config(
            &snap,
            &UpstreamTls {
                certificate: has_cert.then(|| ads("default")),
                validation: Validation {
                    trust: ads("ROOTCA"),
                    uri_sans: vec![StringMatch::Prefix("spiffe://".into(), false)],
                },
                sni: None,
                alpn: vec![],
            },
        )
        .expect("test setup")
}

pub async fn dial(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = connect_when_up(addr).await;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// An HTTP/1.1 upstream answering every request with its request head as the body.
pub async fn head_echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr = l.local_addr().expect("test setup");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push_str(&line),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
