//! Route configurations: virtual hosts (domains unique across hosts, as Envoy
//! requires), routes with their match, and header edits.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, Route as PbRoute, RouteConfiguration,
    RouteMatch as PbMatch, VirtualHost as PbHost, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, route, route_match::PathSpecifier,
};

use super::action;
use super::check::{Path, R, each, must_be_default, name, opt_name, shorten};
use super::headers::header_edits;
use super::limits::{MAX_DOMAINS, MAX_LIST, MAX_NAME, MAX_ROUTES, MAX_VIRTUAL_HOSTS};
use super::matchers::{match_header_name, regex_matcher, string_matcher};
use crate::config::listener::StringMatch;
use crate::config::route::{
    HeaderMatch, HeaderValueMatch, PathMatch, QueryMatch, Route, RouteConfig, RouteMatch,
    VirtualHost,
};

/// A `RouteConfiguration` resource.
pub(crate) fn route_config(m: &RouteConfiguration) -> R<RouteConfig> {
    route_config_at(&Path::root(), m)
}

/// A route configuration at `path` (a resource, or inline in a connection manager).
pub(crate) fn route_config_at(path: &Path, m: &RouteConfiguration) -> R<RouteConfig> {
    must_be_default!(
        path,
        m,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata,
        route_specifiers,
    );
    let hp = path.f("virtual_hosts");
    let virtual_hosts = each(&hp, &m.virtual_hosts, MAX_VIRTUAL_HOSTS, virtual_host)?;
    // Envoy refuses a domain that two hosts (or one host twice) name.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (h, host) in virtual_hosts.iter().enumerate() {
        for (d, domain) in host.domains.iter().enumerate() {
            if let Some(first) = seen.insert(domain.to_ascii_lowercase(), h) {
                return Err(hp.i(h).f("domains").i(d).err(format!(
                    "duplicate domain {:?} (also in virtual_hosts[{first}])",
                    shorten(domain)
                )));
            }
        }
    }
    Ok(RouteConfig {
        name: opt_name(&path.f("name"), &m.name)?,
        virtual_hosts,
    })
}

fn virtual_host(path: &Path, v: &PbHost) -> R<VirtualHost> {
    must_be_default!(
        path,
        v,
        matcher,
        require_tls,
        virtual_clusters,
        rate_limits,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        request_mirror_policies,
        metadata,
        route_specifiers,
    );
    let domains = each(&path.f("domains"), &v.domains, MAX_DOMAINS, |p, d| {
        let d = name(p, d)?;
        if d.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(p.err("a domain has no spaces or control characters"));
        }
        Ok(d)
    })?;
    if domains.is_empty() {
        return Err(path.f("domains").err("a virtual host needs a domain"));
    }
    let retry = v
        .retry_policy
        .as_ref()
        .map(|r| action::retry_policy(&path.f("retry_policy"), r))
        .transpose()?
        .map(std::sync::Arc::new);
    Ok(VirtualHost {
        name: name(&path.f("name"), &v.name)?,
        domains,
        routes: each(&path.f("routes"), &v.routes, MAX_ROUTES, route)?,
        headers: header_edits(
            path,
            &v.request_headers_to_add,
            &v.request_headers_to_remove,
            &v.response_headers_to_add,
            &v.response_headers_to_remove,
        )?,
        retry,
    })
}

