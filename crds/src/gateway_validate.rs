//! Validation of HTTPRoute and GRPCRoute specs: what the upstream schema and CEL rules
//! enforce (repeated for the manifest directory, which has no API server), the limits of
//! what Rudder emits (Envoy's regex engine, header names Envoy will not modify), and
//! what Rudder does not implement ([`FieldError::unsupported`]). Errors name the field.

use crate::FieldError;
use crate::gateway::{
    BackendRef, GRPCRouteMatch, GRPCRouteSpec, HTTPHeaderFilter, HTTPHeaderMatch, HTTPRouteFilter,
    HTTPRouteMatch, HTTPRouteSpec, HTTPRouteTimeouts, ParentReference,
};
use crate::text::quote;

/// Most parentRefs, rules, backendRefs, filters and header matches, as upstream.
const MAX_PARENTS: usize = 32;
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;
const MAX_TOTAL_MATCHES: usize = 128;
const MAX_LIST: usize = 16;
/// The largest backend weight.
pub const MAX_WEIGHT: i32 = 1_000_000;
/// The most retries Rudder sends (as RetryPolicy's `numRetries`).
pub const MAX_ATTEMPTS: i32 = 10;

/// HTTP methods a match may name.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Filters Rudder implements.
pub const SUPPORTED_FILTERS: [&str; 2] = ["RequestHeaderModifier", "ResponseHeaderModifier"];

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

fn at_most<T>(items: &[T], max: usize, field: &str) -> Result<(), FieldError> {
    if items.len() > max {
        return Err(err(
            field,
            format!("has {} items; the limit is {max}", items.len()),
        ));
    }
    Ok(())
}

/// An HTTP token (header or query parameter name), 1 to 256 characters.
fn token(name: &str, field: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(
            field,
            format!(
                "{} is not a header name (1 to 256 token characters)",
                quote(name)
            ),
        ))
    }
}

/// A header value Envoy will carry: 1 to `max` bytes, no control characters.
fn value(v: &str, max: usize, field: &str) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > max {
        return Err(err(field, format!("must be 1 to {max} bytes long")));
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(err(field, format!("{} has a control character", quote(v))));
    }
    Ok(())
}

fn regex(pattern: &str, field: &str) -> Result<(), FieldError> {
    crate::re2::check(pattern).map_err(|m| err(field, m))
}

/// A Gateway API duration: `^([0-9]{1,5}(h|m|s|ms)){1,4}$` (GEP-2257).
pub fn duration(s: &str, field: &str) -> Result<std::time::Duration, FieldError> {
    let bad = || {
        err(
            field,
            format!(
                "{} is not a Gateway API duration (like 10s, 500ms or 1h30m)",
                quote(s)
            ),
        )
    };
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return Err(bad());
        }
        let tail = &rest[digits..];
        let unit = if tail.starts_with("ms") {
            2
        } else if tail.starts_with(['h', 'm', 's']) {
            1
        } else {
            return Err(bad());
        };
        rest = &tail[unit..];
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    crate::duration::parse(s).map_err(|_| bad())
}

fn parent(p: &ParentReference, field: &str) -> Result<(), FieldError> {
    if p.name.is_empty() || p.name.len() > 253 {
        return Err(err(format!("{field}.name"), "must be 1 to 253 characters"));
    }
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
    Ok(())
}

fn string_matches(ms: &[HTTPHeaderMatch], field: &str, max_value: usize) -> Result<(), FieldError> {
    at_most(ms, MAX_LIST, field)?;
    let mut seen: Vec<String> = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        let f = format!("{field}[{i}]");
        token(&m.name, &format!("{f}.name"))?;
        let lower = m.name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(err(
                format!("{f}.name"),
                format!("{} is matched twice", quote(&m.name)),
            ));
        }
        seen.push(lower);
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
                if v.chars().any(|c| c.is_control() || c == ' ' || c == '?') {
                    return Err(err(f, format!("{} is not a path", quote(v))));
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

fn header_filter(h: &HTTPHeaderFilter, field: &str, request: bool) -> Result<(), FieldError> {
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
        token(name, &format!("{field}.remove[{i}]"))?;
    }
    // Envoy refuses a route that modifies the Host header of requests.
    if request {
        let names = h.set.iter().chain(&h.add).map(|x| x.name.as_str());
        if let Some(n) = names
            .chain(h.remove.iter().map(String::as_str))
            .find(|n| n.eq_ignore_ascii_case("host"))
        {
            return Err(err(
                field,
                format!(
                    "{} cannot be modified (Envoy refuses it); route by a parentRef instead",
                    quote(n)
                ),
            ));
        }
    }
    Ok(())
}

