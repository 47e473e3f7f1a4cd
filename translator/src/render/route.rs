//! Route rendering both emitters share (Envoy's and proxyless gRPC's route
//! configurations are the same messages): the names a Service port answers to, route
//! matches, a destination as a cluster specifier or direct response, and the redirects
//! and rewrites of Gateway API rules (which only Envoy honours: gRPC clients fail calls on
//! a redirect and ignore rewrites).

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RouteAction,
    RouteMatch, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action,
    route_action::{ClusterSpecifier, HostRewriteSpecifier},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use crate::model::MeshService;
use crate::routing::ir::{
    Backend, Dest, Match, PathChange, PathMatch, Redirect, Rewrite, StrMatch, regex_quote,
};

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

/// A path change as Envoy applies it to a request matched by `m`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathRewrite {
    /// The whole path becomes this.
    Full(String),
    /// The matched prefix becomes this (`prefix_rewrite`).
    Prefix(String),
    /// What matches the pattern becomes the substitution (`regex_rewrite`).
    Regex(String, String),
}

/// How `change` rewrites the path of a request that `m` matched; None when it changes
/// nothing. `ReplacePrefixMatch` replaces the matched whole segments, and a replacement
/// of `/` strips them without leaving `//`: `/strip` with `/` makes `/strip/a` into
/// `/a` and `/strip` into `/` (as the Gateway API's conformance tests expect). A
/// replacement's trailing `/` is dropped, so `/p` with `/q/` makes `/p/a` into `/q/a`.
pub(crate) fn path_rewrite(m: Option<&Match>, change: &PathChange) -> Option<PathRewrite> {
    let replacement = match change {
        PathChange::Full(p) => return Some(PathRewrite::Full(p.clone())),
        PathChange::Prefix(r) => r.trim_end_matches('/'),
    };
    let matched = m
        .map_or(&PathMatch::Prefix("/".into()), |m| &m.path)
        .clone();
    match matched {
        PathMatch::Prefix(p) if p == "/" => {
            (!replacement.is_empty()).then(|| PathRewrite::Prefix(format!("{replacement}/")))
        }
        PathMatch::Segments(p) | PathMatch::Prefix(p) if replacement.is_empty() => Some(
            PathRewrite::Regex(format!("^{}/*", regex_quote(&p)), "/".into()),
        ),
        PathMatch::Segments(_) | PathMatch::Prefix(_) => {
            Some(PathRewrite::Prefix(replacement.to_string()))
        }
        // Validation allows ReplacePrefixMatch only with a PathPrefix match.
        PathMatch::Exact(_) | PathMatch::Regex(_) => None,
    }
}

fn substitute(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(regex(pattern)),
        substitution: substitution.to_string(),
    }
}

/// The Envoy redirect of a `RequestRedirect` rule that `m` matched on Service port
/// `service_port`. The port of the `Location` is the filter's, else the scheme's
/// well-known one when it sets a scheme, else the Service port; it is left out where it
/// is the scheme's well-known port (Envoy drops the request's `:80` when the scheme
/// changes) or the port the request already names (a request's `Host` names the Service
/// port, or no port for the Service's default port).
pub(crate) fn redirect_action(
    r: &Redirect,
    m: Option<&Match>,
    service_port: u16,
) -> RedirectAction {
    let port = r.final_port(service_port);
    let well_known = match r.final_scheme() {
        "https" => 443,
        _ => 80,
    };
    let keep_port = port == service_port || (port == well_known && service_port == 80);
    let response_code = match r.status {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::Found,
    };
    RedirectAction {
        host_redirect: r.host.clone().unwrap_or_default(),
        port_redirect: if keep_port { 0 } else { u32::from(port) },
        response_code: response_code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r
            .path
            .as_ref()
            .and_then(|c| path_rewrite(m, c))
            .map(|p| match p {
                PathRewrite::Full(p) => PathRewriteSpecifier::PathRedirect(p),
                PathRewrite::Prefix(p) => PathRewriteSpecifier::PrefixRewrite(p),
                PathRewrite::Regex(re, sub) => {
                    PathRewriteSpecifier::RegexRewrite(substitute(&re, &sub))
                }
            }),
        ..Default::default()
    }
}

/// A `URLRewrite` on the action of a rule that `m` matched: `host_rewrite_literal`, and
/// `prefix_rewrite` or `regex_rewrite` (a full path replaces all of `^.*$`).
pub(crate) fn apply_rewrite(a: &mut RouteAction, rw: &Rewrite, m: Option<&Match>) {
    if let Some(h) = &rw.host {
        a.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(h.clone()));
    }
    match rw.path.as_ref().and_then(|c| path_rewrite(m, c)) {
        Some(PathRewrite::Full(p)) => a.regex_rewrite = Some(substitute("^.*$", &p)),
        Some(PathRewrite::Prefix(p)) => a.prefix_rewrite = p,
        Some(PathRewrite::Regex(re, sub)) => a.regex_rewrite = Some(substitute(&re, &sub)),
        None => {}
    }
}
