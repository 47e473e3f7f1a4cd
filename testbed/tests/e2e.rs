//! End-to-end with real Envoy: the control plane from its binary, Envoy sidecars and
//! echo backends as processes. Each scenario runs over delta and over SotW ADS.

mod common;

use std::time::{Duration, Instant};

use common::{CONVERGE, Mesh, Traffic, WEB_CLUSTER, ip};
use testbed::manifests::{pod, service, slice};
use testbed::procs::{DataPlane, Stream, wait_until};

async fn routes_by_service_name(proxy: DataPlane, stream: Stream) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, stream).await?;
    assert_eq!(
        mesh.client.stat("control_plane.connected_state").await?,
        Some(1)
    );
    for host in [
        "web",
        "web:80",
        "web.default",
        "web.default:80",
        "web.default.svc.cluster.local",
        "web.default.svc.cluster.local:80",
    ] {
        let seen = mesh.answering(host, 10).await?;
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["web-1", "web-2"],
            "{host}: both endpoints answer"
        );
    }
    // HTTP/2: the app speaks h2c to its sidecar; the backend must see HTTP/2 too.
    for authority in ["fast:9090", "fast.default.svc.cluster.local:9090", "fast"] {
        let r = testbed::http::get_h2c(mesh.client.outbound, authority, "/x").await?;
        assert_eq!(r.status, 200, "{authority}: {}", r.body);
        assert!(
            r.body.starts_with("fast-1 proto=HTTP/2.0"),
            "{authority}: {}",
            r.body
        );
    }
    // The request went through the server-side sidecar's inbound listener.
    let inbound = mesh.sidecars["fast-1"]
        .stat(&format!(
            "http.inbound_{}.downstream_rq_total",
            mesh.fast_port
        ))
        .await?;
    assert!(
        inbound.unwrap_or(0) >= 3,
        "inbound requests on fast-1's sidecar: {inbound:?}"
    );
    // Unknown hosts are not routed anywhere.
    assert_eq!(mesh.call("nope.default").await?.0, 404);
    let counters = mesh.update_counters().await?;
    assert!(
        counters
            .iter()
            .filter(|(k, _)| k.ends_with("update_rejected"))
            .all(|(_, v)| *v == 0),
        "{counters:?}"
    );
    assert!(
        counters
            .get("cluster_manager.cds.update_success")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{counters:?}"
    );
    Ok(())
}

async fn delta_routes_by_service_name(proxy: DataPlane) -> anyhow::Result<()> {
    routes_by_service_name(proxy, Stream::Delta).await
}

async fn sotw_routes_by_service_name(proxy: DataPlane) -> anyhow::Result<()> {
    routes_by_service_name(proxy, Stream::Sotw).await
}

async fn live_edits(proxy: DataPlane, stream: Stream) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, stream).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Add an endpoint: a new pod, then its address in the EndpointSlice.
    mesh.add_pod("web-3", 25, mesh.web_port).await?;
    let pods = std::fs::read_to_string(mesh.manifests().join("pods.yaml"))?;
    mesh.write(
        "pods.yaml",
        &format!("{pods}---\n{}", pod("web-3", "web", ip(25), "web")),
    )?;
    // As readiness gates a real pod: its address goes into the slice only once its
    // sidecar serves the inbound port.
    let web3 = &mesh.sidecars["web-3"];
    let inbound = format!("inbound|{}", mesh.web_port);
    wait_until(CONVERGE, "web-3's inbound listener", || {
        let inbound = inbound.clone();
        async move { Ok(web3.admin_get("/listeners").await?.contains(&inbound)) }
    })
    .await?;
    let edited = Instant::now();
    mesh.write(
        "slice-web.yaml",
        &slice(
            "web-abc",
            "web",
            "http",
            mesh.web_port,
            &[ip(22), ip(23), ip(25)],
        ),
    )?;
    let endpoint = format!("{}:{}", ip(25), mesh.web_port);
    let client = &mesh.client;
    let applied = wait_until(CONVERGE, "the new endpoint in Envoy", || {
        let endpoint = endpoint.clone();
        async move { Ok(client.endpoints_of(WEB_CLUSTER).await?.contains(&endpoint)) }
    })
    .await?;
    eprintln!("manifest edit -> endpoint applied in Envoy: {applied:?}");
    traffic.reset_counts();
    wait_until(CONVERGE, "web-3 to answer", || {
        let r = traffic.results.clone();
        async move { Ok(r.lock().by_pod.contains_key("web-3")) }
    })
    .await?;
    eprintln!(
        "manifest edit -> first answer from the new endpoint: {:?}",
        edited.elapsed()
    );

    // Remove one: it leaves rotation.
    mesh.write(
        "slice-web.yaml",
        &slice("web-abc", "web", "http", mesh.web_port, &[ip(23), ip(25)]),
    )?;
    let gone = format!("{}:{}", ip(22), mesh.web_port);
    wait_until(CONVERGE, "the removed endpoint to leave Envoy", || {
        let gone = gone.clone();
        async move { Ok(!client.endpoints_of(WEB_CLUSTER).await?.contains(&gone)) }
    })
    .await?;
    // A request already on its way to web-1 may still finish: count from after that.
    tokio::time::sleep(Duration::from_millis(200)).await;
    traffic.reset_counts();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = traffic.stop().await;
    assert!(
        results.failures.is_empty(),
        "requests failed during endpoint changes: {:?}",
        results.failures
    );
    assert!(
        !results.by_pod.contains_key("web-1"),
        "web-1 still answering: {:?}",
        results.by_pod
    );
    assert!(
        results.by_pod.contains_key("web-2") && results.by_pod.contains_key("web-3"),
        "{:?}",
        results.by_pod
    );

    // Delete the Service: its cluster goes, and its names stop routing.
    mesh.write(
        "services.yaml",
        &service(
            "fast",
            "h2c",
            9090,
            mesh.fast_port,
            Some("kubernetes.io/h2c"),
        ),
    )?;
    wait_until(CONVERGE, "the web cluster to be removed", || async move {
        Ok(!client
            .cluster_names()
            .await?
            .iter()
            .any(|c| c == WEB_CLUSTER))
    })
    .await?;
    assert_eq!(mesh.call("web").await?.0, 404);
    mesh.cp.check_running()?;
    Ok(())
}

