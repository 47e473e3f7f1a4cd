//! Validation of filters (on rules and on backends) and of backendRefs.

use super::checks::{MAX_LIST, MAX_WEIGHT, at_most, err, name_pattern, token, value};
use super::paths::{redirect, rewrite};
use crate::error::FieldError;
use crate::gateway::{BackendRef, HTTPHeaderFilter, HTTPRequestMirrorFilter, HTTPRouteFilter};
use crate::text::is_dns_label as is_label;
use crate::text::quote;

/// Filters Rudder implements on a rule (on a GRPCRoute, only those GRPCRoute defines).
pub const SUPPORTED_FILTERS: [&str; 5] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
];

/// Filters Rudder implements on a backend (Envoy weighted clusters carry header changes,
/// not mirrors).
pub const SUPPORTED_BACKEND_FILTERS: [&str; 2] =
    ["RequestHeaderModifier", "ResponseHeaderModifier"];

fn header_filter(h: &HTTPHeaderFilter, field: &str) -> Result<(), FieldError> {
    let mut seen: Vec<String> = Vec::new();
    for (list, what) in [(&h.set, "set"), (&h.add, "add")] {
        at_most(list, MAX_LIST, &format!("{field}.{what}"))?;
        for (i, hd) in list.iter().enumerate() {
            let f = format!("{field}.{what}[{i}]");
            token(&hd.name, &format!("{f}.name"))?;
            value(&hd.value, 4096, &format!("{f}.value"))?;
            let lower = hd.name.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(err(
                    format!("{f}.name"),
                    format!("{} is modified twice", quote(&hd.name)),
                ));
            }
            seen.push(lower);
        }
    }
    at_most(&h.remove, MAX_LIST, &format!("{field}.remove"))?;
    for (i, name) in h.remove.iter().enumerate() {
        let f = format!("{field}.remove[{i}]");
        token(name, &f)?;
        // One action per header name; `remove` is a set.
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(err(
                f,
                format!("{} is also set, added or removed", quote(name)),
            ));
        }
        seen.push(lower);
    }
    // Envoy refuses a route that modifies the Host header, of requests and of responses
    // alike (":-prefixed or host headers may not be modified").
    let names = h.set.iter().chain(&h.add).map(|x| x.name.as_str());
    if let Some(n) = names
        .chain(h.remove.iter().map(String::as_str))
        .find(|n| n.eq_ignore_ascii_case("host"))
    {
        return Err(FieldError::unsupported(
            field,
            format!("{} cannot be modified (Envoy refuses it)", quote(n)),
        ));
    }
    Ok(())
}

/// Filter types upstream defines for HTTPRoute (core, extended, experimental).
const HTTP_FILTERS: [&str; 8] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
    "ExternalAuth",
];

/// Filter types upstream defines for GRPCRoute.
const GRPC_FILTERS: [&str; 4] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

/// Each filter body with the type it belongs to.
fn bodies(f: &HTTPRouteFilter) -> [(&'static str, &'static str, bool); 8] {
    [
        (
            "RequestHeaderModifier",
            "requestHeaderModifier",
            f.request_header_modifier.is_some(),
        ),
        (
            "ResponseHeaderModifier",
            "responseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        ("RequestMirror", "requestMirror", f.request_mirror.is_some()),
        (
            "RequestRedirect",
            "requestRedirect",
            f.request_redirect.is_some(),
        ),
        ("URLRewrite", "urlRewrite", f.url_rewrite.is_some()),
        ("ExtensionRef", "extensionRef", f.extension_ref.is_some()),
        ("CORS", "cors", f.cors.is_some()),
        ("ExternalAuth", "externalAuth", f.external_auth.is_some()),
    ]
}

/// Where a filter list is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum On {
    HttpRule,
    GrpcRule,
    HttpBackend,
    GrpcBackend,
}

