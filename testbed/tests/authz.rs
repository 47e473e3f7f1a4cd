//! Authorization with SMI TrafficTargets, enforced by each proxy: the allowed identity
//! passes and another gets 403 while the policy lands under traffic (no allowed request
//! fails), path rules (decided on the normalized path), a dry run records without
//! denying, a namespace that denies by default opens only to its targets, and a
//! PERMISSIVE port refuses plain text once a target closes it.

mod common;

use std::net::SocketAddr;

use common::{
    CONVERGE, LIVE, Mesh, Traffic, connect, greeting_echo_server, ip, on_each_proxy, placement,
};
use testbed::manifests::{app_ip, pod, service};
use testbed::procs::{DataPlane, Sidecar, Stream, wait_until};

/// Envoy's body of an RBAC denial.
const DENIED: &str = "RBAC: access denied";

/// A route group of everything, another of GET /public only.
const ROUTES: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: web-routes, namespace: default}\nspec:\n  matches:\n  - {name: all, pathRegex: \"/.*\", methods: [\"*\"]}\n  - {name: public, pathRegex: \"/public(/.*)?\", methods: [GET]}\n---\n";

/// A TrafficTarget to service account `web` from `sources`, on `matches` of the routes.
fn target(name: &str, sources: &[&str], matches: &str, annotations: &str) -> String {
    let sources: Vec<String> = sources
        .iter()
        .map(|s| format!("{{kind: ServiceAccount, name: {s}, namespace: default}}"))
        .collect();
    format!(
        "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {{name: {name}, namespace: default{annotations}}}\nspec:\n  destination: {{kind: ServiceAccount, name: web, namespace: default}}\n  rules: [{{kind: HTTPRouteGroup, name: web-routes, matches: [{matches}]}}]\n  sources: [{}]\n---\n",
        sources.join(", ")
    )
}

/// A second caller, `intruder-0` (service account `intruder`), with its sidecar.
async fn intruder(mesh: &Mesh) -> anyhow::Result<Sidecar> {
    mesh.write(
        "intruder.yaml",
        &pod("intruder-0", "intruder", ip(25), "intruder"),
    )?;
    let mut s = Sidecar::start_on(
        mesh.proxy,
        &placement("intruder-0", 25),
        &mesh.cp,
        mesh.stream,
        mesh.work.path(),
    )
    .await?;
    s.wait_live(LIVE).await?;
    Ok(s)
}

/// GET http://web{path} through `sidecar`: (status, body).
async fn get(sidecar: &Sidecar, path: &str) -> anyhow::Result<(u16, String)> {
    let r = testbed::http::get_via(sidecar.outbound, &format!("http://web{path}")).await?;
    Ok((r.status, r.body))
}

/// Waits until `sidecar`'s GET of `path` answers `status`.
async fn until(sidecar: &Sidecar, path: &str, status: u16, what: &str) -> anyhow::Result<()> {
    wait_until(CONVERGE, what, || async move {
        Ok(get(sidecar, path).await?.0 == status)
    })
    .await?;
    Ok(())
}

/// The sum of `stat` over the web pods' sidecars.
async fn web_stat(mesh: &Mesh, stat: &str) -> anyhow::Result<u64> {
    let mut sum = 0;
    for name in ["web-1", "web-2"] {
        sum += mesh.sidecars[name].stat(stat).await?.unwrap_or(0);
    }
    Ok(sum)
}

async fn only_allowed_identities_pass_and_the_change_fails_no_allowed_request(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let other = intruder(&mesh).await?;
    // No TrafficTarget: the mesh default (allow) lets everyone in.
    assert_eq!(get(&other, "/").await?.0, 200);
    let traffic = Traffic::start(mesh.client.outbound, "web");
    mesh.write(
        "authz.yaml",
        &format!("{ROUTES}{}", target("web-callers", &["client"], "all", "")),
    )?;
    until(&other, "/", 403, "the intruder denied").await?;
    let (_, body) = get(&other, "/").await?;
    assert!(body.contains(DENIED), "{body}");
    // Let the allowed caller run a little past the change on every pod.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let results = traffic.stop().await;
    assert!(
        results.failures.is_empty() && results.ok > 0,
        "allowed requests failed while the policy landed: {:?} ({} ok)",
        results.failures,
        results.ok
    );
    let denied = web_stat(
        &mesh,
        &format!("http.inbound_{}.rbac.denied", mesh.web_port),
    )
    .await?;
    assert!(denied >= 1, "denials are counted per destination port");

    // Rules narrow what a source may ask: `other` may GET /public only.
    mesh.write(
        "authz.yaml",
        &format!(
            "{ROUTES}{}{}",
            target("web-callers", &["client"], "all", ""),
            target("public", &["intruder"], "public", "")
        ),
    )?;
    until(&other, "/public/x", 200, "the intruder allowed /public").await?;
    assert_eq!(get(&other, "/private").await?.0, 403);
    assert_eq!(get(&mesh.client, "/private").await?.0, 200);
    // A path is decided as the app will see it: dot segments, encoded dots and slashes,
    // doubled slashes cannot carry /private past a rule for /public.
    for sneaky in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public%2F..%2Fprivate",
        "/public/..%2Fprivate",
    ] {
        assert_eq!(get(&other, sneaky).await?.0, 403, "{sneaky}");
    }
    assert_eq!(get(&other, "/public//x").await?.0, 200);
    Ok(())
}

