//! Validation of HTTPRoute and GRPCRoute specs: parentRefs, host names, matches,
//! timeouts and retries, the rendered size, and the `validate` of both route kinds
//! (filters and backendRefs are checked by `filters`).

use super::checks::{MAX_LIST, at_most, duration, err, name_pattern, regex, token, value};
use super::filters::{On, backends, filters, path_filters_fit};
use super::paths::path_chars;
use crate::error::FieldError;
use crate::gateway::{
    BackendRef, GRPCMethodMatch, GRPCRouteMatch, GRPCRouteSpec, HTTPHeaderMatch, HTTPRouteFilter,
    HTTPRouteMatch, HTTPRouteSpec, HTTPRouteTimeouts, ParentReference,
};
use crate::text::quote;
use crate::text::{is_dns_label as is_label, is_dns_subdomain as is_subdomain};

/// Most parentRefs, rules, matches per rule and matches in all, as upstream.
const MAX_PARENTS: usize = 32;
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;
/// GRPCRoute rules take fewer matches.
const MAX_GRPC_MATCHES: usize = 8;
const MAX_TOTAL_MATCHES: usize = 128;
/// The most retries Rudder sends (as RetryPolicy's `numRetries`).
pub const MAX_ATTEMPTS: i32 = 10;

/// HTTP methods a match may name.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn parent(p: &ParentReference, field: &str) -> Result<(), FieldError> {
    if p.name.is_empty() || p.name.len() > 253 {
        return Err(err(format!("{field}.name"), "must be 1 to 253 characters"));
    }
    name_pattern(
        p.section_name.as_ref(),
        &format!("{field}.sectionName"),
        is_subdomain,
        "a DNS subdomain",
    )?;
    name_pattern(
        p.namespace.as_ref(),
        &format!("{field}.namespace"),
        is_label,
        "a namespace name (a DNS label)",
    )?;
    let kind_ok = |k: &str| {
        let mut c = k.chars();
        k.len() <= 63
            && c.next().is_some_and(|f| f.is_ascii_alphabetic())
            && k.chars().all(|x| x.is_ascii_alphanumeric() || x == '-')
            && !k.ends_with('-')
    };
    name_pattern(p.kind.as_ref(), &format!("{field}.kind"), kind_ok, "a kind")?;
    if let Some(port) = p.port
        && !(1..=65535).contains(&port)
    {
        return Err(err(
            format!("{field}.port"),
            format!("{port} is not a port (1 to 65535)"),
        ));
    }
    Ok(())
}

