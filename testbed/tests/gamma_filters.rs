//! Gateway API redirects, rewrites and consumer routes (GAMMA) in the data path with
//! real Envoy: a `RequestRedirect` answers 30x with the `Location` the spec gives, a
//! `URLRewrite` reaches the backend with the rewritten host and path (the echo backend
//! says what it got), and a consumer route in the caller's namespace changes only that
//! namespace's callers.

mod common;

use std::net::SocketAddr;

use common::{CONVERGE, LIVE, Mesh, ip, plain_service, wait_for_route};
use testbed::manifests::app_ip;
use testbed::procs::{DataPlane, PodPlacement, Sidecar, Stream, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPRoute `NAME` in `ns` for Service `parent_ns/parent` port 80 with `rules` (YAML,
/// indented 4).
fn route(ns: &str, name: &str, parent_ns: &str, parent: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: {parent}, namespace: {parent_ns}, port: 80}}\n  rules:\n{rules}"
    )
}

/// The status line's code and the `Location` header of `GET http://HOST/PATH` sent
/// through `proxy` in absolute form (an app whose `http_proxy` is its sidecar).
async fn get_raw(proxy: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    let req =
        format!("GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line: {text}"))?;
    let location = text
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((code, location))
}

async fn redirects_answer_30x_with_the_location_the_spec_gives(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let rules = "    - matches: [{path: {type: PathPrefix, value: /scheme}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
    - matches: [{path: {type: PathPrefix, value: /port-and-host}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083, statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}
    - matches: [{path: {type: PathPrefix, value: /strip}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}, statusCode: 307}
    - matches: [{path: {type: PathPrefix, value: /full}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}, statusCode: 308}
    - matches: [{path: {type: PathPrefix, value: /see-other}}]
      filters: [{type: RequestRedirect, requestRedirect: {statusCode: 303, port: 8080}}]
    - backendRefs: [{name: web, port: 80}]
";
    mesh.write(
        "route.yaml",
        &route("default", "web", "default", "web", rules),
    )?;
    wait_for_route(&mesh, "/full-path-replacement").await?;
    let cases = [
        ("/scheme", 302, "https://web/scheme"),
        (
            "/port-and-host",
            301,
            "http://example.org:8083/port-and-host",
        ),
        (
            "/original-prefix/lemon",
            302,
            "http://web/replacement-prefix/lemon",
        ),
        ("/original-prefix", 302, "http://web/replacement-prefix"),
        ("/strip/x/y", 307, "http://web/x/y"),
        ("/strip", 307, "http://web/"),
        (
            "/full/path/original",
            308,
            "http://web/full-path-replacement",
        ),
        ("/see-other", 303, "http://web:8080/see-other"),
    ];
    for (path, code, location) in cases {
        let got = get_raw(mesh.client.outbound, "web", path).await?;
        assert_eq!(got, (code, location.to_string()), "GET {path}");
    }
    // Requests no redirect matches still reach the Service.
    let (code, who) = mesh.call("web").await?;
    assert_eq!(code, 200);
    assert!(who.starts_with("web-"), "{who}");
    Ok(())
}

async fn rewrites_reach_the_backend_with_the_new_host_and_path(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Sotw).await?;
    mesh.write(
        "backends.yaml",
        &plain_service("web-a", mesh.web_port, &[ip(22)]),
    )?;
    let rules = "    - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}
      backendRefs: [{name: web-a, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
      backendRefs: [{name: web-a, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /full}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: elsewhere.example, path: {type: ReplaceFullPath, replaceFullPath: /test}}
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-echo-set, value: set}]}
      backendRefs: [{name: web-a, port: 80}]
    - backendRefs: [{name: web-a, port: 80}]