async fn delta_live_manifest_edits(proxy: DataPlane) -> anyhow::Result<()> {
    live_edits(proxy, Stream::Delta).await
}

async fn sotw_live_manifest_edits(proxy: DataPlane) -> anyhow::Result<()> {
    live_edits(proxy, Stream::Sotw).await
}

async fn malformed_manifest_keeps_the_running_config(proxy: DataPlane) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let before = mesh.update_counters().await?;
    // A YAML syntax error, and a document with a bad field, in two files.
    mesh.write(
        "slice-web.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: [\n",
    )?;
    mesh.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service("web", "http", 80, mesh.web_port, None),
            service("fast", "h2c", 9090, 7000, None)
                .replace("targetPort: 7000", "targetPort: 70000")
        ),
    )?;
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "both errors in the control-plane log",
        || async move {
            let log = cp.log_text();
            Ok(log.contains("slice-web.yaml")
                && log.contains("spec.ports[0].targetPort")
                && log.contains("document 1"))
        },
    )
    .await?;
    let log = mesh.cp.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("spec.ports[0].targetPort"))
        .unwrap_or_default();
    assert!(
        line.contains("services.yaml")
            && line.contains("70000")
            && line.contains("keeping its last good contents"),
        "{line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("slice-web.yaml") && l.contains("syntax")),
        "{log}"
    );
    // Nothing was pushed, and traffic still reaches both endpoints and the h2 service.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mesh.update_counters().await?,
        before,
        "no config was pushed"
    );
    assert_eq!(mesh.answering("web", 10).await?.len(), 2);
    let r = testbed::http::get_h2c(mesh.client.outbound, "fast:9090", "/").await?;
    assert_eq!(r.status, 200);
    // Fixing the file applies it.
    mesh.write(
        "slice-web.yaml",
        &slice("web-abc", "web", "http", mesh.web_port, &[ip(23)]),
    )?;
    let client = &mesh.client;
    wait_until(CONVERGE, "the fixed slice to apply", || async move {
        Ok(client.endpoints_of(WEB_CLUSTER).await?.len() == 1)
    })
    .await?;
    Ok(())
}

async fn nack_is_recorded_not_resent(proxy: DataPlane, stream: Stream) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, stream).await?;
    // Something else already holds this port on the client's pod IP: Envoy cannot bind
    // the inbound listener a new Service needs, and rejects the update.
    let (_squatter, port) = mesh.occupy_client_inbound_port()?;
    let client = &mesh.client;
    wait_until(CONVERGE, "Envoy to reject the listener", || async move {
        Ok(client
            .stat("listener_manager.lds.update_rejected")
            .await?
            .unwrap_or(0)
            >= 1)
    })
    .await?;
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "the NACK in the control-plane log",
        || async move { Ok(cp.log_text().contains("proxy rejected config")) },
    )
    .await?;
    // Let any resend loop show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mesh.client
            .stat("listener_manager.lds.update_rejected")
            .await?,
        Some(1),
        "the rejected version was sent again"
    );
    let log = mesh.cp.log_text();
    let nacks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("proxy rejected config"))
        .collect();
    assert_eq!(nacks.len(), 1, "logged once: {nacks:?}");
    let line = nacks[0];
    assert!(
        line.contains("client-0.default") && line.contains("LDS"),
        "{line}"
    );
    assert!(
        line.contains(&format!("{}:{port}", ip(21))),
        "Envoy's error text names the address: {line}"
    );
    // Everything else keeps working, and later changes still arrive.
    assert_eq!(mesh.answering("web", 10).await?.len(), 2);
    mesh.write(
        "slice-web.yaml",
        &slice("web-abc", "web", "http", mesh.web_port, &[ip(23)]),
    )?;
    wait_until(CONVERGE, "a later change to apply", || async move {
        Ok(client.endpoints_of(WEB_CLUSTER).await?.len() == 1)
    })
    .await?;
    assert_eq!(
        mesh.client
            .stat("listener_manager.lds.update_rejected")
            .await?,
        Some(1)
    );
    Ok(())
}

