//! The chart's monitoring: a ServiceMonitor for the control plane and the Grafana
//! dashboard, both off by default. kubernetes-validate and k8s-openapi cannot know the
//! Prometheus Operator's CRD schema, so the ServiceMonitor is checked structurally
//! against the Service it must select. Every metric the dashboard names is checked
//! against what the real binaries export: the control plane's /metrics from a running
//! `xds-server` (a name read from the source could be renamed by a prefix or a
//! suffix the client library adds, like `_total`; the scrape cannot), and Envoy's from a
//! real Envoy's /stats/prometheus after it served requests, labels included.
//!
//! The sidecars' PodMonitor selects the label and the named port the injector gives
//! injected pods (checked against the injector's golden output); that Prometheus scrapes
//! them needs a cluster.

mod chart_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chart_support::{chart, kinds, of_kind, one, render};
use serde_json::{Value, json};
use testbed::procs::{ControlPlane, Proc, envoy_binary, free_port, wait_until};
use testbed::xds_client::{Creds, RawAds, SECRET, node};

fn dashboard_file() -> Value {
    let text = std::fs::read_to_string(chart("rudder").join("files/dashboards/rudder.json"))
        .expect("files/dashboards/rudder.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn monitoring_is_off_by_default_and_selects_the_metrics_service_when_on() {
    let docs = render(&[]);
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(of_kind(&docs, "ConfigMap").is_empty());

    let docs = render(&[
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.serviceMonitor.labels.release=kube-prometheus",
        "monitoring.dashboard.enabled=true",
    ]);
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus");
    assert_eq!(
        sm["spec"]["namespaceSelector"],
        json!({"matchNames": ["rudder-system"]})
    );
    // Its selector picks exactly the metrics Service, among the chart's Services.
    let wanted = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let selected: Vec<&Value> = of_kind(&docs, "Service")
        .into_iter()
        .filter(|s| wanted.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
        .collect();
    assert_eq!(selected.len(), 1, "{:?}", kinds(&docs));
    let svc = selected[0];
    assert_eq!(svc["metadata"]["name"], "rudder-metrics");
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let port = &endpoints[0];
    assert_eq!(port["path"], "/metrics");
    assert_eq!(port["interval"], "30s");
    let svc_port = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port["port"])
        .unwrap_or_else(|| panic!("the Service has no port {}", port["port"]));
    // ... which leads to the control plane's admin port, where /metrics is served.
    let dep = one(&docs, "Deployment");
    let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert_eq!(svc_port["targetPort"], "http-admin");
    assert!(args.contains("--admin-address=0.0.0.0:15014"), "{args}");

    let cm = one(&docs, "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "rudder-system");
    serde_json::from_value::<k8s_openapi::api::core::v1::ConfigMap>(cm.clone())
        .expect("a valid ConfigMap");
    let carried: Value =
        serde_json::from_str(cm["data"]["rudder.json"].as_str().expect("rudder.json"))
            .expect("JSON");
    assert_eq!(carried, dashboard_file());

    // The sidecars' PodMonitor selects what the injector labels, at the agent's named
    // port, where the proxy's stats are relayed.
    assert!(of_kind(&docs, "PodMonitor").is_empty(), "off unless asked");
    let docs = render(&["monitoring.podMonitor.enabled=true"]);
    let pm = one(&docs, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["spec"]["namespaceSelector"], json!({"any": true}));
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        json!({"rudder.dev/sidecar": "injected"})
    );
    // ... and the injected agents are told to relay the stats (off otherwise).
    let args = |docs: &[Value]| {
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].to_string()
    };
    assert!(args(&docs).contains("--sidecar-proxy-stats"));
    assert!(!args(&render(&[])).contains("--sidecar-proxy-stats"));
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "rudder-status");
    assert_eq!(endpoint["path"], "/stats/prometheus");
    // What an injected pod looks like (the injector's golden output) has that label and
    // that port.
    let injected = std::fs::read_to_string(
        testbed::procs::workspace_root().join("xds-server/tests/inject/plain.golden.yaml"),
    )
    .expect("the injector's golden pod");
    assert!(
        injected.contains("rudder.dev/sidecar: injected"),
        "{injected}"
    );
    assert!(injected.contains("name: rudder-status"), "{injected}");
}

