//! The connection manager routes as Envoy does: by `Host` and by the authority of an
//! absolute-form request, to weighted clusters, with header edits, direct responses,
//! redirects, 404 without a route and 503 without the cluster.

mod http_support;

use std::sync::Arc;

use bytes::Bytes;
use conformance::config::route::{
    Action, AppendAction, Destination, HeaderAdd, HeaderEdits, Redirect, RedirectPath,
    WeightedCluster,
};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use http_support::*;

#[tokio::test]
async fn routes_by_host_and_by_the_absolute_form_authority() {
    let a = echo("a").await;
    let b = echo("b").await;
    let snap = snapshot(
        vec![
            vhost(
                "a",
                &["a", "a:80"],
                vec![route("/", Action::Route(Arc::new(to_cluster("ca"))))],
            ),
            vhost(
                "b",
                &["b", "b:80"],
                vec![route("/", Action::Route(Arc::new(to_cluster("cb"))))],
            ),
            vhost(
                "gone",
                &["gone"],
                vec![route("/", Action::Route(Arc::new(to_cluster("missing"))))],
            ),
        ],
        vec![cluster("ca", &[a]), cluster("cb", &[b])],
    );
    let p = proxy(snap, hcm(false)).await;

    let seen = get(p.addr, "a", "/x?q=1").await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-backend"), Some("a"));
    assert!(seen.body.contains("GET /x?q=1 HTTP/1.1"), "{}", seen.body);

    let seen = get(p.addr, "a:80", "/").await;
    assert_eq!(seen.header("x-backend"), Some("a"));

    // Explicit proxy: the authority of the absolute URI routes; upstream gets origin form.
    let req = Request::get("http://b/y")
        .header("host", "b")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = send(p.addr, req).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-backend"), Some("b"));
    assert!(seen.body.contains("GET /y HTTP/1.1"), "{}", seen.body);
    assert!(seen.body.contains("host: b\n"), "{}", seen.body);
    assert!(
        !seen.body.contains("x-envoy-original-path"),
        "{}",
        seen.body
    );

    assert_eq!(get(p.addr, "nobody", "/").await.status, 404);
    let missing = get(p.addr, "gone", "/").await;
    assert_eq!(missing.status, 503);
    assert_eq!(p.counter("http.outbound.downstream_rq_total"), 5);
    assert_eq!(p.counter("http.outbound.downstream_rq_2xx"), 3);
    assert_eq!(p.counter("http.outbound.downstream_rq_5xx"), 1);
    assert_eq!(p.counter("cluster.ca.upstream_rq_200"), 2);
    assert!(p.counter("cluster.ca.upstream_cx_total") >= 1);
    assert!(p.counter(&format!("cluster.ca.endpoint.{a}.cx_total")) >= 1);
}

#[tokio::test]
async fn a_missing_route_configuration_is_404() {
    let p = proxy(Default::default(), hcm(false)).await;
    assert_eq!(get(p.addr, "a", "/").await.status, 404);
}

#[tokio::test]
async fn weighted_clusters_split_requests_by_weight() {
    let a = echo("a").await;
    let b = echo("b").await;
    let weighted = |name: &str, weight| WeightedCluster {
        name: name.into(),
        weight,
        headers: HeaderEdits::default(),
    };
    let mut action = to_cluster("unused");
    action.destination = Destination::Weighted(vec![weighted("ca", 1), weighted("cb", 3)]);
    let snap = snapshot(
        vec![vhost(
            "w",
            &["*"],
            vec![route("/", Action::Route(Arc::new(action)))],
        )],
        vec![cluster("ca", &[a]), cluster("cb", &[b])],
    );
    let p = proxy(snap, hcm(false)).await;
    let mut to_b = 0;
    for _ in 0..400 {
        if get(p.addr, "w", "/").await.header("x-backend") == Some("b") {
            to_b += 1;
        }
    }
    assert!(
        (240..360).contains(&to_b),
        "about 3/4 of 400 go to b: {to_b}"
    );
}