async fn delta_nack_is_recorded_and_not_resent(proxy: DataPlane) -> anyhow::Result<()> {
    nack_is_recorded_not_resent(proxy, Stream::Delta).await
}

async fn sotw_nack_is_recorded_and_not_resent(proxy: DataPlane) -> anyhow::Result<()> {
    nack_is_recorded_not_resent(proxy, Stream::Sotw).await
}

async fn survives_control_plane_kill(proxy: DataPlane, stream: Stream) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, stream).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = mesh.update_counters().await?;
    mesh.cp.kill();
    let client = &mesh.client;
    wait_until(
        CONVERGE,
        "Envoy to notice the control plane is gone",
        || async move { Ok(client.stat("control_plane.connected_state").await? == Some(0)) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mesh.cp.restart().await?;
    let client = &mesh.client;
    let reconnected = wait_until(CONVERGE, "Envoy to reconnect", || async move {
        Ok(client.stat("control_plane.connected_state").await? == Some(1))
    })
    .await?;
    eprintln!("reconnected {reconnected:?} after restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = mesh.update_counters().await?;
    assert_eq!(before, after, "nothing changed, so nothing was resent");
    let cp = &mesh.cp;
    assert!(cp.log_text().contains("proxy connected"));
    // It is served again: a change after the restart arrives.
    mesh.write(
        "slice-web.yaml",
        &slice("web-abc", "web", "http", mesh.web_port, &[ip(23)]),
    )?;
    let client = &mesh.client;
    wait_until(CONVERGE, "a change after the restart", || async move {
        Ok(client.endpoints_of(WEB_CLUSTER).await?.len() == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let results = traffic.stop().await;
    assert!(
        results.failures.is_empty(),
        "requests failed: {:?}",
        results.failures
    );
    assert!(results.ok > 50, "traffic flowed: {results:?}");
    Ok(())
}

async fn delta_control_plane_sigkill_drops_no_requests(proxy: DataPlane) -> anyhow::Result<()> {
    survives_control_plane_kill(proxy, Stream::Delta).await
}

async fn sotw_control_plane_sigkill_drops_no_requests(proxy: DataPlane) -> anyhow::Result<()> {
    survives_control_plane_kill(proxy, Stream::Sotw).await
}

async fn an_external_name_service_is_reached_by_dns_without_mesh_tls(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    // Something outside the mesh, known by a DNS name: a plain HTTP server on localhost.
    let port = testbed::procs::free_port()?;
    let _outside = testbed::procs::Backend::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "outside",
        mesh.work.path(),
    )
    .await?;
    mesh.write(
        "external.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: default}}\nspec:\n  type: ExternalName\n  externalName: localhost\n  ports: [{{name: http, port: {port}}}]\n"
        ),
    )?;
    let host = format!("ext:{port}");
    let answered = wait_until(CONVERGE, "the external Service to answer", || {
        let (host, mesh) = (host.clone(), &mesh);
        async move { Ok(matches!(mesh.call(&host).await, Ok((200, who)) if who == "outside")) }
    })
    .await;
    if let Err(e) = answered {
        anyhow::bail!("{e:#}\n{}", mesh.cp.log_text());
    }
    // A DNS cluster with no transport socket: the server only speaks plain HTTP, and the
    // mesh's certificate is not offered to it.
    let clusters = mesh
        .client
        .admin_get("/config_dump?resource=dynamic_active_clusters")
        .await?;
    let ext = clusters
        .split("\"cluster\": {")
        .find(|c| c.contains(&format!("outbound|{port}||ext.default.svc.cluster.local")))
        .unwrap_or_default();
    assert!(ext.contains("LOGICAL_DNS"), "{ext}");
    assert!(!ext.contains("transport_socket"), "{ext}");
    Ok(())
}

common::on_each_proxy!(
    delta_routes_by_service_name,
    sotw_routes_by_service_name,
    delta_live_manifest_edits,
    sotw_live_manifest_edits,
    delta_nack_is_recorded_and_not_resent,
    sotw_nack_is_recorded_and_not_resent,
    delta_control_plane_sigkill_drops_no_requests,
    sotw_control_plane_sigkill_drops_no_requests,
    malformed_manifest_keeps_the_running_config,
    an_external_name_service_is_reached_by_dns_without_mesh_tls,
);
