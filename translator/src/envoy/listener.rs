//! Per-proxy listeners. Outbound: one HTTP listener on the pod IP that routes by
//! authority, so it serves apps using it as an explicit HTTP proxy (HTTP CONNECT for
//! TCP ports; a pod's own `IP:PORT` through the pod-address cluster, see `address`), or,
//! for an intercepted pod, the listener by original destination (`intercept`). Inbound:
//! one listener per port the pod serves, forwarding to the local app over a static
//! cluster. Every proxy also holds the pod-address cluster.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use xds_types::XdsType;

use crate::envoy::cluster;
use crate::envoy::filters::{inbound_filters, outbound_hcm, tls_inspector};
use crate::envoy::intercept;
use crate::envoy::pod_address;
use crate::envoy::tls;
use crate::identity::{POD_ADDRESS, ProxyIdentity};
use crate::mesh::{MeshConfig, MtlsMode};
use crate::model::{Model, Protocol};
use crate::names;
use crate::output::{Body, Output, Resource};
use crate::policy::authz::{self, Destination};
use crate::render::protos;
use crate::routing::authz::InboundAuthz;
use crate::serving::served_ports;

fn listener(name: String, ip: IpAddr, port: u16, filters: Vec<Filter>) -> Listener {
    Listener {
        name,
        address: Some(protos::socket(ip, port)),
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An inbound listener: mTLS only (STRICT), or mTLS and plain text told apart by the
/// TLS inspector (PERMISSIVE). A TCP port guards its app before connecting to it (see
/// [`tls::guarded_tls`]).
fn secure_listener(
    name: String,
    ip: IpAddr,
    port: u16,
    filters: Vec<Filter>,
    guard: tls::Guard,
    mode: MtlsMode,
) -> Listener {
    let mtls = FilterChain {
        filter_chain_match: (mode == MtlsMode::Permissive).then(|| FilterChainMatch {
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: filters.clone(),
        transport_socket: Some(guard.tls),
        name: "mtls".into(),
        ..Default::default()
    };
    let mut l = Listener {
        name,
        address: Some(protos::socket(ip, port)),
        filter_chains: vec![mtls],
        ..Default::default()
    };
    if mode == MtlsMode::Permissive {
        l.listener_filters = vec![tls_inspector()];
        // Plain text no rule admits has no chain: the connection is closed at once.
        l.default_filter_chain = guard.plain_text.then(|| FilterChain {
            filters,
            name: "plaintext".into(),
            ..Default::default()
        });
    }
    l
}

fn outbound(ip: IpAddr, proxy: &ProxyIdentity) -> Resource {
    Resource {
        kind: XdsType::Listener,
        name: names::OUTBOUND_LISTENER.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Listener(Box::new(listener(
            names::OUTBOUND_LISTENER.into(),
            ip,
            proxy.outbound_port,
            vec![outbound_hcm(proxy)],
        ))),
    }
}

fn inbound(
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    authz: &InboundAuthz,
    trust_domain: &str,
    mode: MtlsMode,
) -> Resource {
    let name = names::inbound(port);
    let filter = inbound_filters(port, protocol, authz);
    Resource {
        kind: XdsType::Listener,
        refs: vec![name.clone()],
        sources: Vec::new(),
        body: Body::Listener(Box::new(secure_listener(
            name.clone(),
            ip,
            port,
            filter,
            tls::guarded_tls(protocol, authz, trust_domain),
            mode,
        ))),
        name,
    }
}

pub(crate) fn for_proxy(model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
    let mut out = Output::default();
    let pod = model.pod(&proxy.namespace, &proxy.pod);
    let ip = proxy
        .pod_ip
        .or(pod.and_then(|p| p.ip))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if proxy.intercepted {
        out.resources.extend(intercept::outbound(model, proxy));
    } else {
        out.resources.push(outbound(ip, proxy));
    }
    // Calls by a pod's own address, in both modes (`address`).
    out.resources
        .push(pod_address::pod_address_cluster(&mesh.trust_domain));

    let Some(pod) = pod else {
        return out;
    };
    let ports = served_ports(model, proxy, pod, &mut out.diagnostics);
    let mode = pod.mtls_mode.unwrap_or(mesh.mtls);
    // The app's address (an intercepted pod's own by default), and the intercepted
    // sidecar's source for its hop to the app (see `intercept::inbound_bind`).
    let app = if proxy.app_address == POD_ADDRESS {
        ip
    } else {
        proxy.app_address
    };
    let source = proxy.intercepted.then(intercept::inbound_bind);
    let mut served = Vec::new();
    for (port, (protocol, mut sources)) in ports {
        let authz = authz::inbound(model, mesh, &Destination::of(pod, port, protocol));
        sources.extend(authz.sources());
        sources.sort();
        sources.dedup();
        let mut cluster = cluster::inbound(port, app, protocol, source.clone());
        cluster.sources = sources.clone();
        out.resources.push(cluster);
        if proxy.intercepted {
            served.push((port, protocol, authz, sources));
            continue;
        }
        let mut listener = inbound(ip, port, protocol, &authz, &mesh.trust_domain, mode);
        listener.sources = sources;
        out.resources.push(listener);
    }
    if proxy.intercepted {
        // Ports no Service names pass through, under the authorization that covers
        // every port of the destination.
        let served_ports: Vec<u16> = served.iter().map(|(p, _, _, _)| *p).collect();
        let (named, rest) = authz::unserved(model, mesh, pod, &served_ports);
        out.resources.extend(intercept::inbound(
            proxy,
            ip,
            &served,
            &named,
            &rest,
            &mesh.trust_domain,
            mode,
        ));
    }
    out
}