/// A backend reference's own fields: name, namespace, port (required for a Service).
fn reference(
    name: &str,
    namespace: Option<&String>,
    port: Option<i32>,
    service: bool,
    f: &str,
) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > 253 {
        return Err(err(format!("{f}.name"), "must be 1 to 253 characters"));
    }
    name_pattern(
        namespace,
        &format!("{f}.namespace"),
        is_label,
        "a namespace name (a DNS label)",
    )?;
    match port {
        Some(p) if !(1..=65535).contains(&p) => Err(err(
            format!("{f}.port"),
            format!("{p} is not a port (1 to 65535)"),
        )),
        None if service => Err(err(
            format!("{f}.port"),
            "is required for a Service backend",
        )),
        _ => Ok(()),
    }
}

fn mirror(m: &HTTPRequestMirrorFilter, field: &str) -> Result<(), FieldError> {
    let b = &m.backend_ref;
    reference(
        &b.name,
        b.namespace.as_ref(),
        b.port,
        b.as_backend().is_service(),
        &format!("{field}.backendRef"),
    )?;
    if m.percent.is_some() && m.fraction.is_some() {
        return Err(err(field, "percent and fraction are exclusive"));
    }
    if let Some(p) = m.percent
        && !(0..=100).contains(&p)
    {
        return Err(err(
            format!("{field}.percent"),
            format!("{p} is not 0 to 100"),
        ));
    }
    if let Some(fr) = &m.fraction {
        let d = fr.denominator.unwrap_or(100);
        if d < 1 {
            return Err(err(
                format!("{field}.fraction.denominator"),
                "must be at least 1",
            ));
        }
        if fr.numerator < 0 || fr.numerator > d {
            return Err(err(
                format!("{field}.fraction.numerator"),
                format!("{} is not 0 to the denominator ({d})", fr.numerator),
            ));
        }
    }
    Ok(())
}

pub(super) fn filters(fs: &[HTTPRouteFilter], field: &str, on: On) -> Result<(), FieldError> {
    at_most(fs, MAX_LIST, field)?;
    let grpc = matches!(on, On::GrpcRule | On::GrpcBackend);
    let supported: &[&str] = match on {
        On::HttpRule | On::GrpcRule => &SUPPORTED_FILTERS,
        On::HttpBackend | On::GrpcBackend => &SUPPORTED_BACKEND_FILTERS,
    };
    let mut kinds: Vec<&str> = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let known: &[&str] = if grpc { &GRPC_FILTERS } else { &HTTP_FILTERS };
        if !known.contains(&f.type_.as_str()) {
            return Err(err(
                format!("{path}.type"),
                format!("{} is not one of {}", quote(&f.type_), known.join(", ")),
            ));
        }
        if !supported.contains(&f.type_.as_str()) {
            return Err(FieldError::unsupported(
                format!("{path}.type"),
                format!(
                    "filter {} is not supported by Rudder here; only {}",
                    quote(&f.type_),
                    supported.join(", ")
                ),
            ));
        }
        let (own, name) = bodies(f)
            .into_iter()
            .find(|(t, _, _)| *t == f.type_)
            .map(|(_, name, present)| (present, name))
            .unwrap_or((false, ""));
        if !own {
            return Err(err(path, format!("type {} needs its field set", f.type_)));
        }
        // As upstream's CEL: only the body the type names.
        if let Some((_, other, _)) = bodies(f)
            .into_iter()
            .find(|(t, _, present)| *present && *t != f.type_)
        {
            return Err(err(
                format!("{path}.{other}"),
                format!("must not be set on a filter of type {}", f.type_),
            ));
        }
        let body_field = format!("{path}.{name}");
        // Every filter but a mirror at most once (upstream CEL); mirrors may repeat.
        if f.request_mirror.is_none() {
            if kinds.contains(&f.type_.as_str()) {
                return Err(err(
                    format!("{path}.type"),
                    format!("{} appears twice", f.type_),
                ));
            }
            kinds.push(&f.type_);
        }
        if let Some(h) = f
            .request_header_modifier
            .as_ref()
            .or(f.response_header_modifier.as_ref())
        {
            header_filter(h, &body_field)?;
        }
        if let Some(m) = &f.request_mirror {
            mirror(m, &body_field)?;
        }
        if let Some(r) = &f.request_redirect {
            redirect(r, &body_field)?;
        }
        if let Some(r) = &f.url_rewrite {
            rewrite(r, &body_field)?;
        }
    }
    // As upstream's CEL: a redirect answers the request, a rewrite forwards it.
    if kinds.contains(&"RequestRedirect") && kinds.contains(&"URLRewrite") {
        return Err(err(
            field,
            "RequestRedirect and URLRewrite cannot both be used in one rule",
        ));
    }
    Ok(())
}