fn parents(refs: &[ParentReference]) -> Result<(), FieldError> {
    at_most(refs, MAX_PARENTS, "spec.parentRefs")?;
    for (i, p) in refs.iter().enumerate() {
        parent(p, &format!("spec.parentRefs[{i}]"))?;
    }
    // As upstream's CEL: references to one parent must each name a distinct section
    // (sectionName, or port).
    let same = |a: &ParentReference, b: &ParentReference| {
        (&a.group, &a.kind, &a.namespace, &a.name) == (&b.group, &b.kind, &b.namespace, &b.name)
    };
    for (i, a) in refs.iter().enumerate() {
        for b in &refs[..i] {
            if same(a, b)
                && ((a.section_name.is_none() && a.port.is_none())
                    || (b.section_name.is_none() && b.port.is_none())
                    || (a.section_name == b.section_name && a.port == b.port))
            {
                return Err(err(
                    "spec.parentRefs",
                    format!(
                        "{} is named more than once; each reference to it must name a different sectionName or port",
                        quote(&a.name)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn string_matches(ms: &[HTTPHeaderMatch], field: &str, max_value: usize) -> Result<(), FieldError> {
    at_most(ms, MAX_LIST, field)?;
    // A name listed twice exactly is refused, as the API server does (the upstream list
    // is a map keyed by name); equivalent header names (differing in case) are left to
    // the translator, which keeps the first, as the spec says.
    let mut seen: Vec<&str> = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        let f = format!("{field}[{i}]");
        token(&m.name, &format!("{f}.name"))?;
        if seen.contains(&m.name.as_str()) {
            return Err(err(
                format!("{f}.name"),
                format!("{} is matched twice", quote(&m.name)),
            ));
        }
        seen.push(&m.name);
        match m.type_.as_deref() {
            None | Some("Exact") => value(&m.value, max_value, &format!("{f}.value"))?,
            Some("RegularExpression") => regex(&m.value, &format!("{f}.value"))?,
            Some(other) => {
                return Err(err(
                    format!("{f}.type"),
                    format!("{} is not Exact or RegularExpression", quote(other)),
                ));
            }
        }
    }
    Ok(())
}

fn http_match(m: &HTTPRouteMatch, field: &str) -> Result<(), FieldError> {
    if let Some(p) = &m.path {
        let v = p.value.as_deref().unwrap_or("/");
        let f = format!("{field}.path.value");
        if v.len() > 1024 {
            return Err(err(f, "is longer than 1024 characters"));
        }
        match p.type_.as_deref() {
            None | Some("PathPrefix") | Some("Exact") => {
                if !v.starts_with('/') {
                    return Err(err(f, format!("{} must be an absolute path", quote(v))));
                }
                for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
                    if v.contains(bad) {
                        return Err(err(f, format!("{} must not contain {bad:?}", quote(v))));
                    }
                }
                if v.ends_with("/..") || v.ends_with("/.") {
                    return Err(err(f, format!("{} must not end with /. or /..", quote(v))));
                }
                if !path_chars(v) {
                    return Err(err(
                        f,
                        format!(
                            "{} is not a path (letters, digits, -/._~!$&'()*+,;=:@ and %XX escapes)",
                            quote(v)
                        ),
                    ));
                }
            }
            Some("RegularExpression") => regex(v, &f)?,
            Some(other) => {
                return Err(err(
                    format!("{field}.path.type"),
                    format!(
                        "{} is not Exact, PathPrefix or RegularExpression",
                        quote(other)
                    ),
                ));
            }
        }
    }
    string_matches(&m.headers, &format!("{field}.headers"), 4096)?;
    string_matches(&m.query_params, &format!("{field}.queryParams"), 1024)?;
    if let Some(method) = &m.method
        && !METHODS.contains(&method.as_str())
    {
        return Err(err(
            format!("{field}.method"),
            format!("{} is not one of {}", quote(method), METHODS.join(", ")),
        ));
    }
    Ok(())
}

fn timeouts(t: &HTTPRouteTimeouts, field: &str) -> Result<(), FieldError> {
    let request = t
        .request
        .as_deref()
        .map(|d| duration(d, &format!("{field}.request")))
        .transpose()?;
    let backend = t
        .backend_request
        .as_deref()
        .map(|d| duration(d, &format!("{field}.backendRequest")))
        .transpose()?;
    if let (Some(r), Some(b)) = (request, backend)
        && !r.is_zero()
        && b > r
    {
        return Err(err(
            format!("{field}.backendRequest"),
            "is longer than timeouts.request",
        ));
    }
    Ok(())
}

/// The most route configuration one route may make for one Service parent, in bytes
/// (estimated). Every match of a rule becomes an Envoy route carrying the rule's header
/// filters and backends, in the route table every sidecar of the mesh receives: a bound
/// keeps one route from bloating everyone's.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

fn filter_bytes(fs: &[HTTPRouteFilter]) -> usize {
    fs.iter()
        .flat_map(|f| {
            [
                f.request_header_modifier.as_ref(),
                f.response_header_modifier.as_ref(),
            ]
        })
        .flatten()
        .map(|h| {
            h.set
                .iter()
                .chain(&h.add)
                .map(|x| x.name.len() + x.value.len() + 48)
                .sum::<usize>()
                + h.remove.iter().map(|r| r.len() + 8).sum::<usize>()
        })
        .sum::<usize>()
        + fs.iter().filter(|f| f.request_mirror.is_some()).count() * 200
        + fs.iter()
            .map(|f| {
                let path = |m: Option<&crate::gateway::HTTPPathModifier>| {
                    m.map_or(0, |m| {
                        m.replace_full_path.as_ref().map_or(0, String::len)
                            + m.replace_prefix_match.as_ref().map_or(0, String::len)
                            + 64
                    })
                };
                let redirect = f.request_redirect.as_ref().map_or(0, |r| {
                    r.hostname.as_ref().map_or(0, String::len) + path(r.path.as_ref()) + 64
                });
                let rewrite = f.url_rewrite.as_ref().map_or(0, |r| {
                    r.hostname.as_ref().map_or(0, String::len) + path(r.path.as_ref()) + 64
                });
                redirect + rewrite
            })
            .sum::<usize>()
}

/// The estimated size of one copy of what a route renders: for each rule, each of its
/// matches (at least one) carries the match itself and the rule's filters and backends.
fn per_copy<'a, M: serde::Serialize + 'a>(
    rules: impl Iterator<Item = (&'a [M], &'a [HTTPRouteFilter], &'a [BackendRef])>,
) -> usize {
    let mut total = 0usize;
    for (matches, filters, backends) in rules {
        let backends: usize = backends
            .iter()
            .map(|b| 160 + filter_bytes(&b.filters))
            .sum();
        let route = filter_bytes(filters) + backends + 256;
        total += if matches.is_empty() {
            route
        } else {
            matches.iter().map(|m| json_len(m) + route).sum()
        };
    }
    total
}

/// Checks a route's estimated size: every Service parent gets its own copy (the
/// translator checks again per Service port, which validation cannot see).
fn rendered_size(per_copy: usize, parents: &[ParentReference]) -> Result<(), FieldError> {
    let copies = parents.iter().filter(|p| p.is_service()).count().max(1);
    let total = per_copy.saturating_mul(copies);
    if total > MAX_RENDERED_BYTES {
        return Err(err(
            "spec.rules",
            format!(
                "would make about {} KiB of route configuration for its {copies} Service parent(s), over the {} KiB limit: use fewer matches per rule, smaller header filters or fewer parentRefs",
                total / 1024,
                MAX_RENDERED_BYTES / 1024
            ),
        ));
    }
    Ok(())
}

fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_string(v).map(|s| s.len()).unwrap_or(0)
}

/// Host names: lower-case DNS names, optionally `*.` first, at most 253.
fn hostnames(h: &[String]) -> Result<(), FieldError> {
    at_most(h, MAX_LIST, "spec.hostnames")?;
    for (i, name) in h.iter().enumerate() {
        let rest = name.strip_prefix("*.").unwrap_or(name);
        if name.len() > 253 || !is_subdomain(rest) {
            return Err(err(
                format!("spec.hostnames[{i}]"),
                format!(
                    "{} is not a host name (lower-case DNS name, optionally *. first)",
                    quote(name)
                ),
            ));
        }
    }
    Ok(())
}

/// What both route kinds check of the whole spec besides the rules' count.
fn spec_common(
    parent_refs: &[ParentReference],
    hosts: &[String],
    rules: usize,
    matches: usize,
) -> Result<(), FieldError> {
    parents(parent_refs)?;
    hostnames(hosts)?;
    // An absent list is defaulted to one rule; an empty one is refused upstream.
    if rules == 0 {
        return Err(err("spec.rules", "must have at least one rule"));
    }
    if matches > MAX_TOTAL_MATCHES {
        return Err(err(
            "spec.rules",
            format!("have {matches} matches in all; the limit is {MAX_TOTAL_MATCHES}"),
        ));
    }
    Ok(())
}

/// What both route kinds check of one rule besides its matches (and, for HTTPRoute,
/// timeouts and retries).
fn rule_common(
    f: &str,
    name: Option<&String>,
    fs: &[HTTPRouteFilter],
    bs: &[BackendRef],
    session_persistence: bool,
    grpc: bool,
) -> Result<(), FieldError> {
    name_pattern(
        name,
        &format!("{f}.name"),
        is_subdomain,
        "a rule name (a DNS subdomain)",
    )?;
    let on = if grpc { On::GrpcRule } else { On::HttpRule };
    filters(fs, &format!("{f}.filters"), on)?;
    backends(bs, &format!("{f}.backendRefs"), grpc, fs)?;
    if session_persistence {
        return Err(FieldError::unsupported(
            format!("{f}.sessionPersistence"),
            "session persistence is not supported by Rudder",
        ));
    }
    Ok(())
}

impl HTTPRouteSpec {
    /// Checks the spec; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        at_most(&self.rules, MAX_RULES, "spec.rules")?;
        spec_common(
            &self.parent_refs,
            &self.hostnames,
            self.rules.len(),
            self.rules.iter().map(|r| r.matches.len()).sum(),
        )?;
        for (i, r) in self.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            at_most(&r.matches, MAX_MATCHES, &format!("{f}.matches"))?;
            for (j, m) in r.matches.iter().enumerate() {
                http_match(m, &format!("{f}.matches[{j}]"))?;
            }
            rule_common(
                &f,
                r.name.as_ref(),
                &r.filters,
                &r.backend_refs,
                r.session_persistence.is_some(),
                false,
            )?;
            // No matches stands for the default `PathPrefix /`; so does a match without
            // a path.
            let one_prefix_match = r.matches.is_empty()
                || (r.matches.len() == 1
                    && r.matches[0]
                        .path
                        .as_ref()
                        .is_none_or(|p| matches!(p.type_.as_deref(), None | Some("PathPrefix"))));
            path_filters_fit(&r.filters, one_prefix_match, !r.backend_refs.is_empty(), &f)?;
            if let Some(t) = &r.timeouts {
                timeouts(t, &format!("{f}.timeouts"))?;
            }
            if let Some(retry) = &r.retry {
                let rf = format!("{f}.retry");
                if let Some(a) = retry.attempts
                    && !(0..=MAX_ATTEMPTS).contains(&a)
                {
                    let message = format!("{a} is not 0 to {MAX_ATTEMPTS}");
                    return Err(if a < 0 {
                        err(format!("{rf}.attempts"), message)
                    } else {
                        // Valid upstream; Rudder sends at most 10 (as RetryPolicy).
                        FieldError::unsupported(format!("{rf}.attempts"), message)
                    });
                }
                for (k, c) in retry.codes.iter().enumerate() {
                    if !(400..=599).contains(c) {
                        return Err(err(
                            format!("{rf}.codes[{k}]"),
                            format!("{c} is not 400 to 599"),
                        ));
                    }
                }
                if let Some(b) = &retry.backoff {
                    let d = duration(b, &format!("{rf}.backoff"))?;
                    if d.is_zero() {
                        // Valid upstream; Envoy needs a backoff above 0.
                        return Err(FieldError::unsupported(
                            format!("{rf}.backoff"),
                            "must be above 0 (Envoy refuses a zero backoff)",
                        ));
                    }
                }
            }
        }
        rendered_size(self.rendered_bytes(), &self.parent_refs)
    }

    /// The estimated size of one copy of what the route renders (per Service port).
    pub fn rendered_bytes(&self) -> usize {
        per_copy(self.rules.iter().map(|r| {
            (
                r.matches.as_slice(),
                r.filters.as_slice(),
                r.backend_refs.as_slice(),
            )
        }))
    }
}

/// A gRPC method match as a condition on the HTTP/2 path `/SERVICE/METHOD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcPath {
    /// Every method.
    Any,
    /// Exactly this path.
    Exact(String),
    /// Paths starting with this.
    Prefix(String),
    /// A full-match RE2 expression.
    Regex(String),
}

/// The path condition of a method match: `Exact` service and method give the path,
/// a service alone its prefix `/SERVICE/`, a method alone `/[^/]+/METHOD`;
/// `RegularExpression` parts are grouped, `[^/]+` standing for a missing one. A leading
/// `.` of a fully qualified service name is not part of the path.
pub fn grpc_method_path(m: &GRPCMethodMatch) -> GrpcPath {
    if m.type_.as_deref() == Some("RegularExpression") {
        return GrpcPath::Regex(format!(
            "/(?:{})/(?:{})",
            m.service.as_deref().unwrap_or("[^/]+"),
            m.method.as_deref().unwrap_or("[^/]+")
        ));
    }
    let service = m
        .service
        .as_deref()
        .map(|s| s.strip_prefix('.').unwrap_or(s));
    // Exact method names are identifiers: nothing to escape.
    match (service, m.method.as_deref()) {
        (Some(s), Some(m)) => GrpcPath::Exact(format!("/{s}/{m}")),
        (Some(s), None) => GrpcPath::Prefix(format!("/{s}/")),
        (None, Some(m)) => GrpcPath::Regex(format!("/[^/]+/{m}")),
        (None, None) => GrpcPath::Any,
    }
}

fn grpc_match(m: &GRPCRouteMatch, field: &str) -> Result<(), FieldError> {
    string_matches(&m.headers, &format!("{field}.headers"), 4096)?;
    let Some(method) = &m.method else {
        return Ok(());
    };
    let f = format!("{field}.method");
    if method.service.is_none() && method.method.is_none() {
        return Err(err(f, "one of service and method must be set"));
    }
    let regex_type = match method.type_.as_deref() {
        None | Some("Exact") => false,
        Some("RegularExpression") => true,
        Some(other) => {
            return Err(err(
                format!("{f}.type"),
                format!("{} is not Exact or RegularExpression", quote(other)),
            ));
        }
    };
    for (part, v, service) in [
        ("service", &method.service, true),
        ("method", &method.method, false),
    ] {
        let Some(v) = v else { continue };
        let pf = format!("{f}.{part}");
        if v.len() > 1024 {
            return Err(err(pf, "is longer than 1024 characters"));
        }
        if regex_type {
            regex(v, &pf)?;
            continue;
        }
        let ident = |s: &str| {
            let mut c = s.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        };
        let ok = if service {
            let s = v.strip_prefix('.').unwrap_or(v);
            !s.is_empty() && s.split('.').all(ident)
        } else {
            ident(v)
        };
        if !ok {
            return Err(err(pf, format!("{} is not a gRPC {part} name", quote(v))));
        }
    }
    // The regex sent is the composed one: it must fit Envoy's limits as a whole.
    if let GrpcPath::Regex(re) = grpc_method_path(method) {
        regex(&re, &f)?;
    }
    Ok(())
}

impl GRPCRouteSpec {
    /// Checks the spec; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        at_most(&self.rules, MAX_RULES, "spec.rules")?;
        spec_common(
            &self.parent_refs,
            &self.hostnames,
            self.rules.len(),
            self.rules.iter().map(|r| r.matches.len()).sum(),
        )?;
        for (i, r) in self.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            at_most(&r.matches, MAX_GRPC_MATCHES, &format!("{f}.matches"))?;
            for (j, m) in r.matches.iter().enumerate() {
                grpc_match(m, &format!("{f}.matches[{j}]"))?;
            }
            rule_common(
                &f,
                r.name.as_ref(),
                &r.filters,
                &r.backend_refs,
                r.session_persistence.is_some(),
                true,
            )?;
        }
        rendered_size(self.rendered_bytes(), &self.parent_refs)
    }

    /// The estimated size of one copy of what the route renders (per Service port).
    pub fn rendered_bytes(&self) -> usize {
        per_copy(self.rules.iter().map(|r| {
            (
                r.matches.as_slice(),
                r.filters.as_slice(),
                r.backend_refs.as_slice(),
            )
        }))
    }
}
