//! Listeners of an intercepted (injected) pod, whose TCP the init container's iptables
//! rules redirect to Envoy (see the injector). They take connections by original
//! destination:
//!
//! - outbound (`0.0.0.0:OUTBOUND_PORT`), one chain per destination (see `address` for
//!   the choices and their cost):
//!   - a Service's cluster IP and port: a TCP port is carried as TCP over mTLS to the
//!     service (so databases keep working); an HTTP port goes to a connection manager
//!     with that port's own route table, so the address decides the Service, not the
//!     Host header;
//!   - a mesh pod's own address and target port: TCP over mTLS to that pod, no Service
//!     rule applied (a headless Service's pods: their own clusters, HTTP by Host as in
//!     the explicit-proxy mode);
//!   - everything else passes through untouched to where it was going (`passthrough`,
//!     an original-destination cluster), so egress keeps working; connections to the
//!     sidecar's own port are the explicit-proxy mode's (`curl -x`);
//! - inbound (`0.0.0.0:INBOUND_PORT`, 15006 by default): one filter chain per port the
//!   pod serves, by destination port, with the same mTLS (STRICT or PERMISSIVE) and
//!   filters as the explicit mode's per-port listeners, and one per port a TrafficTarget
//!   names that no Service does (to `inbound-passthrough`, under that port's rules);
//!   other ports pass through to the app (`inbound-passthrough`).
//!
//! The outbound listener depends on the Services the pod's view sees and on their ready
//! pods, so it is rebuilt when a Service or an endpoint changes (the builder does so
//! for intercepted proxies).

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{BindConfig, CidrRange};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    filter_chain_match::ConnectionSourceType, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::google::protobuf::UInt32Value;

use xds_types::XdsType;

use crate::envoy::address;
use crate::envoy::filters::{
    inbound_filters, inbound_tcp_proxy, outbound_hcm, outbound_hcm_with, tcp_proxy, tls_inspector,
};
use crate::envoy::pod_address;
use crate::envoy::tls;
use crate::identity::{INBOUND_SOURCE_V4, INBOUND_SOURCE_V6, ProxyIdentity, view_key};
use crate::mesh::MtlsMode;
use crate::model::{Kind, Model, ObjectKey, Protocol, ViewKey};
use crate::names;
use crate::output::{Body, Resource};
use crate::render::endpoint;
use crate::render::{protos, rbac};
use crate::routing::authz::InboundAuthz;

/// The inbound listener's name.
pub const INBOUND_LISTENER: &str = "inbound";
/// Where outbound connections to anything outside the mesh go: their original
/// destination.
pub const PASSTHROUGH: &str = "passthrough";
/// Where inbound connections to ports the mesh does not serve go.
pub const INBOUND_PASSTHROUGH: &str = "inbound-passthrough";
/// A cluster without endpoints: connections sent there are closed.
pub const BLACKHOLE: &str = "blackhole";
/// Envoy's admin port in injected pods.
pub const ADMIN_PORT: u16 = 15000;

fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(protos::any(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

fn cidr(ip: IpAddr) -> CidrRange {
    CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value {
            value: if ip.is_ipv4() { 32 } else { 128 },
        }),
    }
}

fn passthrough_cluster(name: &str) -> Resource {
    let cluster = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(protos::millis(1_000)),
        ..Default::default()
    };
    Resource {
        kind: XdsType::Cluster,
        name: name.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Cluster(Box::new(cluster)),
    }
}

/// The inbound passthrough: to the original destination (the pod's own address) from
/// the inbound source, like the inbound clusters.
fn inbound_passthrough_cluster() -> Resource {
    let mut r = passthrough_cluster(INBOUND_PASSTHROUGH);
    if let Body::Cluster(c) = &mut r.body {
        c.upstream_bind_config = Some(inbound_bind());
    }
    r
}

fn chain(name: String, m: FilterChainMatch, filter: Filter) -> FilterChain {
    chain_of(name, m, vec![filter])
}

fn chain_of(name: String, m: FilterChainMatch, filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        filter_chain_match: Some(m),
        filters,
        name,
        ..Default::default()
    }
}

fn any_addr(like: Option<IpAddr>) -> IpAddr {
    match like {
        Some(IpAddr::V6(_)) => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0, 0, 0, 0]),
    }
}