fn add(name: &'static str, value: &'static str) -> HeaderAdd {
    HeaderAdd {
        name: HeaderName::from_static(name),
        value: HeaderValue::from_static(value),
        append: AppendAction::OverwriteIfExistsOrAdd,
    }
}

#[tokio::test]
async fn header_edits_ids_and_hop_by_hop_headers() {
    let a = echo("a").await;
    let mut action = to_cluster("unused");
    action.destination = Destination::Weighted(vec![WeightedCluster {
        name: "ca".into(),
        weight: 1,
        headers: HeaderEdits {
            request_add: vec![add("x-backend-edit", "1")],
            ..Default::default()
        },
    }]);
    let mut r = route("/", Action::Route(Arc::new(action)));
    r.headers = HeaderEdits {
        request_add: vec![add("x-route", "r"), add("x-level", "route")],
        request_remove: vec!["x-secret".into()],
        response_add: vec![add("x-route-resp", "r")],
        response_remove: vec!["x-backend".into()],
    };
    let mut vh = vhost("h", &["*"], vec![r]);
    vh.headers = HeaderEdits {
        request_add: vec![add("x-level", "vhost")],
        response_add: vec![add("x-vhost-resp", "v")],
        ..Default::default()
    };
    let p = proxy(snapshot(vec![vh], vec![cluster("ca", &[a])]), hcm(false)).await;
    let req = Request::get("/")
        .header("host", "h")
        .header("x-secret", "s")
        .header("x-forwarded-client-cert", "forged")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = send(p.addr, req).await;
    assert_eq!(seen.status, 200);
    let body = &seen.body;
    assert!(body.contains("x-backend-edit: 1\n"), "{body}");
    assert!(body.contains("x-route: r\n"), "{body}");
    assert!(
        body.contains("x-level: vhost\n"),
        "the virtual host edits last: {body}"
    );
    assert!(!body.contains("x-secret"), "{body}");
    assert!(!body.contains("x-forwarded-client-cert"), "{body}");
    assert!(!body.contains("x-hop"), "{body}");
    assert!(body.contains("x-request-id: "), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(
        body.contains("x-envoy-expected-rq-timeout-ms: 15000\n"),
        "{body}"
    );
    assert_eq!(seen.header("x-route-resp"), Some("r"));
    assert_eq!(seen.header("x-vhost-resp"), Some("v"));
    assert_eq!(seen.header("x-backend"), None);
}

#[tokio::test]
async fn direct_responses_and_redirects() {
    let redirect = Redirect {
        scheme: Some("https".into()),
        host: None,
        port: None,
        path: RedirectPath::Prefix("/v2".into()),
        status: 301,
        strip_query: false,
    };
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![
                route("/old", Action::Redirect(Arc::new(redirect))),
                route(
                    "/moved",
                    Action::Redirect(Arc::new(Redirect {
                        scheme: None,
                        host: Some("example.org".into()),
                        port: None,
                        path: RedirectPath::Prefix("/".into()),
                        status: 302,
                        strip_query: false,
                    })),
                ),
                route(
                    "/",
                    Action::Direct {
                        status: 418,
                        body: Some(Bytes::from_static(b"teapot")),
                    },
                ),
            ],
        )],
        vec![],
    );
    let p = proxy(snap, hcm(false)).await;
    let seen = get(p.addr, "web:443", "/old/x?y=1").await;
    assert_eq!(seen.status, 301);
    assert_eq!(seen.header("location"), Some("https://web/v2/x?y=1"));
    let req = Request::get("/moved/a?b")
        .header("host", "web:8080")
        .header("x-forwarded-proto", "https")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = send(p.addr, req).await;
    assert_eq!(seen.status, 302);
    assert_eq!(seen.header("location"), Some("https://example.org/a?b"));
    let seen = get(p.addr, "web", "/tea").await;
    assert_eq!(seen.status, 418);
    assert_eq!(seen.body, "teapot");
}
