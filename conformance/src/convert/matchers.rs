//! String matchers, regexes (within Rudder's limits), header names and values.

use std::sync::Arc;

use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, regex_matcher, string_matcher::MatchPattern,
};

use super::check::{Path, R, must_be_default, shorten};
use super::limits::{MAX_NAME, MAX_REGEX_LEN, REGEX_SIZE_LIMIT};
use crate::config::listener::StringMatch;

/// Compiles `pattern` as a whole-value match (anchored, as RE2's full match).
pub(crate) fn regex(path: &Path, pattern: &str) -> R<Arc<regex::Regex>> {
    compile(path, pattern, true)
}

/// Compiles `pattern` unanchored (for rewrites: every match is replaced).
pub(crate) fn regex_unanchored(path: &Path, pattern: &str) -> R<Arc<regex::Regex>> {
    compile(path, pattern, false)
}

fn compile(path: &Path, pattern: &str, anchored: bool) -> R<Arc<regex::Regex>> {
    let len = pattern.chars().count();
    if len > MAX_REGEX_LEN {
        return Err(path.err(format!(
            "regex of {len} characters, at most {MAX_REGEX_LEN} accepted"
        )));
    }
    let text = if anchored {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_string()
    };
    regex::RegexBuilder::new(&text)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(100)
        .build()
        .map(Arc::new)
        .map_err(|e| {
            let why = match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("compiles to more than {limit} bytes")
                }
                other => shorten(&other.to_string().replace('\n', " ")),
            };
            path.err(format!("invalid regex {:?}: {why}", shorten(pattern)))
        })
}

/// `type.matcher.v3.RegexMatcher`: RE2 (the only engine), the whole value.
pub(crate) fn regex_matcher(path: &Path, m: &RegexMatcher) -> R<Arc<regex::Regex>> {
    if let Some(regex_matcher::EngineType::GoogleRe2(re2)) = &m.engine_type {
        must_be_default!(path.f("google_re2"), re2, max_program_size);
    }
    regex(&path.f("regex"), &m.regex)
}

/// `type.matcher.v3.StringMatcher`.
pub(crate) fn string_matcher(path: &Path, m: &StringMatcher) -> R<StringMatch> {
    let ic = m.ignore_case;
    let bounded = |field: &str, s: &str| -> R<String> {
        if s.len() > MAX_NAME {
            return Err(path.f(field).err(format!("longer than {MAX_NAME} bytes")));
        }
        Ok(s.to_string())
    };
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(bounded("exact", s)?, ic),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(bounded("prefix", s)?, ic),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(bounded("suffix", s)?, ic),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(bounded("contains", s)?, ic),
        // As in Envoy, `ignore_case` has no effect on a regex.
        Some(MatchPattern::SafeRegex(r)) => {
            StringMatch::Regex(regex_matcher(&path.f("safe_regex"), r)?)
        }
        Some(MatchPattern::Custom(_)) => return Err(path.f("custom").unsupported()),
        None => return Err(path.err("a string matcher needs a match pattern")),
    })
}

/// A header name to match on: a valid HTTP header name (lowercased) or a pseudo-header
/// (`:method`, `:authority`, `:path`, `:scheme`).
pub(crate) fn match_header_name(path: &Path, name: &str) -> R<String> {
    if let Some(pseudo) = name.strip_prefix(':') {
        if matches!(
            pseudo,
            "method" | "authority" | "path" | "scheme" | "protocol"
        ) {
            return Ok(name.to_string());
        }
        return Err(path.err(format!("unknown pseudo-header {:?}", shorten(name))));
    }
    header_name(path, name).map(|h| h.as_str().to_string())
}

/// A header name to add, remove or match: a valid HTTP header name, lowercased (header
/// names are case-insensitive; Envoy accepts `X-Header-Set` and matches it as
/// `x-header-set`, and Rudder passes Gateway API names through as written).
pub(crate) fn header_name(path: &Path, name: &str) -> R<http::HeaderName> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(path.err(format!("a header name must have 1 to {MAX_NAME} bytes")));
    }
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        path.err(format!(
            "invalid header name {:?} (HTTP token characters only)",
            shorten(name)
        ))
    })
}

/// A header value: no control characters but tab.
pub(crate) fn header_value(path: &Path, value: &[u8]) -> R<http::HeaderValue> {
    if value.len() > 16 * 1024 {
        return Err(path.err("a header value longer than 16 KiB"));
    }
    http::HeaderValue::from_bytes(value)
        .map_err(|_| path.err("invalid header value (control characters)"))
}