/// What a chain by original destination does with a connection.
enum Action {
    /// Carries it as TCP to a cluster.
    Tcp(String),
    /// Routes its requests by one Service port's own route table.
    Http(String),
}

/// Targets by original destination: (address, port) -> (chain name, action).
type Targets = BTreeMap<(IpAddr, u16), (String, Action)>;

/// The outbound listener and its passthrough cluster.
pub(crate) fn outbound(model: &Model, proxy: &ProxyIdentity) -> Vec<Resource> {
    let (targets, http, sources) = destinations(model, &view_key(model, proxy));
    let mut refs = vec![PASSTHROUGH.to_string()];
    let chains = outbound_chains(targets, http, proxy, &mut refs);
    refs.sort();
    refs.dedup();
    let listener = Listener {
        name: names::OUTBOUND_LISTENER.into(),
        address: Some(protos::socket(any_addr(proxy.pod_ip), proxy.outbound_port)),
        listener_filters: vec![original_dst()],
        filter_chains: chains,
        default_filter_chain: Some(FilterChain {
            filters: vec![tcp_proxy(PASSTHROUGH.into(), PASSTHROUGH.into())],
            name: PASSTHROUGH.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        Resource {
            kind: XdsType::Listener,
            name: names::OUTBOUND_LISTENER.into(),
            refs,
            sources,
            body: Body::Listener(Box::new(listener)),
        },
        passthrough_cluster(PASSTHROUGH),
    ]
}

/// Where the Services a view sees are called: targets by original destination (cluster
/// IPs by port, then pods by their own address and port, see `address`), the addresses
/// of headless Services' HTTP pods (routed by Host; sorted, each once), and the
/// Services.
fn destinations(model: &Model, view: &ViewKey) -> (Targets, Vec<IpAddr>, Vec<ObjectKey>) {
    let mut targets = Targets::new();
    let mut http: Vec<IpAddr> = Vec::new();
    let mut sources = Vec::new();
    let seen: Vec<_> = model
        .services()
        .filter(|s| view.sees(s) && s.external_name.is_none())
        .collect();
    for svc in &seen {
        sources.push(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name));
        for port in &svc.ports {
            let is_tcp = port.protocol == Protocol::Tcp;
            if let Some(ip) = svc.cluster_ip {
                let name = format!("{}:{}", svc.fqdn(), port.port);
                let action = if is_tcp {
                    Action::Tcp(names::outbound_cluster(svc, port.port))
                } else {
                    Action::Http(address::port_route_name(svc, port.port))
                };
                targets.entry((ip, port.port)).or_insert((name, action));
            }
            if svc.headless {
                for addr in endpoint::pod_addresses(model, svc, port) {
                    if is_tcp {
                        targets.entry((addr.ip, addr.port)).or_insert((
                            format!("{}:{}|{}", svc.fqdn(), addr.port, addr.ip),
                            Action::Tcp(names::pod_cluster(svc, addr.port, addr.ip)),
                        ));
                    } else {
                        http.push(addr.ip);
                    }
                }
            }
        }
    }
    http.sort();
    http.dedup();
    for svc in &seen {
        for ((ip, port), name) in address::pod_targets(model, svc) {
            if http.binary_search(&ip).is_err() {
                targets
                    .entry((ip, port))
                    .or_insert((name, Action::Tcp(pod_address::POD_ADDRESS_CLUSTER.into())));
            }
        }
    }
    (targets, http, sources)
}

/// The outbound listener's filter chains: targets by original destination, the
/// explicit mode's port, headless pods' HTTP addresses (on ports targets use, and the
/// rest); the clusters they route to are added to `refs`.
fn outbound_chains(
    targets: Targets,
    http: Vec<IpAddr>,
    proxy: &ProxyIdentity,
    refs: &mut Vec<String>,
) -> Vec<FilterChain> {
    let outbound_port = proxy.outbound_port;
    // Envoy narrows chains by destination port before addresses and does not step
    // back: on a port some target uses, the HTTP addresses need a chain of their own.
    let mut http_on_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for (_, port) in targets.keys() {
        let ips: Vec<IpAddr> = http
            .iter()
            .filter(|ip| !targets.contains_key(&(**ip, *port)))
            .copied()
            .collect();
        if !ips.is_empty() {
            http_on_port.insert(*port, ips);
        }
    }
    let mut chains: Vec<FilterChain> = targets
        .into_iter()
        .map(|((ip, port), (name, action))| {
            let filter = match action {
                Action::Tcp(cluster) => {
                    refs.push(cluster.clone());
                    // Pods share one set of statistics: a proxy keeps none per pod.
                    let stat = if cluster == pod_address::POD_ADDRESS_CLUSTER {
                        cluster.clone()
                    } else {
                        name.clone()
                    };
                    tcp_proxy(stat, cluster)
                }
                Action::Http(route) => outbound_hcm_with(&route),
            };
            chain(
                name,
                FilterChainMatch {
                    destination_port: Some(UInt32Value {
                        value: u32::from(port),
                    }),
                    prefix_ranges: vec![cidr(ip)],
                    ..Default::default()
                },
                filter,
            )
        })
        .collect();
    // Connections to the sidecar's own port (an app inside the pod using it as an
    // explicit proxy, `curl -x`, HTTP CONNECT) are the explicit mode's; this also keeps
    // the route table subscribed when no Service has an HTTP address.
    chains.push(chain(
        "explicit".into(),
        FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(outbound_port),
            }),
            // Only the pod itself (the inbound listener closes this port from outside).
            source_type: ConnectionSourceType::SameIpOrLoopback as i32,
            ..Default::default()
        },
        outbound_hcm(proxy),
    ));
    for (port, ips) in http_on_port {
        chains.push(chain(
            format!("http|{port}"),
            FilterChainMatch {
                destination_port: Some(UInt32Value {
                    value: u32::from(port),
                }),
                prefix_ranges: ips.into_iter().map(cidr).collect(),
                ..Default::default()
            },
            outbound_hcm(proxy),
        ));
    }
    // An empty range list would match every address: only with mesh HTTP addresses.
    if !http.is_empty() {
        chains.push(chain(
            "http".into(),
            FilterChainMatch {
                prefix_ranges: http.into_iter().map(cidr).collect(),
                ..Default::default()
            },
            outbound_hcm(proxy),
        ));
    }
    chains
}