async fn a_dry_run_records_what_it_would_deny_and_denies_nothing(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Sotw).await?;
    let other = intruder(&mesh).await?;
    let dry = ", annotations: {rudder.dev/dry-run: \"true\"}";
    mesh.write(
        "authz.yaml",
        &format!("{ROUTES}{}", target("trial", &["client"], "all", dry)),
    )?;
    let shadow = format!("http.inbound_{}.rbac.shadow_denied", mesh.web_port);
    let m = &mesh;
    let (other_ref, shadow_ref) = (&other, &shadow);
    wait_until(CONVERGE, "shadow denials counted", || async move {
        assert_eq!(
            get(other_ref, "/").await?.0,
            200,
            "a dry run denies nothing"
        );
        Ok(web_stat(m, shadow_ref).await? >= 1)
    })
    .await?;
    assert_eq!(
        web_stat(
            &mesh,
            &format!("http.inbound_{}.rbac.denied", mesh.web_port)
        )
        .await?,
        0
    );
    // Enforced, the same target denies.
    mesh.write(
        "authz.yaml",
        &format!("{ROUTES}{}", target("trial", &["client"], "all", "")),
    )?;
    until(&other, "/", 403, "the intruder denied once enforced").await?;
    assert_eq!(get(&mesh.client, "/").await?.0, 200);
    Ok(())
}

async fn a_namespace_denying_by_default_opens_only_to_its_targets(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start_with(
        proxy,
        Stream::Delta,
        &["--namespace-inbound-policy", "default=deny"],
    )
    .await?;
    let other = intruder(&mesh).await?;
    assert_eq!(get(&mesh.client, "/").await?.0, 403, "no target: denied");
    assert_eq!(get(&other, "/").await?.0, 403);
    mesh.write(
        "authz.yaml",
        &format!("{ROUTES}{}", target("web-callers", &["client"], "all", "")),
    )?;
    until(&mesh.client, "/", 200, "the client allowed by its target").await?;
    assert_eq!(get(&other, "/").await?.0, 403);
    // Without its target the namespace default denies again.
    mesh.write("authz.yaml", "")?;
    until(&mesh.client, "/", 403, "denied again without the target").await?;
    Ok(())
}

async fn a_permissive_port_refuses_plain_text_once_a_target_closes_it(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start_with(proxy, Stream::Delta, &["--mtls-mode", "permissive"]).await?;
    let inbound = std::net::SocketAddr::new(ip(22), mesh.web_port);
    let plain = testbed::http::get_via(inbound, "/").await?;
    assert_eq!(
        plain.status, 200,
        "PERMISSIVE without a target: {}",
        plain.body
    );
    mesh.write(
        "authz.yaml",
        &format!("{ROUTES}{}", target("web-callers", &["client"], "all", "")),
    )?;
    wait_until(CONVERGE, "plain text refused", || async move {
        Ok(testbed::http::get_via(inbound, "/").await?.status == 403)
    })
    .await?;
    assert_eq!(
        get(&mesh.client, "/").await?.0,
        200,
        "mTLS callers still pass"
    );
    Ok(())
}

async fn xdsctl_answers_what_the_proxies_do(proxy: DataPlane) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let other = intruder(&mesh).await?;
    mesh.write(
        "authz.yaml",
        &format!(
            "{ROUTES}{}{}",
            target("web-callers", &["client"], "all", ""),
            target("public", &["intruder"], "public", "")
        ),
    )?;
    until(&other, "/private", 403, "the policy in force").await?;
    let cases: [(&Sidecar, &str, &str, &str); 5] = [
        (
            &mesh.client,
            "client",
            "/",
            "TrafficTarget default/web-callers",
        ),
        (
            &other,
            "intruder",
            "/public/x",
            "TrafficTarget default/public",
        ),
        (
            &other,
            "intruder",
            "/private",
            "not allowed by TrafficTarget default/public, TrafficTarget default/web-callers",
        ),
        (&other, "intruder", "/", "not allowed by"),
        (
            &other,
            "intruder",
            "/public/%2e%2e/private",
            "not allowed by",
        ),
    ];
    for (sidecar, sa, path, decided) in cases {
        let from = format!("default/{sa}");
        let (code, out) = mesh.xdsctl(&[
            "authz", "check", "--from", &from, "--to", "web:80", "GET", path,
        ])?;
        assert!(code == 0 || code == 4, "{sa} {path}: exit {code}: {out}");
        assert!(out.contains(decided), "{sa} {path}: {out}");
        // Connections opened before the change finish under the old rules for at most
        // the proxy's drain time: the proxies agree once it is over.
        let answer = if code == 0 { 200 } else { 403 };
        let what = format!("{sa} GET {path} answered {answer} as xdsctl says:\n{out}");
        until(sidecar, path, answer, &what).await?;
    }
    // A plain-text caller and an unknown Service.
    let (code, out) = mesh.xdsctl(&["authz", "check", "--plain-text", "--to", "web"])?;
    assert_eq!(code, 4, "{out}");
    let (code, out) =
        mesh.xdsctl(&["authz", "check", "--from", "default/client", "--to", "nope"])?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no Service default/nope"), "{out}");
    Ok(())
}

