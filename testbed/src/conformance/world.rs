//! The world the suite runs in: the real control plane on a manifest directory, the
//! base's pods (an echo backend per app port and a real Envoy sidecar each) on their
//! loopback addresses, a test's routes written and removed, and requests sent from a
//! pod's sidecar (HTTP/1.1 in absolute form, gRPC over h2c) as its app would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::check::Observed;
use super::data::{Base, Request};
use crate::echo::{grpc_frame, grpc_message_text};
use crate::manifests::app_ip;
use crate::procs::{
    Backend, ControlPlane, DataPlane, PodPlacement, Sidecar, Stream, free_port, wait_until,
};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a response body read.
const MAX_BODY: usize = 256 * 1024;
/// A test's routes go to `routes-<ShortName>.yaml`.
const ROUTES_PREFIX: &str = "routes-";

/// A pod: its sidecar and its backends.
pub struct Pod {
    /// Its sidecar.
    pub envoy: Sidecar,
    _backends: Vec<Backend>,
    /// Its address.
    pub ip: std::net::IpAddr,
}

/// The running world.
pub struct World {
    /// Work directory (logs, certificates, manifests).
    pub work: tempfile::TempDir,
    manifests: PathBuf,
    /// The control plane.
    pub cp: ControlPlane,
    /// Pods by `namespace/name`, in the base's order.
    pub pods: BTreeMap<String, Pod>,
    /// The first pod of the base: the default client.
    pub default_client: String,
    http_port: u16,
    grpc_port: u16,
}

impl World {
    /// Starts the control plane on the base's manifests and every pod of the base.
    pub async fn start(base: &Base, proxy: DataPlane, stream: Stream) -> anyhow::Result<World> {
        let work = tempfile::tempdir()?;
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests)?;
        let (http_port, grpc_port) = (free_port()?, free_port()?);
        let text = base
            .manifests
            .replace("${HTTP_PORT}", &http_port.to_string())
            .replace("${GRPC_PORT}", &grpc_port.to_string());
        std::fs::write(manifests.join("base.yaml"), text)?;
        let pods: Vec<String> = base.pods.iter().map(pod_manifest).collect();
        std::fs::write(manifests.join("pods.yaml"), pods.join("---\n"))?;
        let cp = ControlPlane::start(&manifests, work.path()).await?;
        let mut running = BTreeMap::new();
        for p in &base.pods {
            let placement = PodPlacement {
                namespace: p.namespace.clone(),
                pod: p.name.clone(),
                service_account: p.service_account.clone(),
                ip: p.ip,
                app_ip: app_ip(p.ip),
            };
            let mut backends = Vec::new();
            for port in [http_port, grpc_port] {
                backends.push(
                    Backend::start_with(
                        SocketAddr::new(placement.app_ip, port),
                        &p.name,
                        work.path(),
                        &["--namespace", &p.namespace],
                    )
                    .await?,
                );
            }
            let mut envoy = Sidecar::start_on(proxy, &placement, &cp, stream, work.path()).await?;
            envoy.wait_live(Duration::from_secs(30)).await?;
            running.insert(
                p.key(),
                Pod {
                    envoy,
                    _backends: backends,
                    ip: p.ip,
                },
            );
        }
        let default_client = base.pods.first().context("base.yaml: pods: none")?.key();
        Ok(World {
            work,
            manifests,
            cp,
            pods: running,
            default_client,
            http_port,
            grpc_port,
        })
    }

    /// Makes `routes` the only routes: the file of `test` holds them and every other
    /// test's routes file goes. A file per test, so that routes Rudder refuses never
    /// leave the last test's routes serving (a refused file keeps its last good
    /// objects).
    /// Whether any file changed.
    pub fn set_routes(&self, test: &str, routes: Option<&str>) -> anyhow::Result<bool> {
        let own = format!("{ROUTES_PREFIX}{test}.yaml");
        let mut changed = routes.is_some();
        for entry in std::fs::read_dir(&self.manifests)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with(ROUTES_PREFIX) && name != own {
                std::fs::remove_file(&path)?;
                changed = true;
            }
        }
        if let Some(text) = routes {
            let tmp = self.work.path().join("routes.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(tmp, self.manifests.join(own))?;
        }
        Ok(changed)
    }

    /// The route configuration every sidecar holds now, to see a change arrive.
    pub async fn route_snapshot(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for pod in self.pods.values() {
            out.push(
                pod.envoy
                    .admin_get("/config_dump?resource=dynamic_route_configs")
                    .await?,
            );
        }
        Ok(out)
    }

    /// Waits (at most `timeout`) until some sidecar's routes differ from `before`;
    /// whether they did.
    pub async fn wait_routes_change(&self, before: &[String], timeout: Duration) -> bool {
        wait_until(timeout, "a route change", || async move {
            Ok(self.route_snapshot().await? != before)
        })
        .await
        .is_ok()
    }

    /// `${POD_IP:ns/name}`, `${HTTP_PORT}` and `${GRPC_PORT}` in `text` filled in.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text
            .replace("${HTTP_PORT}", &self.http_port.to_string())
            .replace("${GRPC_PORT}", &self.grpc_port.to_string());
        for (key, pod) in &self.pods {
            out = out.replace(&format!("${{POD_IP:{key}}}"), &pod.ip.to_string());
        }
        out
    }

    /// Sends `req` from pod `from` (`namespace/name`) through its sidecar.
    pub async fn send(&self, from: &str, req: &Request) -> anyhow::Result<Observed> {
        let pod = self
            .pods
            .get(from)
            .with_context(|| format!("no pod {from}"))?;
        let host = self.expand(req.host.as_deref().unwrap_or("echo"));
        let path = req.path.as_deref().unwrap_or("/");
        let proxy = pod.envoy.outbound;
        let sent = async {
            if req.is_grpc() {
                send_grpc(proxy, &host, req).await
            } else {
                send_http(proxy, &host, path, req).await
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, sent)
            .await
            .with_context(|| format!("request to {host}{path} from {from} timed out"))?
    }
}

