//! xDS protocol cases driven from the control plane's side: a scripted ADS server sends
//! exactly the responses each case needs and reads what the proxy answers. Every case
//! runs against Envoy and against rudder-proxy with the same steps and assertions, over
//! SotW and over delta: what Envoy does is the reference.
//!
//! The cases: the initial wildcard and named subscriptions, a NACK followed by a
//! corrected push (the last good config serving meanwhile), a removed cluster still
//! referenced by a route, a route name changing under a listener, an SDS secret that
//! arrives after its cluster, hostile responses (a wrong type URL, duplicate names), and a
//! reconnect that reports what the proxy holds.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, TransportSocket};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, SocketAddress, address, config_source, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, TlsCertificate,
    UpstreamTlsContext, common_tls_context, secret,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use testbed::ads_script::{Conn, Request, ScriptedAds, bootstrap};
use testbed::procs::{Backend, DataPlane, Sidecar, free_port, wait_until};
use xds_types::XdsType;

const STEP: Duration = Duration::from_secs(15);

fn any(ty: XdsType, m: &impl Message) -> Any {
    Any {
        type_url: ty.type_url().into(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: 2,
        ..Default::default()
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn listener(name: &str, addr: SocketAddr, rds: &str) -> (String, Any) {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: rds.into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    .into(),
                value: Vec::new(),
            })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let l = Listener {
        name: name.into(),
        address: Some(socket(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager".into(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), any(XdsType::Listener, &l))
}

/// Route `name`: `/teapot` answers 418 when `teapot`, a `regex` route when given, and
/// everything else goes to `cluster`.
fn routes(name: &str, cluster: &str, teapot: bool, regex: Option<&str>) -> (String, Any) {
    let mut rs = Vec::new();
    if teapot {
        rs.push(Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/teapot".into())),
                ..Default::default()
            }),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 418,
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    if let Some(regex) = regex {
        rs.push(Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                    regex: regex.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 200,
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    rs.push(Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    });
    let rc = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: rs,
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), any(XdsType::Route, &rc))
}

fn eds_cluster(name: &str, tls: bool) -> (String, Any) {
    let sds = |n: &str| SdsSecretConfig {
        name: n.into(),
        sds_config: Some(ads()),
    };
    let transport_socket = tls.then(|| {
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds("default")],
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                        sds("ROOTCA"),
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext".into(),
                value: ctx.encode_to_vec(),
            })),
        }
    });
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        transport_socket,
        ..Default::default()
    };
    (name.into(), any(XdsType::Cluster, &c))
}

fn endpoints(name: &str, addr: SocketAddr) -> (String, Any) {
    let cla = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(addr)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    (name.into(), any(XdsType::Endpoint, &cla))
}

/// The workload certificate `default` and the bundle `ROOTCA` from a fresh CA.
fn secrets() -> anyhow::Result<Vec<(String, Any)>> {
    let now = std::time::SystemTime::now();
    let ca = ca::Authority::generate_root("cluster.local", now)?;
    let id = ca::SpiffeId::new("cluster.local", "default", "script")?;
    let cert = ca.issue(&id, Duration::from_secs(3600), now)?;
    let inline = |s: &str| envoy_types::pb::envoy::config::core::v3::DataSource {
        specifier: Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                s.as_bytes().to_vec(),
            ),
        ),
        ..Default::default()
    };
    let default = Secret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&cert.cert_chain_pem)),
            private_key: Some(inline(cert.private_key_pem())),
            ..Default::default()
        })),
    };
    let root = Secret {
        name: "ROOTCA".into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(&ca.trust_bundle_pem())),
                ..Default::default()
            },
        )),
    };
    Ok(vec![
        ("default".into(), any(XdsType::Secret, &default)),
        ("ROOTCA".into(), any(XdsType::Secret, &root)),
    ])
}

fn is(ty: XdsType) -> impl Fn(&Request) -> bool {
    move |r| r.type_url() == ty.type_url()
}

/// The ACK (or NACK, `nack`) of `nonce`.
async fn answer_to(
    conn: &mut Conn,
    ty: XdsType,
    nonce: &str,
    nack: bool,
) -> anyhow::Result<Request> {
    let what = format!(
        "the {} of {} {nonce}",
        if nack { "NACK" } else { "ACK" },
        ty.short()
    );
    let nonce = nonce.to_string();
    let (r, _) = conn
        .until(STEP, &what, move |r| {
            r.type_url() == ty.type_url() && r.nonce() == nonce
        })
        .await?;
    anyhow::ensure!(
        r.nack().is_some() == nack,
        "{what}: expected {}, got {r:?}",
        if nack { "a NACK" } else { "an ACK" }
    );
    Ok(r)
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let reply = testbed::http::get_via(addr, &format!("http://any{path}"))
        .await
        .with_context(|| format!("GET {path}"))?;
    Ok(reply.status)
}

