//! Validation of the filters that change where a request goes: `RequestRedirect` and
//! `URLRewrite` bodies and their path modifiers, as upstream's schema and CEL say, bounded
//! so that what Envoy is sent (`redirect`, `host_rewrite_literal`, `prefix_rewrite`,
//! `regex_rewrite`) is always valid; and upstream's path characters, which path matches
//! use too.

use super::checks::err;
use crate::error::FieldError;
use crate::gateway::{HTTPPathModifier, HTTPRequestRedirectFilter, HTTPURLRewriteFilter};
use crate::text::is_dns_subdomain;
use crate::text::quote;

/// The redirect status codes (upstream: 301 and 302 core, 303, 307 and 308 extended).
pub const REDIRECT_CODES: [i32; 5] = [301, 302, 303, 307, 308];

/// The longest path a modifier may set, as upstream.
const MAX_PATH: usize = 1024;

/// Upstream's path characters: `[-A-Za-z0-9/._~!$&'()*+,;=:@]` or `%` and two hex digits.
pub(super) fn path_chars(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |x: Option<&u8>| x.is_some_and(u8::is_ascii_hexdigit);
            if !(hex(b.get(i + 1)) && hex(b.get(i + 2))) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&c)) {
            return false;
        }
        i += 1;
    }
    true
}

/// A precise host name: a lower-case DNS name, no wildcard, at most 253 characters.
fn hostname(h: &str, field: &str) -> Result<(), FieldError> {
    if h.len() > 253 || !is_dns_subdomain(h) {
        return Err(err(
            field,
            format!("{} is not a host name (a lower-case DNS name)", quote(h)),
        ));
    }
    Ok(())
}

/// A path a modifier sets: absolute, in upstream's path characters, at most 1,024.
fn new_path(v: &str, field: &str) -> Result<(), FieldError> {
    if v.len() > MAX_PATH {
        return Err(err(field, format!("is longer than {MAX_PATH} characters")));
    }
    if !v.starts_with('/') {
        return Err(err(field, format!("{} must be an absolute path", quote(v))));
    }
    if !path_chars(v) {
        return Err(err(
            field,
            format!(
                "{} is not a path (letters, digits, -/._~!$&'()*+,;=:@ and %XX escapes)",
                quote(v)
            ),
        ));
    }
    Ok(())
}

/// A path modifier: its type and exactly the value its type names (upstream CEL).
pub(super) fn path_modifier(m: &HTTPPathModifier, field: &str) -> Result<(), FieldError> {
    let (value, name, other) = match m.type_.as_str() {
        "ReplaceFullPath" => (
            &m.replace_full_path,
            "replaceFullPath",
            m.replace_prefix_match
                .is_some()
                .then_some("replacePrefixMatch"),
        ),
        "ReplacePrefixMatch" => (
            &m.replace_prefix_match,
            "replacePrefixMatch",
            m.replace_full_path.is_some().then_some("replaceFullPath"),
        ),
        other => {
            return Err(err(
                format!("{field}.type"),
                format!(
                    "{} is not ReplaceFullPath or ReplacePrefixMatch",
                    quote(other)
                ),
            ));
        }
    };
    if let Some(other) = other {
        return Err(err(
            format!("{field}.{other}"),
            format!("must not be set when type is {}", m.type_),
        ));
    }
    let Some(v) = value else {
        return Err(err(
            format!("{field}.{name}"),
            format!("must be set when type is {}", m.type_),
        ));
    };
    new_path(v, &format!("{field}.{name}"))
}

/// A `RequestRedirect` body.
pub(super) fn redirect(r: &HTTPRequestRedirectFilter, field: &str) -> Result<(), FieldError> {
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        return Err(err(
            format!("{field}.scheme"),
            format!("{} is not http or https", quote(s)),
        ));
    }
    if let Some(h) = &r.hostname {
        hostname(h, &format!("{field}.hostname"))?;
    }
    if let Some(p) = r.port
        && !(1..=65535).contains(&p)
    {
        return Err(err(
            format!("{field}.port"),
            format!("{p} is not a port (1 to 65535)"),
        ));
    }
    if let Some(c) = r.status_code
        && !REDIRECT_CODES.contains(&c)
    {
        return Err(err(
            format!("{field}.statusCode"),
            format!("{c} is not one of 301, 302, 303, 307, 308"),
        ));
    }
    if let Some(m) = &r.path {
        path_modifier(m, &format!("{field}.path"))?;
    }
    Ok(())
}

/// A `URLRewrite` body.
pub(super) fn rewrite(r: &HTTPURLRewriteFilter, field: &str) -> Result<(), FieldError> {
    if let Some(h) = &r.hostname {
        hostname(h, &format!("{field}.hostname"))?;
    }
    if let Some(m) = &r.path {
        path_modifier(m, &format!("{field}.path"))?;
    }
    Ok(())
}