";
    mesh.write(
        "route.yaml",
        &route("default", "web", "default", "web", rules),
    )?;
    wait_for_route(&mesh, "elsewhere.example").await?;
    let cases = [
        ("/prefix/one/two", "path=/one/two", "authority=web"),
        ("/prefix/one", "path=/one ", "authority=web"),
        ("/strip-prefix/three", "path=/three ", "authority=web"),
        ("/strip-prefix", "path=/ ", "authority=web"),
        (
            "/full/one/two",
            "path=/test ",
            "authority=elsewhere.example",
        ),
        ("/other", "path=/other ", "authority=web"),
    ];
    for (path, want_path, want_host) in cases {
        let r = testbed::http::get_via(mesh.client.outbound, &format!("http://web{path}")).await?;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        assert!(r.body.starts_with("web-1 "), "GET {path}: {}", r.body);
        assert!(r.body.contains(want_path), "GET {path}: {}", r.body);
        assert!(r.body.contains(want_host), "GET {path}: {}", r.body);
    }
    let r = testbed::http::get_via(mesh.client.outbound, "http://web/full").await?;
    assert!(r.body.contains("x-echo-set=set"), "{}", r.body);
    Ok(())
}

async fn a_consumer_route_changes_only_its_own_namespaces_callers(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    // A client pod in namespace consumer, with its sidecar.
    let placement = PodPlacement {
        namespace: "consumer".into(),
        pod: "cons-0".into(),
        service_account: "cons".into(),
        ip: ip(31),
        app_ip: app_ip(ip(31)),
    };
    mesh.write(
        "consumer-pod.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cons-0\n  namespace: consumer\n  labels:\n    app: cons\nspec:\n  serviceAccountName: cons\n  containers:\n    - name: app\nstatus:\n  podIP: {}\n",
            ip(31)
        ),
    )?;
    let mut consumer =
        Sidecar::start_on(proxy, &placement, &mesh.cp, mesh.stream, mesh.work.path()).await?;
    consumer.wait_live(LIVE).await?;
    // The producer route (every caller) and the consumer route (callers in consumer).
    let header = |name: &str, value: &str| {
        format!(
            "      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: {name}, value: {value}}}]}}}}]\n"
        )
    };
    mesh.write(
        "route.yaml",
        &route(
            "default",
            "web",
            "default",
            "web",
            &format!(
                "    - backendRefs: [{{name: web, port: 80}}]\n{}",
                header("x-echo-by", "producer")
            ),
        ),
    )?;
    mesh.write(
        "consumer-route.yaml",
        &route(
            "consumer",
            "web-consumer",
            "default",
            "web",
            &format!(
                "    - backendRefs: [{{name: web, namespace: default, port: 80}}]\n{}",
                header("x-echo-by", "consumer")
            ),
        ),
    )?;
    let (client, cons) = (&mesh.client, &consumer);
    let routes = "/config_dump?resource=dynamic_route_configs";
    wait_until(CONVERGE, "both routes in both sidecars", || async move {
        Ok(client.admin_get(routes).await?.contains("producer")
            && cons.admin_get(routes).await?.contains("consumer"))
    })
    .await?;
    for _ in 0..10 {
        let r = testbed::http::get_via(consumer.outbound, "http://web.default/").await?;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("x-echo-by=consumer"),
            "consumer: {}",
            r.body
        );
        let r = testbed::http::get_via(mesh.client.outbound, "http://web/").await?;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("x-echo-by=producer"), "default: {}", r.body);
    }
    // Without the consumer route, its namespace's callers get the producer route.
    std::fs::remove_file(mesh.manifests().join("consumer-route.yaml"))?;
    let cons = &consumer;
    wait_until(CONVERGE, "the consumer route gone", || async move {
        let r = testbed::http::get_via(cons.outbound, "http://web.default/").await?;
        Ok(r.body.contains("x-echo-by=producer"))
    })
    .await?;
    Ok(())
}

common::on_each_proxy!(
    redirects_answer_30x_with_the_location_the_spec_gives,
    rewrites_reach_the_backend_with_the_new_host_and_path,
    a_consumer_route_changes_only_its_own_namespaces_callers,
);
