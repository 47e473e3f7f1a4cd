//! Endpoints: a `ClusterLoadAssignment` (EDS, or inline in a static cluster) by
//! locality and priority, and the one host of a DNS cluster.

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::value::Kind;

use super::check::{Path, R, bounded, enumerated, must_be_default, name, opt_name};
use super::limits::{MAX_ENDPOINTS, MAX_LIST, MAX_NAME};
use super::listener::{HostPort, ip_address, socket_address};
use crate::config::cluster::{Endpoint, LoadAssignment, Locality};

/// The metadata key of transport socket matches.
const SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// A load assignment; `inline` (a static cluster's) may leave its name empty.
pub(crate) fn load_assignment(
    path: &Path,
    la: &ClusterLoadAssignment,
    inline: bool,
) -> R<LoadAssignment> {
    must_be_default!(path, la, named_endpoints, policy);
    let name = if inline {
        opt_name(&path.f("cluster_name"), &la.cluster_name)?
    } else {
        name(&path.f("cluster_name"), &la.cluster_name)?
    };
    let lp = path.f("endpoints");
    let total: usize = la.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
    if total > MAX_ENDPOINTS {
        return Err(lp.err(format!(
            "{total} endpoints, at most {MAX_ENDPOINTS} accepted"
        )));
    }
    let localities = bounded(&lp, &la.endpoints, MAX_ENDPOINTS)?
        .iter()
        .enumerate()
        .map(|(i, l)| locality(&lp.i(i), l))
        .collect::<R<Vec<_>>>()?;
    Ok(LoadAssignment { name, localities })
}

fn locality(path: &Path, l: &LocalityLbEndpoints) -> R<Locality> {
    must_be_default!(path, l, metadata, proximity, lb_config);
    let (region, zone) = match &l.locality {
        Some(loc) => {
            must_be_default!(path.f("locality"), loc, sub_zone);
            (
                opt_name(&path.f("locality").f("region"), &loc.region)?,
                opt_name(&path.f("locality").f("zone"), &loc.zone)?,
            )
        }
        None => (String::new(), String::new()),
    };
    if l.priority > 128 {
        return Err(path.f("priority").err("at most 128"));
    }
    let ep = path.f("lb_endpoints");
    let endpoints = l
        .lb_endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| endpoint(&ep.i(i), e))
        .collect::<R<Vec<_>>>()?;
    Ok(Locality {
        region,
        zone,
        priority: l.priority,
        weight: weight(&path.f("load_balancing_weight"), l.load_balancing_weight)?,
        endpoints,
    })
}

fn weight(path: &Path, w: Option<envoy_types::pb::google::protobuf::UInt32Value>) -> R<u32> {
    match w {
        None => Ok(1),
        Some(w) if w.value >= 1 => Ok(w.value),
        Some(_) => Err(path.err("a weight is at least 1")),
    }
}

fn endpoint(path: &Path, e: &LbEndpoint) -> R<Endpoint> {
    let ep = path.f("endpoint");
    let inner = match &e.host_identifier {
        Some(HostIdentifier::Endpoint(inner)) => inner,
        Some(HostIdentifier::EndpointName(_)) => return Err(path.f("endpoint_name").unsupported()),
        None => return Err(ep.err("an endpoint is required")),
    };
    must_be_default!(
        ep,
        inner,
        health_check_config,
        additional_addresses,
        observability_name
    );
    opt_name(&ep.f("hostname"), &inner.hostname)?;
    let address = inner
        .address
        .as_ref()
        .ok_or_else(|| ep.f("address").err("an address is required"))?;
    let healthy = matches!(
        enumerated::<HealthStatus>(&path.f("health_status"), e.health_status)?,
        HealthStatus::Unknown | HealthStatus::Healthy
    );
    Ok(Endpoint {
        address: ip_address(&ep.f("address"), address)?,
        healthy,
        weight: weight(&path.f("load_balancing_weight"), e.load_balancing_weight)?,
        transport_match: match &e.metadata {
            Some(m) => socket_match(&path.f("metadata"), m)?,
            None => Vec::new(),
        },
    })
}

/// `filter_metadata["envoy.transport_socket_match"]`: string values only.
fn socket_match(path: &Path, m: &Metadata) -> R<Vec<(String, String)>> {
    must_be_default!(path, m, typed_filter_metadata);
    let fp = path.f("filter_metadata");
    let mut out = Vec::new();
    for (key, s) in &m.filter_metadata {
        if key != SOCKET_MATCH {
            return Err(fp.key(key).unsupported());
        }
        let kp = fp.key(key);
        if s.fields.len() > MAX_LIST {
            return Err(kp.err(format!("at most {MAX_LIST} keys")));
        }
        for (k, v) in &s.fields {
            match &v.kind {
                Some(Kind::StringValue(s)) if s.len() <= MAX_NAME => {
                    out.push((name(&kp.key(k), k)?, s.clone()));
                }
                _ => return Err(kp.key(k).err("only string values (up to 1 KiB)")),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A DNS cluster's one endpoint: a host name (or address) and port.
pub(crate) fn dns_host(path: &Path, la: &ClusterLoadAssignment) -> R<(String, u16)> {
    must_be_default!(path, la, named_endpoints, policy);
    let [locality] = la.endpoints.as_slice() else {
        return Err(path
            .f("endpoints")
            .err("a DNS cluster needs exactly one endpoint"));
    };
    let lp = path.f("endpoints").i(0);
    must_be_default!(
        lp, locality, metadata, proximity, lb_config, priority, locality
    );
    let [e] = locality.lb_endpoints.as_slice() else {
        return Err(lp
            .f("lb_endpoints")
            .err("a DNS cluster needs exactly one endpoint"));
    };
    let ep = lp.f("lb_endpoints").i(0);
    must_be_default!(ep, e, metadata, health_status);
    let inner = match &e.host_identifier {
        Some(HostIdentifier::Endpoint(inner)) => inner,
        _ => return Err(ep.f("endpoint").err("an endpoint is required")),
    };
    let ip = ep.f("endpoint");
    must_be_default!(
        ip,
        inner,
        health_check_config,
        additional_addresses,
        hostname,
        observability_name,
    );
    let address = inner
        .address
        .as_ref()
        .ok_or_else(|| ip.f("address").err("an address is required"))?;
    match socket_address(&ip.f("address"), address, true)? {
        HostPort::Ip(s) => Ok((s.ip().to_string(), s.port())),
        HostPort::Name(h, port) => Ok((h, port)),
    }
}