/// The chains of one inbound port: mTLS (guarded, see [`tls::guarded_tls`]) and, under
/// PERMISSIVE, plain text (closed when no rule admits it).
fn port_chains(
    port: u16,
    protocol: Protocol,
    filters: Vec<Filter>,
    authz: &InboundAuthz,
    trust_domain: &str,
    permissive: bool,
) -> Vec<FilterChain> {
    let m = |transport: &str| FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        transport_protocol: transport.into(),
        ..Default::default()
    };
    let guard = tls::guarded_tls(protocol, authz, trust_domain);
    let mut mtls = chain_of(
        format!("mtls|{port}"),
        m(if permissive { "tls" } else { "" }),
        filters.clone(),
    );
    mtls.transport_socket = Some(guard.tls);
    let mut chains = vec![mtls];
    if permissive {
        // Plain text no rule admits is closed, never proxied (nor passed through).
        let plain = if guard.plain_text {
            filters
        } else {
            vec![tcp_proxy(BLACKHOLE.into(), BLACKHOLE.into())]
        };
        chains.push(chain_of(
            format!("plaintext|{port}"),
            m("raw_buffer"),
            plain,
        ));
    }
    chains
}

/// The inbound listener for the ports the pod serves (on the any-address of the pod
/// IP's family: the rules redirect an IPv6 pod's inbound to `[::1]`), and its
/// passthrough cluster.
pub(crate) fn inbound(
    proxy: &ProxyIdentity,
    pod_ip: IpAddr,
    ports: &[(u16, Protocol, InboundAuthz, Vec<ObjectKey>)],
    named: &[(u16, InboundAuthz)],
    rest: &InboundAuthz,
    trust_domain: &str,
    mode: MtlsMode,
) -> Vec<Resource> {
    let permissive = mode == MtlsMode::Permissive;
    let mut chains = Vec::new();
    let mut refs = vec![INBOUND_PASSTHROUGH.to_string(), BLACKHOLE.to_string()];
    // The pod's own machinery, which nothing from outside may reach through this
    // listener: the sidecar's outbound port (an open proxy speaking with the pod's
    // identity), this port itself (a loop), Envoy's admin port.
    let mut closed = vec![proxy.outbound_port, proxy.inbound_port, ADMIN_PORT];
    closed.sort_unstable();
    closed.dedup();
    for port in closed {
        if ports.iter().any(|(p, _, _, _)| *p == port) {
            continue;
        }
        chains.push(chain(
            format!("closed|{port}"),
            FilterChainMatch {
                destination_port: Some(UInt32Value {
                    value: u32::from(port),
                }),
                ..Default::default()
            },
            tcp_proxy(BLACKHOLE.into(), BLACKHOLE.into()),
        ));
    }
    let mut sources = Vec::new();
    for (port, protocol, authz, srcs) in ports {
        sources.extend(srcs.iter().cloned());
        refs.push(names::inbound(*port));
        let filters = inbound_filters(*port, *protocol, authz);
        chains.extend(port_chains(
            *port,
            *protocol,
            filters,
            authz,
            trust_domain,
            permissive,
        ));
    }
    // Ports no Service names but a TrafficTarget does: their own chains, so their guard
    // (the handshake, plain text) holds before the app is connected, as on served ports.
    for (port, authz) in named {
        if ports.iter().any(|(p, _, _, _)| p == port) {
            continue;
        }
        sources.extend(authz.sources());
        let filters = rbac::inbound_network_filter(authz, &names::inbound(*port))
            .into_iter()
            .chain([inbound_tcp_proxy(
                INBOUND_PASSTHROUGH.into(),
                INBOUND_PASSTHROUGH.into(),
            )])
            .collect();
        chains.extend(port_chains(
            *port,
            Protocol::Tcp,
            filters,
            authz,
            trust_domain,
            permissive,
        ));
    }
    sources.extend(rest.sources());
    sources.sort();
    sources.dedup();
    let mut listener_filters = vec![original_dst()];
    if permissive {
        listener_filters.push(tls_inspector());
    }
    let listener = Listener {
        name: INBOUND_LISTENER.into(),
        address: Some(protos::socket(any_addr(Some(pod_ip)), proxy.inbound_port)),
        listener_filters,
        filter_chains: chains,
        // Ports no Service names pass through to the app: with mTLS under STRICT (the
        // peer must be a mesh workload), as they come under PERMISSIVE.
        // Under PERMISSIVE it cannot tell who calls: closed when no rule admits plain
        // text; under STRICT a caller the rules do not admit fails the handshake.
        default_filter_chain: Some(FilterChain {
            filters: if permissive && !rest.admits_plain_text() {
                vec![tcp_proxy(BLACKHOLE.into(), BLACKHOLE.into())]
            } else {
                rbac::inbound_network_filter(rest, INBOUND_PASSTHROUGH)
                    .into_iter()
                    .chain([inbound_tcp_proxy(
                        INBOUND_PASSTHROUGH.into(),
                        INBOUND_PASSTHROUGH.into(),
                    )])
                    .collect()
            },
            transport_socket: (!permissive)
                .then(|| tls::guarded_tls(Protocol::Tcp, rest, trust_domain).tls),
            name: INBOUND_PASSTHROUGH.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        Resource {
            kind: XdsType::Listener,
            name: INBOUND_LISTENER.into(),
            refs,
            sources,
            body: Body::Listener(Box::new(listener)),
        },
        inbound_passthrough_cluster(),
        blackhole_cluster(),
    ]
}

/// Where an intercepted sidecar connects to its app from: the inbound source address
/// of the app address's family, which the init container's rules let through to the
/// pod (any other connection of the proxy to its own pod goes to the inbound port).
pub(crate) fn inbound_bind() -> BindConfig {
    protos::bind(&[INBOUND_SOURCE_V4.into(), INBOUND_SOURCE_V6.into()])
}

fn blackhole_cluster() -> Resource {
    let cluster = Cluster {
        name: BLACKHOLE.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(protos::millis(1_000)),
        ..Default::default()
    };
    Resource {
        kind: XdsType::Cluster,
        name: BLACKHOLE.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Cluster(Box::new(cluster)),
    }
}
