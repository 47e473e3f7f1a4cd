//! The bridge against a real TLS server standing in for the control plane: it tells
//! each connection which client certificate it saw, then echoes.

use super::*;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIFETIME: Duration = Duration::from_secs(3600);

struct Mesh {
    ca: ca::Authority,
    dir: tempfile::TempDir,
}

impl Mesh {
    fn new() -> Mesh {
        let ca = ca::Authority::generate_root("cluster.local", SystemTime::now()).expect("root");
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mesh { ca, dir };
        m.renew();
        m
    }

    fn creds(&self) -> PathBuf {
        self.dir.path().join("creds")
    }

    /// Installs a new certificate for default/app.
    fn renew(&self) {
        let id = ca::SpiffeId::new("cluster.local", "default", "app").expect("id");
        let cert = self
            .ca
            .issue(&id, LIFETIME, SystemTime::now())
            .expect("issue");
        files::install(
            &self.creds(),
            &files::Credentials {
                chain_pem: &cert.cert_chain_pem,
                key_pem: cert.private_key_pem(),
                bundle_pem: &self.ca.trust_bundle_pem(),
            },
        )
        .expect("install");
    }

    /// A TLS server on loopback presenting `server_id`, requiring a client certificate
    /// from the mesh: it writes the client's leaf (hex, one line), then echoes.
    async fn control_plane(&self, server_id: &str) -> std::net::SocketAddr {
        self.server(&self.ca, server_id, "127.0.0.1").await
    }