async fn a_tcp_port_is_closed_to_a_source_its_target_does_not_list(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let other = intruder(&mesh).await?;
    let port = testbed::procs::free_port()?;
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _echo = greeting_echo_server(
        SocketAddr::new(app_ip(ip(30)), port),
        b"hi\n",
        accepted.clone(),
    )
    .await?;
    mesh.write(
        "db.yaml",
        &[
            service("db", "tcp-pg", 5432, port, None),
            pod("db-1", "db", ip(30), "db"),
            testbed::manifests::slice("db-abc", "db", "tcp-pg", port, &[ip(30)]),
            format!(
                "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {{name: pg, namespace: default}}\nspec:\n  matches: {{ports: [{port}]}}\n"
            ),
            "apiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\nmetadata: {name: db-clients, namespace: default}\nspec:\n  destination: {kind: ServiceAccount, name: db, namespace: default}\n  rules: [{kind: TCPRoute, name: pg}]\n  sources: [{kind: ServiceAccount, name: client, namespace: default}]\n".to_string(),
        ]
        .join("---\n"),
    )?;
    let mut db = Sidecar::start_on(
        proxy,
        &placement("db-1", 30),
        &mesh.cp,
        Stream::Delta,
        mesh.work.path(),
    )
    .await?;
    db.wait_live(LIVE).await?;
    // Echo through a CONNECT tunnel: true when the bytes came back.
    let echoed = |via: SocketAddr| async move {
        let Ok((200, mut tunnel)) = connect(via, "db:5432").await else {
            return false;
        };
        let mut hi = [0u8; 3];
        let greeted = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tunnel.read_exact(&mut hi),
        )
        .await;
        if !matches!(greeted, Ok(Ok(_))) || hi != *b"hi\n" {
            return false;
        }
        let msg = b"SELECT 1;\n";
        if tunnel.write_all(msg).await.is_err() {
            return false;
        }
        let mut back = [0u8; 10];
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                tunnel.read_exact(&mut back)
            )
            .await,
            Ok(Ok(_))
        ) && back == *msg
    };
    let (client, intruder) = (mesh.client.outbound, other.outbound);
    wait_until(CONVERGE, "the client's bytes echoed", || async move {
        Ok(echoed(client).await)
    })
    .await?;
    assert!(
        !echoed(intruder).await,
        "the intruder's connection is closed"
    );
    // The port decides on the caller alone, so the intruder's certificate is refused in
    // the handshake (before the app is connected), counted on the listener.
    let refused = db.admin_get("/stats?filter=ssl.fail_verify_san$").await?;
    assert!(
        refused
            .lines()
            .filter_map(|l| l.rsplit_once(": "))
            .any(|(k, v)| k.starts_with("listener.") && v.trim() != "0"),
        "the refusal is counted on the destination's listener: {refused}"
    );
    // A server that speaks first (a database's greeting): a denied caller that sends
    // nothing must not be shown it.
    let silent = |via: SocketAddr| async move {
        let Ok((200, mut tunnel)) = connect(via, "db:5432").await else {
            return Vec::new();
        };
        let mut got = vec![0u8; 64];
        match tokio::time::timeout(std::time::Duration::from_secs(1), tunnel.read(&mut got)).await {
            Ok(Ok(n)) => got[..n].to_vec(),
            _ => Vec::new(),
        }
    };
    assert_eq!(
        silent(client).await,
        b"hi\n",
        "an allowed caller is greeted"
    );
    let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    let before = count();
    for _ in 0..3 {
        let leaked = silent(intruder).await;
        assert!(
            leaked.is_empty(),
            "a denied caller is never shown the greeting: {:?}",
            String::from_utf8_lossy(&leaked)
        );
    }
    assert_eq!(count(), before, "nor does its connection reach the app");
    assert_eq!(silent(client).await, b"hi\n");
    assert_eq!(count(), before + 1, "the app counts what reaches it");
    Ok(())
}

on_each_proxy!(
    a_tcp_port_is_closed_to_a_source_its_target_does_not_list,
    xdsctl_answers_what_the_proxies_do,
    only_allowed_identities_pass_and_the_change_fails_no_allowed_request,
    a_dry_run_records_what_it_would_deny_and_denies_nothing,
    a_namespace_denying_by_default_opens_only_to_its_targets,
    a_permissive_port_refuses_plain_text_once_a_target_closes_it,
);
