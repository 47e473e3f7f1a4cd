//! Route rendering both emitters share (Envoy's and proxyless gRPC's route
//! configurations are the same messages): the names a Service port answers to, route
//! matches, and a destination as a cluster specifier or direct response.

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RouteAction, RouteMatch,
    WeightedCluster, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use crate::model::MeshService;
use crate::routing::ir::{Backend, Dest, Match, PathMatch, StrMatch};

/// A cluster name that never exists: a share of requests with no backend
/// ([`Backend::Missing`], [`Dest::NoBackend`]) is rendered as sent there, and fails.
pub(crate) const NO_BACKEND_CLUSTER: &str = "rudder-no-backend";

/// The names a client may use for `svc` on `port`, in order, each with whether only
/// clients in the Service's own namespace may use it (the short name, as Kubernetes DNS
/// resolves it): the full and short DNS forms and the cluster IP, each with `:PORT`, and
/// also without it for the service's default port.
pub(crate) fn domains(svc: &MeshService, port: u16) -> Vec<(String, bool)> {
    let mut hosts = vec![
        (svc.fqdn(), false),
        (format!("{}.{}.svc", svc.name, svc.namespace), false),
        (format!("{}.{}", svc.name, svc.namespace), false),
        (svc.name.clone(), true),
    ];
    let mut out: Vec<(String, bool)> = hosts
        .iter()
        .map(|(h, local)| (format!("{h}:{port}"), *local))
        .collect();
    if let Some(ip) = svc.cluster_ip {
        out.push((
            match ip {
                std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
                std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            },
            false,
        ));
        hosts.push((ip.to_string(), false));
    }
    if svc.default_port() == Some(port) {
        out.extend(hosts);
    }
    out
}

pub(crate) fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

pub(crate) fn string_matcher(m: &StrMatch) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match m {
            StrMatch::Exact(v) => MatchPattern::Exact(v.clone()),
            StrMatch::Regex(re) => MatchPattern::SafeRegex(regex(re)),
        }),
        ..Default::default()
    }
}

pub(crate) fn header(name: &str, m: &StrMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(m))),
        ..Default::default()
    }
}

/// The route match of one routing-IR match.
pub(crate) fn route_match(m: &Match) -> RouteMatch {
    let mut headers: Vec<HeaderMatcher> = m.headers.iter().map(|(k, v)| header(k, v)).collect();
    if !m.methods.is_empty() {
        headers.push(header(":method", &StrMatch::Regex(m.methods.join("|"))));
    }
    RouteMatch {
        path_specifier: Some(match &m.path {
            PathMatch::Prefix(p) => PathSpecifier::Prefix(p.clone()),
            PathMatch::Segments(p) => PathSpecifier::PathSeparatedPrefix(p.clone()),
            PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
            PathMatch::Regex(re) => PathSpecifier::SafeRegex(regex(re)),
        }),
        headers,
        query_parameters: m
            .query
            .iter()
            .map(|(name, v)| QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(v),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

/// The rendering of a destination that is a cluster or clusters; `None` for a
/// status answered by the proxy.
pub(crate) fn cluster_specifier(dest: &Dest) -> Option<ClusterSpecifier> {
    Some(match dest {
        Dest::Status(_) => return None,
        Dest::Cluster(name) => ClusterSpecifier::Cluster(name.clone()),
        Dest::NoBackend => ClusterSpecifier::Cluster(NO_BACKEND_CLUSTER.into()),
        Dest::Weighted(w) => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: w
                .iter()
                .map(|(backend, weight)| ClusterWeight {
                    name: match backend {
                        Backend::Cluster(name) => name.clone(),
                        Backend::Missing => NO_BACKEND_CLUSTER.into(),
                    },
                    weight: Some(UInt32Value { value: *weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    })
}

/// The action of a route to `dest`: to its clusters, or a direct response.
pub(crate) fn action(dest: &Dest, route: RouteAction) -> Action {
    match cluster_specifier(dest) {
        Some(c) => Action::Route(RouteAction {
            cluster_specifier: Some(c),
            ..route
        }),
        None => Action::DirectResponse(DirectResponseAction {
            status: match dest {
                Dest::Status(c) => *c,
                _ => 500,
            },
            ..Default::default()
        }),
    }
}
