//! String matchers, shared by listeners (SAN checks) and routes (headers, query), and
//! how two compiled patterns compare (by their source: the configuration's equality,
//! which decides whether a listener update drains anything).

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

impl PartialEq for StringMatch {
    fn eq(&self, other: &Self) -> bool {
        use StringMatch::{Contains, Exact, Prefix, Regex, Suffix};
        match (self, other) {
            (Exact(a, x), Exact(b, y))
            | (Prefix(a, x), Prefix(b, y))
            | (Suffix(a, x), Suffix(b, y))
            | (Contains(a, x), Contains(b, y)) => a == b && x == y,
            (Regex(a), Regex(b)) => same_regex(a, b),
            _ => false,
        }
    }
}

/// Whether two compiled patterns are the same configuration: the same source (every
/// pattern is compiled with the same options).
pub fn same_regex(a: &regex::Regex, b: &regex::Regex) -> bool {
    a.as_str() == b.as_str()
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