/// Aggregations and operators, which may stand before `by (...)` rather than `(`.
const PROMQL_WORDS: [&str; 20] = [
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
];

/// A PromQL expression's metric names and label names (from selectors and by/without
/// groups). A loose reader, enough for the dashboard's expressions.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut braces, mut grouping) = (0, 0usize, false);
    let mut group_next = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            continue;
        }
        match c {
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '(' if group_next => {
                grouping = true;
                group_next = false;
            }
            ')' if grouping => grouping = false,
            _ => {}
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            if braces > 0 || grouping {
                labels.insert(word);
            } else if word == "by" || word == "without" {
                group_next = true;
            } else if next != Some('(') && !PROMQL_WORDS.contains(&word.as_str()) {
                metrics.insert(word);
            }
            continue;
        }
        i += 1;
    }
    (metrics, labels)
}

/// Every expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let d = dashboard_file();
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// A Prometheus text exposition: sample name -> label names seen on it.
fn samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            // A family without samples yet still names what it will export.
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let names: Vec<String> = match kind {
                "counter" if !name.ends_with("_total") => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name.to_string()],
            };
            for n in names {
                out.entry(n).or_default();
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let entry = out.entry(line[..name_end].to_string()).or_default();
        if let (Some(open), Some(close)) = (line.find('{'), line.find('}')) {
            for pair in line[open + 1..close].split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    entry.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn the_dashboard_reader_finds_metrics_and_labels() {
    let (m, l) = promql_names(
        r#"histogram_quantile(0.99, sum by (le, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_response_code_class="5"}[$__rate_interval]))) / sum(rudder_x)"#,
    );
    assert_eq!(
        m,
        BTreeSet::from([
            "envoy_cluster_upstream_rq_time_bucket".into(),
            "rudder_x".into()
        ])
    );
    assert_eq!(
        l,
        BTreeSet::from([
            "envoy_cluster_name".into(),
            "envoy_response_code_class".into(),
            "le".into()
        ])
    );
}

#[tokio::test]
async fn every_control_plane_metric_the_dashboard_names_is_one_the_server_exports()
-> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests)?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    // Labelled families show only once they have a sample: a proxy connects and rejects
    // what it is sent (the trust bundle, sent to every proxy), so the per-type and
    // per-proxy families are exported too.
    let creds = Creds::issue(&cp.ca_dir(), "default", "stats", &work.path().join("creds"))?;
    let _proxy = RawAds::delta_rejecting(
        creds.channel(cp.xds).await?,
        node("stats-0.default", "default", "stats-0", "stats"),
        SECRET,
    );
    let admin = cp.admin;
    wait_until(
        Duration::from_secs(20),
        "a NACK in /metrics",
        || async move {
            let text = testbed::http::get_ok(admin, "/metrics").await?;
            Ok(text.contains("rudder_xds_nacks_total{"))
        },
    )
    .await?;
    let exported = samples(&testbed::http::get_ok(admin, "/metrics").await?);
    let mut named = BTreeSet::new();
    for expr in dashboard_exprs() {
        let (metrics, _) = promql_names(&expr);
        for m in metrics.into_iter().filter(|m| m.starts_with("rudder_")) {
            assert!(
                exported.contains_key(&m),
                "the dashboard names {m}, which xds-server does not export ({expr}); it exports {:?}",
                exported.keys().collect::<Vec<_>>()
            );
            named.insert(m);
        }
    }
    // Convergence, NACKs and per-proxy sync are all on it.
    for m in [
        "rudder_convergence_seconds_bucket",
        "rudder_xds_nacks_total",
        "rudder_connected_proxies",
        "rudder_initial_sync_seconds_bucket",
    ] {
        assert!(named.contains(m), "the dashboard lacks {m}");
    }
    Ok(())
}

