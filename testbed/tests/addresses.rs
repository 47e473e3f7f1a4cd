//! Routing by address in the explicit-proxy mode with real Envoy (the Gateway API mesh
//! conformance's `MeshFrontend`): a request through the client's sidecar to a mesh
//! pod's own `IP:PORT` reaches that pod, over mTLS (its inbound is STRICT), and the
//! Service's route rules do not apply to it; a request by the Service's name does get
//! them. Unknown names still find no route.

mod common;

use common::{CONVERGE, Mesh, ip, wait_for_route};
use testbed::procs::{DataPlane, Stream, wait_until};

/// An HTTPRoute on Service `web` port 80 that marks every request it routes.
fn marking_route() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web-mark, namespace: default}\nspec:\n  parentRefs:\n    - {group: \"\", kind: Service, name: web, port: 80}\n  rules:\n    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{name: x-echo-routed, value: web-route}]\n      backendRefs: [{name: web, port: 80}]\n".to_string()
}

#[tokio::test]
async fn a_pod_address_reaches_that_pod_over_mtls_without_the_service_rules() -> anyhow::Result<()>
{
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Delta).await?;
    mesh.write("route.yaml", &marking_route())?;
    wait_for_route(&mesh, "web-route").await?;

    // By the Service's name: its route applies.
    let by_name = testbed::http::get_via(mesh.client.outbound, "http://web/").await?;
    assert_eq!(by_name.status, 200, "{by_name:?}");
    assert!(
        by_name.body.contains("x-echo-routed=web-route"),
        "{by_name:?}"
    );

    // By each pod's own address and port: that pod answers, unmarked.
    for (pod, last) in [("web-1", 22), ("web-2", 23)] {
        let url = format!("http://{}:{}/", ip(last), mesh.web_port);
        for _ in 0..5 {
            let r = testbed::http::get_via(mesh.client.outbound, &url).await?;
            assert_eq!(r.status, 200, "{url}: {r:?}");
            assert_eq!(
                r.body.split_whitespace().next(),
                Some(pod),
                "{url} answered by another pod: {r:?}"
            );
            assert!(
                !r.body.contains("x-echo-routed"),
                "{url}: the Service's route applied to a pod address: {r:?}"
            );
        }
    }
    // h2c by a pod's address keeps HTTP/2 (the caller's protocol) end to end.
    let fast = format!("{}:{}", ip(24), mesh.fast_port);
    let r = testbed::http::get_h2c(mesh.client.outbound, &fast, "/").await?;
    assert_eq!(r.status, 200, "{fast}: {r:?}");
    assert_eq!(r.body.split_whitespace().next(), Some("fast-1"), "{r:?}");

    // The calls went through the pod-address cluster, over TLS (the pods' inbound
    // listeners take nothing else).
    let client = &mesh.client;
    wait_until(
        CONVERGE,
        "the pod-address cluster's handshakes",
        || async move {
            let stats = client
                .admin_get("/stats?filter=^cluster.pod-address.ssl.handshake$")
                .await?;
            Ok(stats.lines().any(|l| {
                l.starts_with("cluster.pod-address.ssl.handshake: ") && !l.ends_with(": 0")
            }))
        },
    )
    .await?;

    // A name nothing serves still finds no route.
    let r = testbed::http::get_via(mesh.client.outbound, "http://nothing.default:80/").await?;
    assert_eq!(r.status, 404, "{r:?}");
    Ok(())
}
