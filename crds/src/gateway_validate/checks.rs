//! The checks and limits both route validation and filter validation use: list and
//! backend-weight limits, the field error, HTTP tokens and header values, RE2 patterns,
//! Gateway API durations and name patterns.

use crate::error::FieldError;
use crate::text::quote;

/// Most backendRefs, filters, header matches, header modifications and host names, as
/// upstream.
pub(super) const MAX_LIST: usize = 16;
/// The largest backend weight.
pub const MAX_WEIGHT: i32 = 1_000_000;

pub(super) fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

pub(super) fn at_most<T>(items: &[T], max: usize, field: &str) -> Result<(), FieldError> {
    if items.len() > max {
        return Err(err(
            field,
            format!("has {} items; the limit is {max}", items.len()),
        ));
    }
    Ok(())
}

/// An HTTP token (header or query parameter name), 1 to 256 characters.
pub(super) fn token(name: &str, field: &str) -> Result<(), FieldError> {
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
pub(super) fn value(v: &str, max: usize, field: &str) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > max {
        return Err(err(field, format!("must be 1 to {max} bytes long")));
    }
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(err(field, format!("{} has a control character", quote(v))));
    }
    Ok(())
}

pub(super) fn regex(pattern: &str, field: &str) -> Result<(), FieldError> {
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

pub(super) fn name_pattern(
    v: Option<&String>,
    field: &str,
    ok: fn(&str) -> bool,
    what: &str,
) -> Result<(), FieldError> {
    match v {
        Some(v) if !ok(v) => Err(err(field, format!("{} is not {what}", quote(v)))),
        _ => Ok(()),
    }
}