/// A bootstrap for a real Envoy: ADS towards a port nobody serves (so it has its xDS
/// stats), a front listener routing to cluster `back`, which is a second listener that
/// answers 503.
fn envoy_bootstrap(admin_port: u16, front: u16, back: u16, dead: u16) -> Value {
    let hcm = |prefix: &str, action: Value| {
        let mut route = json!({"match": {"prefix": "/"}});
        if let (Some(r), Some(a)) = (route.as_object_mut(), action.as_object()) {
            r.extend(a.clone());
        }
        json!({"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": prefix,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]})
    };
    let addr = |port: u16| json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
    let cluster = |name: &str, port: u16| {
        json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(port)}}]}]}})
    };
    let mut xds = cluster("xds", dead);
    xds["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}});
    let ads = json!({"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0.2s"});
    json!({
        "node": {"id": "stats", "cluster": "stats"},
        "admin": {"address": addr(admin_port)},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "cds_config": ads, "lds_config": ads,
        },
        "static_resources": {
            "listeners": [
                {"name": "front", "address": addr(front),
                 "filter_chains": [hcm("front", json!({"route": {"cluster": "back"}}))]},
                {"name": "back", "address": addr(back),
                 "filter_chains": [hcm("back", json!({"direct_response": {"status": 503}}))]},
            ],
            "clusters": [cluster("back", back), xds],
        }
    })
}

#[tokio::test]
async fn every_envoy_metric_and_label_the_dashboard_names_is_one_envoy_exports()
-> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (admin, front, back, dead) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let config = work.path().join("envoy.json");
    std::fs::write(
        &config,
        envoy_bootstrap(admin, front, back, dead).to_string(),
    )?;
    let mut cmd = std::process::Command::new(envoy_binary()?);
    cmd.arg("-c")
        .arg(&config)
        .args(["--base-id", &admin.to_string(), "--disable-hot-restart"]);
    let mut envoy = Proc::spawn_logged("envoy", cmd, &work.path().join("envoy.log"))?;
    let front_addr = std::net::SocketAddr::from(([127, 0, 0, 1], front));
    let log = work.path().join("envoy.log");
    let served = wait_until(Duration::from_secs(20), "Envoy's front listener", || {
        let running = envoy.check_running();
        async move {
            running?;
            Ok(testbed::http::get_via(front_addr, "/")
                .await
                .map(|r| r.status == 503)
                .unwrap_or(false))
        }
    })
    .await;
    if let Err(e) = served {
        anyhow::bail!(
            "{e:#}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let exported = samples(&testbed::http::get_ok(admin_addr, "/stats/prometheus").await?);
    // Added by Prometheus from the target, not by Envoy.
    let target_labels = ["namespace", "pod"];
    let mut named = BTreeSet::new();
    for expr in dashboard_exprs() {
        let (metrics, labels) = promql_names(&expr);
        let envoy_metrics: Vec<String> = metrics
            .into_iter()
            .filter(|m| m.starts_with("envoy_"))
            .collect();
        if envoy_metrics.is_empty() {
            continue;
        }
        let mut have: BTreeSet<String> = target_labels.iter().map(|s| s.to_string()).collect();
        for m in &envoy_metrics {
            let Some(l) = exported.get(m) else {
                anyhow::bail!("the dashboard names {m}, which Envoy does not export ({expr})");
            };
            have.extend(l.iter().cloned());
            named.insert(m.clone());
        }
        for l in labels {
            assert!(
                have.contains(&l),
                "label {l} is on none of {envoy_metrics:?} in Envoy's output ({expr})"
            );
        }
    }
    for m in [
        "envoy_cluster_upstream_rq_total",
        "envoy_http_downstream_rq_total",
        "envoy_cluster_upstream_rq_time_bucket",
    ] {
        assert!(named.contains(m), "the dashboard lacks {m}");
    }
    envoy.kill();
    Ok(())
}
