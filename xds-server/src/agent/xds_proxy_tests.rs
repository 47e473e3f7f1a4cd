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
        let (ns, sa) = server_id
            .trim_start_matches("spiffe://cluster.local/ns/")
            .split_once("/sa/")
            .expect("id");
        let id = ca::SpiffeId::new("cluster.local", ns, sa).expect("id");
        let cert = self
            .ca
            .issue_server(&id, &["127.0.0.1".into()], LIFETIME, SystemTime::now())
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

    /// A bridge on a socket in the credential directory to `addr`, expecting `id`.
    fn bridge(&self, addr: std::net::SocketAddr, id: &str, limit: usize) -> PathBuf {
        let path = socket(&self.creds());
        let listener = bind(&path).expect("bind");
        let up = Upstream {
            dir: self.creds(),
            host: addr.ip().to_string(),
            port: addr.port(),
            server_id: id.into(),
        };
        tokio::spawn(serve(listener, Arc::new(up), limit));
        path
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

#[tokio::test]
async fn forwards_bytes_over_mtls_with_the_current_certificate() {
    let mesh = Mesh::new();
    let addr = mesh.control_plane(CP).await;
    let path = mesh.bridge(addr, CP, MAX_CONNECTIONS);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the socket is the pod user's only: {mode:o}"
    );

    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let first = mesh.installed_leaf();
    assert_eq!(
        first_line(&mut s).await,
        first,
        "the workload certificate is presented"
    );
    s.write_all(b"PRI * HTTP/2.0").await.expect("write");
    let mut echo = [0u8; 14];
    s.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"PRI * HTTP/2.0");

    // Renewed on disk: the next connection presents the new certificate, the open one
    // goes on.
    mesh.renew();
    let renewed = mesh.installed_leaf();
    assert_ne!(renewed, first);
    let mut s2 = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    assert_eq!(first_line(&mut s2).await, renewed);
    s.write_all(b"still").await.expect("write");
    let mut still = [0u8; 5];
    s.read_exact(&mut still).await.expect("echo");
    assert_eq!(&still, b"still");
}

#[tokio::test]
async fn a_server_without_the_control_planes_identity_is_refused() {
    let mesh = Mesh::new();
    let addr = mesh
        .control_plane("spiffe://cluster.local/ns/default/sa/impostor")
        .await;
    let path = mesh.bridge(addr, CP, MAX_CONNECTIONS);
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    assert_eq!(
        first_line(&mut s).await,
        "",
        "the bridge must close, not forward"
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let mesh = Mesh::new();
    let addr = mesh.control_plane(CP).await;
    let path = mesh.bridge(addr, CP, 1);
    let mut held = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    assert!(
        !first_line(&mut held).await.is_empty(),
        "the first is forwarded"
    );
    let mut over = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    assert_eq!(first_line(&mut over).await, "", "the second is closed");
    // Once the first goes, there is room again.
    drop(held);
    let mut again = None;
    for _ in 0..100 {
        let mut s = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
        if !first_line(&mut s).await.is_empty() {
            again = Some(s);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(again.is_some(), "a freed slot is used again");
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