/// What a rule's redirect or rewrite needs of the rest of the rule (upstream CEL): a
/// redirect has no backendRefs; a `ReplacePrefixMatch` path needs exactly one match, a
/// `PathPrefix` one (no matches stands for the default `PathPrefix /`).
pub(super) fn path_filters_fit(
    fs: &[HTTPRouteFilter],
    one_prefix_match: bool,
    has_backends: bool,
    field: &str,
) -> Result<(), FieldError> {
    for (i, f) in fs.iter().enumerate() {
        let at = format!("{field}.filters[{i}]");
        let (modifier, body) = match (&f.request_redirect, &f.url_rewrite) {
            (Some(r), _) => {
                if has_backends {
                    return Err(err(
                        format!("{field}.backendRefs"),
                        format!(
                            "must be empty: filters[{i}] is a RequestRedirect, which answers the request itself"
                        ),
                    ));
                }
                (r.path.as_ref(), "requestRedirect")
            }
            (None, Some(r)) => (r.path.as_ref(), "urlRewrite"),
            (None, None) => continue,
        };
        if let Some(m) = modifier
            && m.type_ == "ReplacePrefixMatch"
            && !one_prefix_match
        {
            return Err(err(
                format!("{at}.{body}.path"),
                "ReplacePrefixMatch needs exactly one match, with a PathPrefix path",
            ));
        }
    }
    Ok(())
}

/// Header names a filter list modifies (lower case), request and response apart.
fn modified(fs: &[HTTPRouteFilter]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for (request, h) in fs.iter().flat_map(|f| {
        [
            (true, f.request_header_modifier.as_ref()),
            (false, f.response_header_modifier.as_ref()),
        ]
    }) {
        let Some(h) = h else { continue };
        let names = h.set.iter().chain(&h.add).map(|x| x.name.as_str());
        for n in names.chain(h.remove.iter().map(String::as_str)) {
            out.push((request, n.to_ascii_lowercase()));
        }
    }
    out
}

/// A rule's backends, with `rule_filters` the rule's own filters: a header both modify
/// is refused (Envoy would apply the rule's change last, silently overriding the
/// backend's).
pub(super) fn backends(
    bs: &[BackendRef],
    field: &str,
    grpc: bool,
    rule_filters: &[HTTPRouteFilter],
) -> Result<(), FieldError> {
    at_most(bs, MAX_LIST, field)?;
    let by_rule = modified(rule_filters);
    for (i, b) in bs.iter().enumerate() {
        // Two references to one Service port merge into one weighted cluster: only
        // without filters of their own.
        if let Some(j) = bs[..i].iter().position(|o| {
            (&o.group, &o.kind, &o.namespace, &o.name, o.port)
                == (&b.group, &b.kind, &b.namespace, &b.name, b.port)
        }) && (!b.filters.is_empty() || !bs[j].filters.is_empty())
        {
            return Err(err(
                format!("{field}[{i}]"),
                format!(
                    "names the same backend as backendRefs[{j}], and one of them has filters; merge them into one"
                ),
            ));
        }
        let f = format!("{field}[{i}]");
        reference(&b.name, b.namespace.as_ref(), b.port, b.is_service(), &f)?;
        if let Some(w) = b.weight
            && !(0..=MAX_WEIGHT).contains(&w)
        {
            return Err(err(
                format!("{f}.weight"),
                format!("{w} is not 0 to {MAX_WEIGHT}"),
            ));
        }
        let on = if grpc {
            On::GrpcBackend
        } else {
            On::HttpBackend
        };
        filters(&b.filters, &format!("{f}.filters"), on)?;
        if let Some((request, name)) = modified(&b.filters)
            .into_iter()
            .find(|m| by_rule.contains(m))
        {
            return Err(err(
                format!("{f}.filters"),
                format!(
                    "the {} header {} is also modified by the rule's filters; modify it in one place",
                    if request { "request" } else { "response" },
                    quote(&name)
                ),
            ));
        }
    }
    Ok(())
}
