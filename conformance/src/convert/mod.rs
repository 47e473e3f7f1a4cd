//! xDS protobuf to the proxy's own configuration. Each resource is checked strictly:
//! what Rudder emits is converted, anything else (a field the proxy does not implement,
//! a filter or typed config it does not know, a value out of range, a regex over the
//! limit) is refused with the field path, so the resource is NACKed by name.
//!
//! Submodules, one per resource part: `listener` (addresses, listener filters, filter
//! chains and their match), `network` (the network filters: the terminal
//! `http_connection_manager` and `tcp_proxy`, the RBAC filter before them; the HTTP
//! filters), `rbac` (the HTTP and network RBAC filters' rules), `tls` (downstream and
//! upstream TLS contexts, SDS and EDS config sources), `route` (route configurations,
//! virtual hosts, route matches), `headers` (header edits), `action` (route actions:
//! destinations, retries, mirrors, rewrites, redirects, direct responses), `cluster`,
//! `endpoint`, `secret`, `matchers` (string matchers, regexes, header names and values)
//! and `check` (field paths, errors, the "must be default" check for fields the proxy
//! does not implement, durations, typed configs, bounded lists).
//!
//! Limits (a resource over one is refused, the path naming the list or field):
//! - a name (resource, cluster, route, host, header, domain) at most [`MAX_NAME`] bytes;
//! - a regex pattern at most [`MAX_REGEX_LEN`] characters, compiled by the `regex` crate
//!   within [`REGEX_SIZE_LIMIT`] bytes (ample for what Rudder's RE2 check admits: a
//!   program of at most 100 instructions);
//! - [`MAX_VIRTUAL_HOSTS`] virtual hosts per route configuration, [`MAX_ROUTES`] routes
//!   per virtual host, [`MAX_DOMAINS`] domains per virtual host, [`MAX_ENDPOINTS`]
//!   endpoints per load assignment, [`MAX_FILTER_CHAINS`] filter chains per listener,
//!   [`MAX_LIST`] entries in any other list (header edits, matchers, weighted clusters,
//!   mirrors, transport matches, ALPN values, SAN matchers, certificates in a PEM);
//! - [`MAX_POLICIES`] policies per set of RBAC rules, [`MAX_RBAC_RULES`] permissions or
//!   principals per policy and entries per RBAC rule set.
//!
//! Accepted but without effect: a DNS cluster's `dns_lookup_family` (the host is
//! resolved by the system resolver at connect time), a route configuration's
//! `validate_clusters` (a control-plane check), `ignore_case` on a regex (as in Envoy).
//! Defaults are Envoy's: route timeout 15 s (zero: none), one retry, connect timeout
//! 5 s, request headers 60 KiB, retry budget 20 % with 3 concurrent retries, weight 1.

#![allow(
    deprecated,
    reason = "deprecated xDS fields are checked too: set, they are refused by name"
)]

mod action;
mod check;
mod cluster;
mod endpoint;
mod headers;
mod limits;
mod listener;
mod matchers;
mod network;
mod rbac;
mod route;
mod secret;
mod tls;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener as PbListener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret as PbSecret;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use xds_types::XdsType;

use crate::config::cluster::{Cluster, LoadAssignment};
use crate::config::listener::Listener;
use crate::config::route::RouteConfig;
use crate::config::secret::Secret;

pub use limits::{
    MAX_DOMAINS, MAX_ENDPOINTS, MAX_FILTER_CHAINS, MAX_LIST, MAX_NAME, MAX_POLICIES,
    MAX_RBAC_RULES, MAX_REGEX_LEN, MAX_ROUTES, MAX_VIRTUAL_HOSTS, REGEX_SIZE_LIMIT,
};

/// A converted resource.
#[derive(Clone, Debug)]
pub enum Converted {
    /// LDS.
    Listener(Listener),
    /// RDS.
    Route(RouteConfig),
    /// CDS.
    Cluster(Cluster),
    /// EDS.
    Endpoints(LoadAssignment),
    /// SDS.
    Secret(Secret),
}

/// Why a resource was refused: the resource, the field path inside it, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {path}: {message}")]
pub struct ConvertError {
    /// The resource's name (or its type URL when the name is unknown).
    pub resource: String,
    /// The field path (`filter_chains[0].filters[0].typed_config`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Decodes and converts one resource of type `ty`: (its name, the converted value).
/// The `Any`'s type URL must be `ty`'s.
pub fn convert(ty: XdsType, any: &Any) -> Result<(String, Converted), ConvertError> {
    let whole = |path: &str, message: String| ConvertError {
        resource: check::shorten(&any.type_url),
        path: path.into(),
        message,
    };
    if any.type_url != ty.type_url() {
        return Err(whole(
            "type_url",
            format!("a {ty} resource must have type URL {}", ty.type_url()),
        ));
    }
    fn decode<T: Message + Default>(any: &Any) -> Result<T, String> {
        T::decode(any.value.as_slice()).map_err(|e| format!("does not decode: {e}"))
    }
    let (name, result) = match ty {
        XdsType::Listener => {
            let m: PbListener = decode(any).map_err(|e| whole("", e))?;
            let r = listener::listener(&m).map(Converted::Listener);
            (m.name, r)
        }
        XdsType::Route => {
            let m: RouteConfiguration = decode(any).map_err(|e| whole("", e))?;
            let r = route::route_config(&m).map(Converted::Route);
            (m.name, r)
        }
        XdsType::Cluster => {
            let m: PbCluster = decode(any).map_err(|e| whole("", e))?;
            let r = cluster::cluster(&m).map(Converted::Cluster);
            (m.name, r)
        }
        XdsType::Endpoint => {
            let m: ClusterLoadAssignment = decode(any).map_err(|e| whole("", e))?;
            let r = endpoint::load_assignment(&check::Path::root(), &m, false)
                .map(Converted::Endpoints);
            (m.cluster_name, r)
        }
        XdsType::Secret => {
            let m: PbSecret = decode(any).map_err(|e| whole("", e))?;
            let r = secret::secret(&m).map(Converted::Secret);
            (m.name, r)
        }
        // It never asks for them: its route tables hold their virtual hosts.
        XdsType::VirtualHost => {
            return Err(whole(
                "",
                "rudder-proxy takes virtual hosts in their route table, not over VHDS".into(),
            ));
        }
    };
    let resource = if name.is_empty() {
        check::shorten(&any.type_url)
    } else {
        check::shorten(&name)
    };
    match result {
        Ok(converted) if !name.is_empty() && name.len() <= MAX_NAME => Ok((name, converted)),
        Ok(_) => Err(ConvertError {
            resource,
            path: "name".into(),
            message: format!("a name must have 1 to {MAX_NAME} bytes"),
        }),
        Err(fail) => Err(ConvertError {
            resource,
            path: fail.path,
            message: fail.message,
        }),
    }
}

#[cfg(test)]
mod tests;