    /// Like [`Mesh::control_plane`], its certificate from `issuer` for `server_id` and
    /// the address SAN `san`.
    async fn server(
        &self,
        issuer: &ca::Authority,
        server_id: &str,
        san: &str,
    ) -> std::net::SocketAddr {
        let (ns, sa) = server_id
            .trim_start_matches("spiffe://cluster.local/ns/")
            .split_once("/sa/")
            .expect("id");
        let id = ca::SpiffeId::new("cluster.local", ns, sa).expect("id");
        let cert = issuer
            .issue_server(&id, &[san.into()], LIFETIME, SystemTime::now())
            .expect("server cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca.trust_bundle_pem().as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(cert.private_key_pem().as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let leaf = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| hex(c.as_ref()))
                        .unwrap_or_default();
                    let _ = tls.write_all(format!("{leaf}\n").as_bytes()).await;
                    let (mut r, mut w) = tokio::io::split(tls);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// The upstream for a server at `addr` expected to be `id`.
    fn upstream(&self, addr: std::net::SocketAddr, id: &str) -> Upstream {
        Upstream {
            dir: self.creds(),
            host: addr.ip().to_string(),
            port: addr.port(),
            server_id: id.into(),
        }
    }

    /// A bridge on its socket in the credential directory to `addr`, expecting `id`.
    fn bridge(&self, addr: std::net::SocketAddr, id: &str, limits: Limits) -> PathBuf {
        let listener = bind(&self.creds()).expect("bind");
        tokio::spawn(serve(listener, Arc::new(self.upstream(addr, id)), limits));
        socket(&self.creds())
    }

    /// The leaf certificate installed now (hex).
    fn installed_leaf(&self) -> String {
        let (chain, _, _) = files::read(&self.creds()).expect("creds");
        let der = CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .expect("leaf")
            .expect("pem");
        hex(der.as_ref())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const CP: &str = "spiffe://cluster.local/ns/rudder-system/sa/rudder";

/// Reads one line from the bridge (empty if it closed first).
async fn first_line(s: &mut tokio::net::UnixStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = s.read(&mut byte).await {
        if byte[0] == b'\n' {
            break;
        }
        out.push(byte[0]);
    }
    String::from_utf8(out).expect("utf8")
}

/// Connects to the bridge and sends the HTTP/2 preface; returns the stream and the
/// first line the control plane answered (empty: closed without forwarding). A
/// forwarded connection's preface is echoed back after the line.
async fn open(path: &Path) -> (tokio::net::UnixStream, String) {
    let mut s = tokio::net::UnixStream::connect(path)
        .await
        .expect("connect");
    s.write_all(PREFACE).await.expect("preface");
    let line = tokio::time::timeout(Duration::from_secs(20), first_line(&mut s))
        .await
        .expect("an answer or a close within 20 s");
    if !line.is_empty() {
        let mut echo = [0u8; 24];
        s.read_exact(&mut echo).await.expect("preface echo");
        assert_eq!(&echo, PREFACE, "the preface reached the control plane");
    }
    (s, line)
}

/// Whether the bridge closes `s` within 20 s (reads give EOF or an error).
async fn closed(s: &mut tokio::net::UnixStream) -> bool {
    let mut buf = [0u8; 64];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    ended.await.is_ok()
}

#[tokio::test]
async fn forwards_bytes_over_mtls_with_the_current_certificate() {
    let mesh = Mesh::new();
    let addr = mesh.control_plane(CP).await;
    let path = mesh.bridge(addr, CP, Limits::default());
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the socket is the agent's user's only");
    let private = path.parent().expect("dir");
    assert_eq!(private, mesh.creds().join(".agent"));
    assert_eq!(mode(private), 0o700);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!(std::fs::metadata(private).expect("meta").uid(), me);

    let first = mesh.installed_leaf();
    let (mut s, line) = open(&path).await;
    assert_eq!(line, first, "the workload certificate is presented");
    s.write_all(b"hello").await.expect("write");
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"hello");

    // Renewed on disk: the next connection presents the new certificate, the open one
    // goes on.
    mesh.renew();
    let renewed = mesh.installed_leaf();
    assert_ne!(renewed, first);
    let (_s2, line) = open(&path).await;
    assert_eq!(line, renewed);
    s.write_all(b"still").await.expect("write");
    let mut still = [0u8; 5];
    s.read_exact(&mut still).await.expect("echo");
    assert_eq!(&still, b"still");
}

#[tokio::test]
async fn only_the_control_planes_identity_from_the_mesh_ca_at_the_dialled_address_is_trusted() {
    let mesh = Mesh::new();
    // The positive case, in the same setup: the mesh CA, the control plane's ID, the
    // dialled address; keepalive on the TCP connection.
    let good = mesh.server(&mesh.ca, CP, "127.0.0.1").await;
    let tls = connect(&mesh.upstream(good, CP))
        .await
        .expect("the control plane");
    let tcp = socket2::SockRef::from(tls.get_ref().0);
    assert!(tcp.keepalive().expect("keepalive"), "TCP keepalive is on");
    assert_eq!(tcp.tcp_keepalive_time().expect("idle"), KEEPALIVE.0);

    let refused = |what: &'static str, addr, want: &'static [&'static str]| {
        let up = mesh.upstream(addr, CP);
        async move {
            let Err(e) = connect(&up).await else {
                panic!("{what}: the connection was made");
            };
            let e = format!("{e:#}").to_lowercase();
            assert!(want.iter().any(|w| e.contains(w)), "{what}: {e}");
        }
    };
    // Another workload's ID from the mesh CA.
    let impostor = mesh
        .server(
            &mesh.ca,
            "spiffe://cluster.local/ns/default/sa/impostor",
            "127.0.0.1",
        )
        .await;
    refused("another identity", impostor, &["does not name"]).await;
    // The right SPIFFE ID from a foreign CA (named like the mesh's: its signature does
    // not verify against the mesh's root).
    let foreign = ca::Authority::generate_root("cluster.local", SystemTime::now()).expect("root");
    let forged = mesh.server(&foreign, CP, "127.0.0.1").await;
    refused(
        "a foreign CA",
        forged,
        &["unknownissuer", "unknown issuer", "badsignature"],
    )
    .await;
    // The right ID from the mesh CA, for another address.
    let elsewhere = mesh.server(&mesh.ca, CP, "10.9.8.7").await;
    refused(
        "a wrong address SAN",
        elsewhere,
        &["notvalidforname", "not valid for name"],
    )
    .await;
    // Through the bridge, a refusal closes the app's connection.
    let path = mesh.bridge(impostor, CP, Limits::default());
    let (_s, line) = open(&path).await;
    assert_eq!(line, "", "the bridge must close, not forward");
}

#[tokio::test]
async fn a_connection_without_the_http2_preface_is_closed_before_dialling() {
    let mesh = Mesh::new();
    let addr = mesh.control_plane(CP).await;
    let limits = Limits {
        preface: Duration::from_millis(300),
        ..Limits::default()
    };
    let path = mesh.bridge(addr, CP, limits);
    let mut silent = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    assert!(closed(&mut silent).await, "a silent connection is closed");
    let mut wrong = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    wrong
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), wrong.read_to_end(&mut buf)).await;
    assert!(buf.is_empty(), "nothing forwarded: {buf:?}");
    // A well-behaved one still gets through.
    let (_s, line) = open(&path).await;
    assert_eq!(line, mesh.installed_leaf());
}

#[tokio::test]
async fn when_full_the_oldest_silent_connection_makes_room_and_forwarding_ones_stay() {
    let mesh = Mesh::new();
    let addr = mesh.control_plane(CP).await;
    let limits = Limits {
        connections: 2,
        preface: Duration::from_secs(600),
        ..Limits::default()
    };
    let path = mesh.bridge(addr, CP, limits);
    let connect = || tokio::net::UnixStream::connect(&path);
    let mut a = connect().await.expect("a");
    let mut b = connect().await.expect("b");
    // Both slots taken by connections that never speak: a new one evicts the oldest.
    let (mut c, line) = open(&path).await;
    assert!(!line.is_empty(), "the third is forwarded");
    assert!(closed(&mut a).await, "the oldest silent one was closed");
    let (_d, line) = open(&path).await;
    assert!(!line.is_empty(), "the fourth is forwarded");
    assert!(closed(&mut b).await, "the other silent one was closed");
    // Both slots forwarding: the next is refused, the open ones go on.
    let (_e, line) = open(&path).await;
    assert_eq!(line, "", "over the limit with every slot forwarding");
    c.write_all(b"alive").await.expect("write");
    let mut echo = [0u8; 5];
    c.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"alive");
    // Once one goes, there is room again (within a deadline).
    drop(c);
    let again = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (s, line) = open(&path).await;
            if !line.is_empty() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(again.is_ok(), "a freed slot is used again");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_file_in_its_place_refused() {
    let mesh = Mesh::new();
    let addr = mesh.control_plane(CP).await;
    // An earlier run's socket, its listener gone.
    drop(bind(&mesh.creds()).expect("first bind"));
    let path = mesh.bridge(addr, CP, Limits::default());
    let (_s, line) = open(&path).await;
    assert_eq!(line, mesh.installed_leaf(), "the new socket serves");
    // Something else at the path: refused, left alone.
    let other = tempfile::tempdir().expect("tempdir");
    let private = other.path().join(".agent");
    std::fs::create_dir(&private).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(socket(other.path()), "not a socket").expect("write");
    let e = format!("{:#}", bind(other.path()).expect_err("refused"));
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(
        std::fs::read_to_string(socket(other.path())).expect("read"),
        "not a socket"
    );
}

#[test]
fn the_control_planes_id_must_be_a_uri_san() {
    let ca = ca::Authority::generate_root("cluster.local", SystemTime::now()).expect("root");
    let id = ca::SpiffeId::new("cluster.local", "rudder-system", "rudder").expect("id");
    let cert = ca
        .issue_server(&id, &["localhost".into()], LIFETIME, SystemTime::now())
        .expect("cert");
    let der = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .next()
        .expect("leaf")
        .expect("pem");
    assert!(names_uri(der.as_ref(), CP));
    assert!(!names_uri(
        der.as_ref(),
        "spiffe://cluster.local/ns/default/sa/app"
    ));
    assert!(!names_uri(b"not a certificate", CP));
}
