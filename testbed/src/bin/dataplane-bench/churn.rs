//! The churn run: per proxy, a fixed-rate run through its sidecar pair while the
//! control plane flips a TrafficSplit's weights, adds and removes an endpoint, and every
//! workload certificate rotates (10 s lifetime, renewed at half-life). Counts failed
//! requests and how many changes and certificate rotations landed during the run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use testbed::bench::datapath::{Load, Shape, Target, measure};
use testbed::bench::pair::{self, NAMESPACE, PairMesh, Placement};
use testbed::procs::{DataPlane, Sidecar, Stream};

/// What one proxy's churn run saw.
#[derive(Debug, Serialize)]
pub(crate) struct Churn {
    proxy: &'static str,
    seconds: f64,
    rate: u32,
    requests: u64,
    pub(crate) failed: u64,
    unsent: u64,
    p99_ms: f64,
    max_ms: f64,
    weight_changes: u32,
    endpoint_changes: u32,
    /// Rotations seen on the client's and on the server's sidecar.
    certificate_rotations: [u32; 2],
    errors: serde_json::Value,
}

impl Churn {
    pub(crate) fn line(&self) -> String {
        format!(
            "churn {}: {} requests at {} rps over {:.0} s, {} failed, {} unsent, p99 {:.2} ms, max {:.2} ms; {} weight changes, {} endpoint changes, certificate rotations seen on the client / server sidecar {} / {}",
            self.proxy,
            self.requests,
            self.rate,
            self.seconds,
            self.failed,
            self.unsent,
            self.p99_ms,
            self.max_ms,
            self.weight_changes,
            self.endpoint_changes,
            self.certificate_rotations[0],
            self.certificate_rotations[1]
        )
    }
}

/// Runs the churn scenario for each proxy in turn.
pub(crate) async fn run(
    seconds: f64,
    rate: u32,
    connections: usize,
    place: Placement,
) -> anyhow::Result<Vec<Churn>> {
    let mut out = Vec::new();
    for proxy in DataPlane::ALL {
        out.push(
            one(proxy, seconds, rate, connections, place)
                .await
                .with_context(|| format!("churn through {}", proxy.name()))?,
        );
    }
    Ok(out)
}

fn split(root: &str, a: &str, b: &str, wa: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {root}, namespace: {NAMESPACE}}}\nspec:\n  selector: {{app: {root}}}\n  ports: [{{name: http, port: 80, targetPort: 80}}]\n---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: {root}, namespace: {NAMESPACE}}}\nspec:\n  service: {root}\n  backends:\n    - {{service: {a}, weight: {wa}}}\n    - {{service: {b}, weight: {}}}\n",
        100 - wa
    )
}

fn write(mesh: &PairMesh, file: &str, text: &str) -> anyhow::Result<()> {
    let tmp = mesh.work.path().join(format!("{file}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, mesh.manifests.join(file))?;
    Ok(())
}

async fn one(
    proxy: DataPlane,
    seconds: f64,
    rate: u32,
    connections: usize,
    place: Placement,
) -> anyhow::Result<Churn> {
    let mesh = PairMesh::start(&[proxy], Stream::Delta, &["--cert-lifetime", "10s"], place).await?;
    let p = &mesh.pairs[0];
    let root = format!("churn-{}", proxy.name());
    let (a, b) = (
        format!("server-{}", proxy.name()),
        format!("plain-{}", proxy.name()),
    );
    write(&mesh, "churn.yaml", &split(&root, &a, &b, 90))?;
    let host = format!("{root}.{NAMESPACE}.svc.cluster.local");
    let outbound = p.client.outbound;
    pair::wait_routed(outbound, &host).await?;
    let target = Target {
        connect: outbound,
        authority: host,
        absolute_form: true,
    };
    let shape = Shape {
        connections,
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_secs(1),
        body_bytes: pair::BODY_BYTES,
        cpu: place.load,
    };
    let load = measure(&target, Load::Rate(rate), shape, &[]);
    let changes = churn(&mesh, &root, &a, &b, shape.warmup + shape.duration);
    let (m, counts) = tokio::join!(load, changes);
    let (m, (weights, endpoints, rotations)) = (m?, counts?);
    Ok(Churn {
        proxy: proxy.name(),
        seconds,
        rate,
        requests: m.requests,
        failed: m.failed,
        unsent: m.unsent,
        p99_ms: m.latency_us[2] / 1e3,
        max_ms: m.latency_us[4] / 1e3,
        weight_changes: weights,
        endpoint_changes: endpoints,
        certificate_rotations: rotations,
        errors: m.errors,
    })
}

/// Every second, flips the split's weights or adds/removes the plain pod as a second
/// endpoint of the meshed server's Service; watches both sidecars' certificates.
async fn churn(
    mesh: &PairMesh,
    root: &str,
    a: &str,
    b: &str,
    for_how_long: Duration,
) -> anyhow::Result<(u32, u32, [u32; 2])> {
    let p = &mesh.pairs[0];
    let start = Instant::now();
    let (mut weights, mut endpoints, mut rotations) = (0, 0, [0, 0]);
    let sidecars = [&p.client, &p.server];
    let mut last_serials = [serials(sidecars[0]).await?, serials(sidecars[1]).await?];
    let mut step = 0u32;
    while start.elapsed() + Duration::from_secs(1) < for_how_long {
        tokio::time::sleep(Duration::from_secs(1)).await;
        step += 1;
        // A cycle of four: weights to 10/90, the plain pod added as a second
        // EndpointSlice of the meshed server's Service, weights back to 90/10, the
        // endpoint removed.
        match step % 4 {
            1 | 3 => {
                let wa = if step % 4 == 1 { 10 } else { 90 };
                write(mesh, "churn.yaml", &split(root, a, b, wa))?;
                weights += 1;
            }
            phase => {
                let ips = if phase == 2 {
                    vec![mesh.pod_ip(0, 3)]
                } else {
                    Vec::new()
                };
                let slice = testbed::manifests::slice_in(
                    NAMESPACE,
                    &format!("{a}-churn"),
                    a,
                    "http",
                    mesh.app_port,
                    &ips,
                );
                write(mesh, "churn-slice.yaml", &slice)?;
                endpoints += 1;
            }
        }
        for (i, s) in sidecars.iter().enumerate() {
            let now = serials(s).await?;
            if now != last_serials[i] {
                rotations[i] += 1;
                last_serials[i] = now;
            }
        }
    }
    Ok((weights, endpoints, rotations))
}

/// The serial numbers a sidecar's `/certs` shows.
async fn serials(sidecar: &Sidecar) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let text = sidecar.admin_get("/certs").await?;
    let json: serde_json::Value = serde_json::from_str(&text).context("/certs is JSON")?;
    collect_serials(&json, &mut out);
    Ok(out)
}

fn collect_serials(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "serial_number" {
                    if let Some(s) = v.as_str() {
                        out.insert(s.to_string());
                    }
                } else {
                    collect_serials(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_serials(v, out)),
        _ => {}
    }
}