/// The one scenario, step by step.
async fn scenario(proxy: DataPlane, delta: bool) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let mut server = ScriptedAds::start().await?;
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let _backend = Backend::start(backend_addr, "backend", work.path()).await?;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let boot = work.path().join("bootstrap.json");
    std::fs::write(
        &boot,
        bootstrap("script-0.default", server.addr, delta).to_string(),
    )?;
    let mut sidecar = Sidecar::launch(proxy, &boot, "script", work.path(), None, listen).await?;
    let result = steps(
        proxy,
        delta,
        &mut server,
        &mut sidecar,
        listen,
        backend_addr,
    )
    .await;
    if let Err(e) = result {
        let log = std::fs::read_to_string(&sidecar.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let running = sidecar.check_running();
        let listeners = sidecar.admin_get("/listeners").await;
        let stats = sidecar.admin_get("/stats?filter=listener").await;
        eprintln!("listeners: {listeners:?}\nstats: {stats:?}");
        anyhow::bail!(
            "{e:#}\nthe proxy: {running:?}\n{} log (last lines):\n{}",
            proxy.name(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

async fn steps(
    proxy: DataPlane,
    delta: bool,
    server: &mut ScriptedAds,
    sidecar: &mut Sidecar,
    listen: SocketAddr,
    backend_addr: SocketAddr,
) -> anyhow::Result<()> {
    let mut conn = server.accept(STEP).await?;
    anyhow::ensure!(
        conn.delta == delta,
        "the proxy picked the stream type the bootstrap says"
    );

    // 1. Wildcard CDS and LDS first, then the named EDS and RDS they lead to.
    conn.until(STEP, "a CDS request", is(XdsType::Cluster))
        .await?;
    let n = conn.send(
        XdsType::Cluster.type_url(),
        "c1",
        vec![eds_cluster("c1", false)],
        &[],
    )?;
    let (eds, _) = conn
        .until(STEP, "an EDS request for c1", |r| {
            r.type_url() == XdsType::Endpoint.type_url() && r.names() == ["c1"]
        })
        .await?;
    drop(eds);
    let ne = conn.send(
        XdsType::Endpoint.type_url(),
        "e1",
        vec![endpoints("c1", backend_addr)],
        &[],
    )?;
    answer_to(&mut conn, XdsType::Cluster, &n, false).await?;
    answer_to(&mut conn, XdsType::Endpoint, &ne, false).await?;
    let nl = conn.send(
        XdsType::Listener.type_url(),
        "l1",
        vec![listener("main", listen, "r1")],
        &[],
    )?;
    conn.until(STEP, "an RDS request for r1", |r| {
        r.type_url() == XdsType::Route.type_url() && r.names() == ["r1"]
    })
    .await?;
    let nr = conn.send(
        XdsType::Route.type_url(),
        "r1",
        vec![routes("r1", "c1", false, None)],
        &[],
    )?;
    answer_to(&mut conn, XdsType::Listener, &nl, false).await?;
    answer_to(&mut conn, XdsType::Route, &nr, false).await?;
    sidecar.wait_live(STEP).await?;
    wait_until(STEP, "the backend through the listener", || async move {
        Ok(get(listen, "/").await.ok() == Some(200))
    })
    .await?;
    a_new_cluster_past_the_first_sync(proxy, &mut conn, backend_addr).await?;

    // 2. A route the proxy must refuse (an invalid regex): NACKed, the last good routes
    // keep serving; the corrected push is ACKed and served.
    let bad = conn.send(
        XdsType::Route.type_url(),
        "r2",
        vec![routes("r1", "c1", true, Some("(unclosed"))],
        &[],
    )?;
    let nack = answer_to(&mut conn, XdsType::Route, &bad, true).await?;
    eprintln!("{}: NACK: {:?}", proxy.name(), nack.nack());
    if let Request::Sotw(r) = &nack {
        assert_eq!(
            r.version_info, "r1",
            "a NACK carries the last accepted version"
        );
    }
    assert_eq!(get(listen, "/").await?, 200, "the last good route serves");
    assert_eq!(
        get(listen, "/teapot").await?,
        200,
        "the refused route is not applied"
    );
    let good = conn.send(
        XdsType::Route.type_url(),
        "r3",
        vec![routes("r1", "c1", true, None)],
        &[],
    )?;
    answer_to(&mut conn, XdsType::Route, &good, false).await?;
    wait_until(STEP, "the corrected route", || async move {
        Ok(get(listen, "/teapot").await.ok() == Some(418))
    })
    .await?;

    // 3. Hostile responses: a cluster sent as a listener, and two clusters of one name.
    let wrong = conn.send(
        XdsType::Listener.type_url(),
        "l-bad",
        vec![eds_cluster("c1", false)],
        &[],
    )?;
    answer_to(&mut conn, XdsType::Listener, &wrong, true).await?;
    let dup = conn.send(
        XdsType::Cluster.type_url(),
        "c-dup",
        vec![eds_cluster("c1", false), eds_cluster("c1", false)],
        &[],
    )?;
    answer_to(&mut conn, XdsType::Cluster, &dup, true).await?;
    assert_eq!(get(listen, "/").await?, 200, "nothing changed");

    // 4. The route's cluster is removed while the route still names it: the proxy takes
    // the removal and the route fails with 503 until the cluster is back.
    let removed = if delta {
        conn.send(XdsType::Cluster.type_url(), "c2", vec![], &["c1"])?
    } else {
        conn.send(XdsType::Cluster.type_url(), "c2", vec![], &[])?
    };
    answer_to(&mut conn, XdsType::Cluster, &removed, false).await?;
    wait_until(STEP, "503 for the removed cluster", || async move {
        Ok(get(listen, "/").await.ok() == Some(503))
    })
    .await?;

    // 5. The listener now names route r9: the proxy asks for r9, and once the new
    // listener is in place no longer for r1.
    let n = conn.send(
        XdsType::Listener.type_url(),
        "l2",
        vec![listener("main", listen, "r9")],
        &[],
    )?;
    let (asked, _) = conn
        .until(STEP, "an RDS request naming r9", |r| {
            r.type_url() == XdsType::Route.type_url() && r.names().contains(&"r9".to_string())
        })
        .await?;
    let nr = conn.send(
        XdsType::Route.type_url(),
        "r9",
        vec![routes("r9", "c1", true, None)],
        &[],
    )?;
    answer_to(&mut conn, XdsType::Listener, &n, false).await?;
    let released = |r: &Request| match r {
        Request::Sotw(r) => r.type_url == XdsType::Route.type_url() && r.resource_names == ["r9"],
        Request::Delta(r) => r.resource_names_unsubscribe.contains(&"r1".to_string()),
    };
    if !released(&asked) {
        conn.until(STEP, "r1 released", released).await?;
    }
    drop(nr);

    conn.clear_backlog();
    // 6. A cluster with mTLS replaces c1 (which was removed): the proxy asks again for
    // its endpoints and, over SDS, for its secrets, and takes the cluster once both came.
    let n = conn.send(
        XdsType::Cluster.type_url(),
        "c3",
        vec![eds_cluster("c1", true)],
        &[],
    )?;
    // The ACK and the two subscriptions may come in any order; what matters is that
    // the cluster is taken and both were asked for.
    let (mut sent_eds, mut sent_secrets, mut acked) = (false, false, false);
    let deadline = tokio::time::Instant::now() + STEP;
    while !(sent_eds && sent_secrets && acked) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r = conn.next(left).await.map_err(|e| {
            anyhow::anyhow!(
                "the mTLS cluster (EDS sent {sent_eds}, secrets sent {sent_secrets}, ACKed {acked}): {e:#}"
            )
        })?;
        if r.type_url() == XdsType::Cluster.type_url() && r.nonce() == n {
            anyhow::ensure!(r.nack().is_none(), "the mTLS cluster was refused: {r:?}");
            acked = true;
        }
        if r.type_url() == XdsType::Endpoint.type_url() && r.names() == ["c1"] && !sent_eds {
            conn.send(
                XdsType::Endpoint.type_url(),
                "e2",
                vec![endpoints("c1", backend_addr)],
                &[],
            )?;
            sent_eds = true;
        }
        if r.type_url() == XdsType::Secret.type_url() && !sent_secrets {
            eprintln!("{}: SDS names {:?}", proxy.name(), r.names());
            conn.send(XdsType::Secret.type_url(), "s1", secrets()?, &[])?;
            sent_secrets = true;
        }
    }

    // 7. The server drops the stream: the proxy reconnects and says what it holds.
    conn.close();
    let mut conn = server.accept(STEP).await?;
    let (first, _) = conn
        .until(
            STEP,
            "a CDS request after the reconnect",
            is(XdsType::Cluster),
        )
        .await?;
    match &first {
        Request::Sotw(r) => assert_eq!(r.version_info, "c3", "SotW reports the held version"),
        Request::Delta(r) => assert!(
            r.initial_resource_versions.contains_key("c1"),
            "delta reports the held cluster: {r:?}"
        ),
    }
    assert_eq!(
        get(listen, "/teapot").await?,
        418,
        "serving through the reconnect"
    );
    sidecar.check_running()?;
    Ok(())
}

/// 1b. A new Cluster past the first sync. Envoy asks for its endpoints before it ACKs
/// the Clusters, and ACKs them only once the new one has warmed on its endpoints: what
/// lets Rudder send a route right behind those endpoints (`order::Warming` in
/// xds-server). rudder-proxy may answer in either order (the server then waits for the
/// ACK); both must take the cluster.
async fn a_new_cluster_past_the_first_sync(
    proxy: DataPlane,
    conn: &mut Conn,
    backend_addr: SocketAddr,
) -> anyhow::Result<()> {
    let clusters = || vec![eds_cluster("c1", false), eds_cluster("c2", false)];
    let n = conn.send(XdsType::Cluster.type_url(), "c1b", clusters(), &[])?;
    let cds_ack = {
        let n = n.clone();
        move |r: &Request| r.type_url() == XdsType::Cluster.type_url() && r.nonce() == n
    };
    let (_, before) = conn
        .until(STEP, "an EDS request for c2", |r| {
            r.type_url() == XdsType::Endpoint.type_url() && r.names().contains(&"c2".to_string())
        })
        .await?;
    if proxy == DataPlane::Envoy {
        anyhow::ensure!(
            !before.iter().any(&cds_ack),
            "Envoy ACKed the Clusters before it asked for c2's endpoints: {before:#?}"
        );
        let early = conn
            .until(Duration::from_millis(500), "a CDS ACK", &cds_ack)
            .await;
        anyhow::ensure!(
            early.is_err(),
            "Envoy ACKed the Clusters while c2 warmed: {early:?}"
        );
    }
    let ne = conn.send(
        XdsType::Endpoint.type_url(),
        "e1b",
        vec![endpoints("c1", backend_addr), endpoints("c2", backend_addr)],
        &[],
    )?;
    answer_to(conn, XdsType::Cluster, &n, false).await?;
    answer_to(conn, XdsType::Endpoint, &ne, false).await?;
    Ok(())
}

async fn script_over_sotw(proxy: DataPlane) -> anyhow::Result<()> {
    scenario(proxy, false).await
}

async fn script_over_delta(proxy: DataPlane) -> anyhow::Result<()> {
    scenario(proxy, true).await
}

common::on_each_proxy!(script_over_sotw, script_over_delta);

/// rudder-proxy's shutdown (Envoy exits on SIGTERM without draining, so this is its own):
/// SIGTERM stops new connections at once, a request in flight completes, and the
/// process exits 0 after `--drain-time-s`.
#[tokio::test]
async fn rudder_proxy_drains_on_sigterm() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let mut server = ScriptedAds::start().await?;
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let _backend =
        Backend::start_with(backend_addr, "slow", work.path(), &["--delay-ms", "800"]).await?;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let boot = work.path().join("bootstrap.json");
    std::fs::write(
        &boot,
        bootstrap("drain-0.default", server.addr, true).to_string(),
    )?;
    let mut sidecar = Sidecar::launch(
        DataPlane::RudderProxy,
        &boot,
        "drain",
        work.path(),
        None,
        listen,
    )
    .await?;
    let mut conn = server.accept(STEP).await?;
    conn.until(STEP, "a CDS request", is(XdsType::Cluster))
        .await?;
    conn.send(
        XdsType::Cluster.type_url(),
        "c1",
        vec![eds_cluster("c1", false)],
        &[],
    )?;
    conn.until(STEP, "an EDS request", is(XdsType::Endpoint))
        .await?;
    conn.send(
        XdsType::Endpoint.type_url(),
        "e1",
        vec![endpoints("c1", backend_addr)],
        &[],
    )?;
    conn.send(
        XdsType::Listener.type_url(),
        "l1",
        vec![listener("main", listen, "r1")],
        &[],
    )?;
    conn.until(STEP, "an RDS request", is(XdsType::Route))
        .await?;
    conn.send(
        XdsType::Route.type_url(),
        "r1",
        vec![routes("r1", "c1", false, None)],
        &[],
    )?;
    sidecar.wait_live(STEP).await?;
    wait_until(STEP, "the backend through the listener", || async move {
        Ok(get(listen, "/").await.ok() == Some(200))
    })
    .await?;
    let in_flight = tokio::spawn(async move { get(listen, "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sidecar.terminate()?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "no new connections once draining"
    );
    assert_eq!(in_flight.await??, 200, "the request in flight completed");
    let (status, took) = sidecar.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(5),
        "exited after the drain time: {took:?}"
    );
    Ok(())
}