fn pod_manifest(p: &super::data::BasePod) -> String {
    let labels: String = p
        .labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n{labels}spec:\n  serviceAccountName: {}\n  containers:\n    - name: echo\nstatus:\n  podIP: {}\n",
        p.name, p.namespace, p.service_account, p.ip
    )
}

fn response_headers(h: &hyper::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// HTTP/1.1 to the sidecar in absolute form; a `Host` header in the case replaces the
/// authority's.
async fn send_http(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    req: &Request,
) -> anyhow::Result<Observed> {
    let stream = TcpStream::connect(proxy)
        .await
        .with_context(|| format!("connecting to {proxy}"))?;
    // A request's frames go out at once (no delayed-ACK stall between them).
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri: hyper::Uri = format!("http://{host}{path}")
        .parse()
        .with_context(|| format!("bad URL http://{host}{path}"))?;
    let host_header = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(host, |(_, v)| v.as_str());
    let mut builder = hyper::Request::builder()
        .method(req.method.as_deref().unwrap_or("GET"))
        .uri(uri)
        .header("host", host_header);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("host") {
            builder = builder.header(k.as_str(), v.as_str());
        }
    }
    let resp = sender
        .send_request(builder.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status().as_u16();
    let headers = response_headers(resp.headers());
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
        .to_bytes();
    Ok(Observed {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A unary gRPC call over h2c to the sidecar, routed by `:authority`; the answer's
/// trailers join its headers.
async fn send_grpc(proxy: SocketAddr, host: &str, req: &Request) -> anyhow::Result<Observed> {
    let stream = TcpStream::connect(proxy)
        .await
        .with_context(|| format!("connecting to {proxy}"))?;
    // A request's frames go out at once (no delayed-ACK stall between them).
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::post(format!("http://{host}/proto.EchoTestService/Echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in &req.headers {
        builder = builder.header(k.to_ascii_lowercase(), v.as_str());
    }
    let resp = sender
        .send_request(builder.body(Full::new(grpc_frame(&[])))?)
        .await?;
    let status = resp.status().as_u16();
    let mut headers = response_headers(resp.headers());
    let collected = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?;
    if let Some(t) = collected.trailers() {
        headers.extend(response_headers(t));
    }
    let bytes = collected.to_bytes();
    let body = match grpc_message_text(&bytes) {
        Some(text) => text,
        None if bytes.is_empty() => String::new(),
        None => bail!("the gRPC answer is no echo message ({} bytes)", bytes.len()),
    };
    Ok(Observed {
        status,
        headers,
        body,
    })
}