fn route(path: &Path, r: &PbRoute) -> R<Route> {
    must_be_default!(
        path,
        r,
        metadata,
        decorator,
        typed_per_filter_config,
        tracing,
        per_request_buffer_limit_bytes,
        stat_prefix,
        request_body_buffer_limit,
        route_specifiers,
    );
    let matcher = r
        .r#match
        .as_ref()
        .ok_or_else(|| path.f("match").err("a route needs a match"))?;
    let action = match &r.action {
        Some(route::Action::Route(a)) => action::route_action(&path.f("route"), a)?,
        Some(route::Action::Redirect(a)) => action::redirect(&path.f("redirect"), a)?,
        Some(route::Action::DirectResponse(a)) => {
            action::direct_response(&path.f("direct_response"), a)?
        }
        Some(route::Action::FilterAction(_)) => return Err(path.f("filter_action").unsupported()),
        Some(route::Action::NonForwardingAction(_)) => {
            return Err(path.f("non_forwarding_action").unsupported());
        }
        None => return Err(path.err("a route needs an action")),
    };
    Ok(Route {
        name: opt_name(&path.f("name"), &r.name)?,
        matcher: route_match(&path.f("match"), matcher)?,
        action,
        headers: header_edits(
            path,
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
    })
}

fn route_match(path: &Path, m: &PbMatch) -> R<RouteMatch> {
    must_be_default!(
        path,
        m,
        runtime_fraction,
        cookies,
        grpc,
        tls_context,
        dynamic_metadata,
        filter_state,
    );
    let bounded = |field: &str, s: &str| -> R<String> {
        if s.len() > MAX_NAME {
            return Err(path.f(field).err(format!("longer than {MAX_NAME} bytes")));
        }
        Ok(s.to_string())
    };
    let (path_match, connect) = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => (PathMatch::Prefix(bounded("prefix", p)?), false),
        Some(PathSpecifier::Path(p)) => (PathMatch::Exact(bounded("path", p)?), false),
        Some(PathSpecifier::SafeRegex(r)) => (
            PathMatch::Regex(regex_matcher(&path.f("safe_regex"), r)?),
            false,
        ),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            let p = bounded("path_separated_prefix", p)?;
            if !p.starts_with('/') || p.contains(['?', '#']) || (p.len() > 1 && p.ends_with('/')) {
                return Err(path
                    .f("path_separated_prefix")
                    .err("must start with / and not end with / nor hold ? or #"));
            }
            (PathMatch::SeparatedPrefix(p), false)
        }
        Some(PathSpecifier::ConnectMatcher(_)) => (PathMatch::Prefix(String::new()), true),
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(path.f("path_match_policy").unsupported());
        }
        None => return Err(path.err("a path specifier is required")),
    };
    Ok(RouteMatch {
        path: path_match,
        case_sensitive: m.case_sensitive.is_none_or(|b| b.value),
        headers: each(&path.f("headers"), &m.headers, MAX_LIST, header_match)?,
        query: each(
            &path.f("query_parameters"),
            &m.query_parameters,
            MAX_LIST,
            query_match,
        )?,
        connect,
    })
}

/// `config.route.v3.HeaderMatcher` (of a route match or an RBAC permission).
pub(crate) fn header_match(path: &Path, h: &HeaderMatcher) -> R<HeaderMatch> {
    must_be_default!(path, h, treat_missing_header_as_empty);
    let legacy =
        |field: &str, make: fn(String, bool) -> StringMatch, s: &str| -> R<HeaderValueMatch> {
            if s.len() > MAX_NAME {
                return Err(path.f(field).err(format!("longer than {MAX_NAME} bytes")));
            }
            Ok(HeaderValueMatch::String(make(s.to_string(), false)))
        };
    let value = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(s)) => legacy("exact_match", StringMatch::Exact, s)?,
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => {
            legacy("prefix_match", StringMatch::Prefix, s)?
        }
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
            legacy("suffix_match", StringMatch::Suffix, s)?
        }
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
            legacy("contains_match", StringMatch::Contains, s)?
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => HeaderValueMatch::String(
            StringMatch::Regex(regex_matcher(&path.f("safe_regex_match"), r)?),
        ),
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            HeaderValueMatch::String(string_matcher(&path.f("string_match"), s)?)
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderValueMatch::Present(*p),
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(path.f("range_match").unsupported());
        }
        // No specifier: the header is present.
        None => HeaderValueMatch::Present(true),
    };
    Ok(HeaderMatch {
        name: match_header_name(&path.f("name"), &h.name)?,
        value,
        invert: h.invert_match,
    })
}

fn query_match(path: &Path, q: &QueryParameterMatcher) -> R<QueryMatch> {
    let value = match &q.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            Some(string_matcher(&path.f("string_match"), s)?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
        Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
            return Err(path
                .f("present_match")
                .err("present_match: false is not supported"));
        }
    };
    Ok(QueryMatch {
        name: name(&path.f("name"), &q.name)?,
        value,
    })
}