fn filters(fs: &[HTTPRouteFilter], field: &str) -> Result<(), FieldError> {
    at_most(fs, MAX_LIST, field)?;
    let mut kinds: Vec<&str> = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let (request, body) = match f.type_.as_str() {
            "RequestHeaderModifier" => (true, f.request_header_modifier.as_ref()),
            "ResponseHeaderModifier" => (false, f.response_header_modifier.as_ref()),
            other => {
                return Err(FieldError::unsupported(
                    format!("{path}.type"),
                    format!(
                        "filter {} is not supported by Rudder; only {}",
                        quote(other),
                        SUPPORTED_FILTERS.join(" and ")
                    ),
                ));
            }
        };
        let Some(body) = body else {
            return Err(err(path, format!("type {} needs its field set", f.type_)));
        };
        if kinds.contains(&f.type_.as_str()) {
            return Err(err(
                format!("{path}.type"),
                format!("{} appears twice", f.type_),
            ));
        }
        kinds.push(&f.type_);
        let which = if request {
            "requestHeaderModifier"
        } else {
            "responseHeaderModifier"
        };
        header_filter(body, &format!("{path}.{which}"), request)?;
    }
    Ok(())
}

fn backends(bs: &[BackendRef], field: &str) -> Result<(), FieldError> {
    at_most(bs, MAX_LIST, field)?;
    for (i, b) in bs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if b.name.is_empty() || b.name.len() > 253 {
            return Err(err(format!("{f}.name"), "must be 1 to 253 characters"));
        }
        if let Some(w) = b.weight
            && !(0..=MAX_WEIGHT).contains(&w)
        {
            return Err(err(
                format!("{f}.weight"),
                format!("{w} is not 0 to {MAX_WEIGHT}"),
            ));
        }
        match b.port {
            Some(p) if !(1..=65535).contains(&p) => {
                return Err(err(
                    format!("{f}.port"),
                    format!("{p} is not a port (1 to 65535)"),
                ));
            }
            None if b.is_service() => {
                return Err(err(
                    format!("{f}.port"),
                    "is required for a Service backend",
                ));
            }
            _ => {}
        }
        if !b.filters.is_empty() {
            return Err(FieldError::unsupported(
                format!("{f}.filters"),
                "per-backend filters are not supported by Rudder; put them on the rule",
            ));
        }
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

fn hostnames(h: &[String]) -> Result<(), FieldError> {
    at_most(h, MAX_LIST, "spec.hostnames")
}

impl HTTPRouteSpec {
    /// Checks the spec; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        parents(&self.parent_refs)?;
        hostnames(&self.hostnames)?;
        at_most(&self.rules, MAX_RULES, "spec.rules")?;
        let total: usize = self.rules.iter().map(|r| r.matches.len()).sum();
        if total > MAX_TOTAL_MATCHES {
            return Err(err(
                "spec.rules",
                format!("have {total} matches in all; the limit is {MAX_TOTAL_MATCHES}"),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            at_most(&r.matches, MAX_MATCHES, &format!("{f}.matches"))?;
            for (j, m) in r.matches.iter().enumerate() {
                http_match(m, &format!("{f}.matches[{j}]"))?;
            }
            filters(&r.filters, &format!("{f}.filters"))?;
            backends(&r.backend_refs, &format!("{f}.backendRefs"))?;
            if let Some(t) = &r.timeouts {
                timeouts(t, &format!("{f}.timeouts"))?;
            }
            if let Some(retry) = &r.retry {
                let rf = format!("{f}.retry");
                if let Some(a) = retry.attempts
                    && !(0..=MAX_ATTEMPTS).contains(&a)
                {
                    return Err(err(
                        format!("{rf}.attempts"),
                        format!("{a} is not 0 to {MAX_ATTEMPTS}"),
                    ));
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
                        return Err(err(format!("{rf}.backoff"), "must be above 0"));
                    }
                }
            }
            if r.session_persistence.is_some() {
                return Err(FieldError::unsupported(
                    format!("{f}.sessionPersistence"),
                    "session persistence is not supported by Rudder",
                ));
            }
        }
        Ok(())
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
    Ok(())
}

impl GRPCRouteSpec {
    /// Checks the spec; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        parents(&self.parent_refs)?;
        hostnames(&self.hostnames)?;
        at_most(&self.rules, MAX_RULES, "spec.rules")?;
        let total: usize = self.rules.iter().map(|r| r.matches.len()).sum();
        if total > MAX_TOTAL_MATCHES {
            return Err(err(
                "spec.rules",
                format!("have {total} matches in all; the limit is {MAX_TOTAL_MATCHES}"),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            at_most(&r.matches, MAX_MATCHES, &format!("{f}.matches"))?;
            for (j, m) in r.matches.iter().enumerate() {
                grpc_match(m, &format!("{f}.matches[{j}]"))?;
            }
            filters(&r.filters, &format!("{f}.filters"))?;
            backends(&r.backend_refs, &format!("{f}.backendRefs"))?;
            if r.session_persistence.is_some() {
                return Err(FieldError::unsupported(
                    format!("{f}.sessionPersistence"),
                    "session persistence is not supported by Rudder",
                ));
            }
        }
        Ok(())
    }
}
