//! String matchers, shared by listeners (SAN checks) and routes (headers, query).

use std::sync::Arc;

/// A string matcher (`type.matcher.v3.StringMatcher`), exact or prefix or suffix or
/// contains or regex, optionally ignoring ASCII case.
#[derive(Clone, Debug)]
pub enum StringMatch {
    /// Equal.
    Exact(String, bool),
    /// Starts with.
    Prefix(String, bool),
    /// Ends with.
    Suffix(String, bool),
    /// Contains.
    Contains(String, bool),
    /// Matches the whole value (RE2 semantics, compiled within Rudder's limits).
    Regex(Arc<regex::Regex>),
}

impl StringMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        fn fold(s: &str, ignore_case: bool) -> std::borrow::Cow<'_, str> {
            if ignore_case {
                std::borrow::Cow::Owned(s.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(s)
            }
        }
        match self {
            StringMatch::Exact(s, ic) => fold(value, *ic) == fold(s, *ic),
            StringMatch::Prefix(s, ic) => fold(value, *ic).starts_with(&*fold(s, *ic)),
            StringMatch::Suffix(s, ic) => fold(value, *ic).ends_with(&*fold(s, *ic)),
            StringMatch::Contains(s, ic) => fold(value, *ic).contains(&*fold(s, *ic)),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}
