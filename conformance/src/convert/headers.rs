//! Header edits (`request_headers_to_add` / `_remove`, `response_headers_to_add` /
//! `_remove`) of virtual hosts, routes and weighted clusters: valid, lowercase names,
//! valid values, and how each header is added.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, header_value_option::HeaderAppendAction,
};

use super::check::{Path, R, each, enumerated, must_be_default};
use super::limits::MAX_LIST;
use super::matchers::{header_name, header_value};
use crate::config::route::{AppendAction, HeaderAdd, HeaderEdits};

/// Header edits of a host, a route or a weighted cluster (`path` is the message that
/// holds the four lists).
pub(crate) fn header_edits(
    path: &Path,
    request_add: &[HeaderValueOption],
    request_remove: &[String],
    response_add: &[HeaderValueOption],
    response_remove: &[String],
) -> R<HeaderEdits> {
    let removes = |field: &str, names: &[String]| {
        each(&path.f(field), names, MAX_LIST, |p, n| {
            modifiable(p, header_name(p, n)?).map(|h| h.as_str().to_string())
        })
    };
    Ok(HeaderEdits {
        request_add: each(
            &path.f("request_headers_to_add"),
            request_add,
            MAX_LIST,
            header_add,
        )?,
        request_remove: removes("request_headers_to_remove", request_remove)?,
        response_add: each(
            &path.f("response_headers_to_add"),
            response_add,
            MAX_LIST,
            header_add,
        )?,
        response_remove: removes("response_headers_to_remove", response_remove)?,
    })
}

/// As Envoy: `host` (like a pseudo-header) may not be added or removed.
fn modifiable(path: &Path, name: http::HeaderName) -> R<http::HeaderName> {
    if name == http::header::HOST {
        return Err(path.err(":-prefixed or host headers may not be modified"));
    }
    Ok(name)
}

pub(crate) fn header_add(path: &Path, o: &HeaderValueOption) -> R<HeaderAdd> {
    must_be_default!(path, o, keep_empty_value);
    let hp = path.f("header");
    let h = o
        .header
        .as_ref()
        .ok_or_else(|| hp.err("a header is required"))?;
    let name = modifiable(&hp.f("key"), header_name(&hp.f("key"), &h.key)?)?;
    let value = match (h.value.is_empty(), h.raw_value.is_empty()) {
        (_, true) => header_value(&hp.f("value"), h.value.as_bytes())?,
        (true, false) => header_value(&hp.f("raw_value"), &h.raw_value)?,
        (false, false) => return Err(hp.err("value and raw_value are both set")),
    };
    let ap = path.f("append_action");
    let action = enumerated::<HeaderAppendAction>(&ap, o.append_action)?;
    let append = match (o.append, action) {
        (None, a) => match a {
            HeaderAppendAction::AppendIfExistsOrAdd => AppendAction::AppendIfExistsOrAdd,
            HeaderAppendAction::AddIfAbsent => AppendAction::AddIfAbsent,
            HeaderAppendAction::OverwriteIfExistsOrAdd => AppendAction::OverwriteIfExistsOrAdd,
            HeaderAppendAction::OverwriteIfExists => AppendAction::OverwriteIfExists,
        },
        // The deprecated `append`, as Envoy reads it: true appends, false overwrites.
        (Some(b), HeaderAppendAction::AppendIfExistsOrAdd) if b.value => {
            AppendAction::AppendIfExistsOrAdd
        }
        (Some(_), HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
        (Some(_), _) => {
            return Err(path
                .f("append")
                .err("append and append_action are both set"));
        }
    };
    Ok(HeaderAdd {
        name,
        value,
        append,
    })
}
