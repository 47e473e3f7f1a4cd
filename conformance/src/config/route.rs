//! Routes: virtual hosts chosen by authority, routes by path, headers, query and
//! method, and what a matched route does.

use std::sync::Arc;
use std::time::Duration;

use super::matcher::{StringMatch, same_regex};

/// A route configuration (RDS, or inline in a listener).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Its name.
    pub name: String,
    /// Virtual hosts in order.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A virtual host: the authorities it answers to and its routes, first match wins.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    /// Its name.
    pub name: String,
    /// Domains as Envoy matches them: exact (with or without port) first, then the
    /// longest suffix wildcard (`*.example.com`), then the longest prefix wildcard
    /// (`10.*`), then `*`.
    pub domains: Vec<String>,
    /// Routes in order.
    pub routes: Vec<Route>,
    /// Header edits applied to every request and response of this host.
    pub headers: HeaderEdits,
    /// A retry policy for routes that have none.
    pub retry: Option<Arc<RetryPolicy>>,
}

/// One route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Its name (may be empty).
    pub name: String,
    /// What a request must look like.
    pub matcher: RouteMatch,
    /// What is done with it.
    pub action: Action,
    /// Header edits of this route.
    pub headers: HeaderEdits,
}

/// `route.match`: the path and every header and query matcher must match.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteMatch {
    /// How the path matches.
    pub path: PathMatch,
    /// The path match is case sensitive (default true).
    pub case_sensitive: bool,
    /// Header matchers (`:method` among them for method matches).
    pub headers: Vec<HeaderMatch>,
    /// Query parameter matchers.
    pub query: Vec<QueryMatch>,
    /// Only CONNECT requests (`connect_matcher`).
    pub connect: bool,
}

/// How the path (without the query) matches.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// `prefix` (a plain string prefix, as Envoy compares it).
    Prefix(String),
    /// `path`: equal.
    Exact(String),
    /// `safe_regex`: the whole path matches.
    Regex(Arc<regex::Regex>),
    /// `path_separated_prefix`: the prefix followed by `/`, `?` or the end.
    SeparatedPrefix(String),
}

impl PartialEq for PathMatch {
    fn eq(&self, other: &Self) -> bool {
        use PathMatch::{Exact, Prefix, Regex, SeparatedPrefix};
        match (self, other) {
            (Prefix(a), Prefix(b))
            | (Exact(a), Exact(b))
            | (SeparatedPrefix(a), SeparatedPrefix(b)) => a == b,
            (Regex(a), Regex(b)) => same_regex(a, b),
            _ => false,
        }
    }
}

/// A header matcher.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatch {
    /// Lowercase header name (`:method`, `:authority`, ... for pseudo-headers).
    pub name: String,
    /// How the value matches.
    pub value: HeaderValueMatch,
    /// Inverts the result.
    pub invert: bool,
}

impl HeaderMatch {
    /// Whether the request's header (its value as [`RequestView::header`] gives it,
    /// none when absent) matches. As in Envoy, an absent header never matches a value
    /// matcher, inverted or not.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match &self.value {
            HeaderValueMatch::Present(want) => (value.is_some() == *want) != self.invert,
            HeaderValueMatch::String(sm) => value.is_some_and(|v| sm.matches(v) != self.invert),
        }
    }
}

/// What a request matcher (a route's, an RBAC permission's) looks at.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:authority` (or `Host`).
    pub authority: &'a str,
    /// `:path` with its query (empty for CONNECT).
    pub path_and_query: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
}

impl RequestView<'_> {
    /// The path without its query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(p, _)| p)
    }

    /// The query, if any.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }

    /// The value a header matcher sees: pseudo-headers, else every value joined by `,`.
    pub fn header(&self, name: &str) -> Option<String> {
        match name {
            ":method" => Some(self.method.to_string()),
            ":authority" | "host" => Some(self.authority.to_string()),
            ":path" => Some(self.path_and_query.to_string()),
            ":scheme" => Some(self.scheme.to_string()),
            _ => {
                let values: Vec<&str> = self
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!values.is_empty()).then(|| values.join(","))
            }
        }
    }
}

/// How a header's value matches.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValueMatch {
    /// The header is present (or, with `false`, absent).
    Present(bool),
    /// A string matcher on the value (several values are joined with `,`).
    String(StringMatch),
}

/// A query parameter matcher.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryMatch {
    /// The parameter's name.
    pub name: String,
    /// How its (first) value matches; none: present.
    pub value: Option<StringMatch>,
}

/// What a matched route does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Forward to a cluster or a weighted set of clusters.
    Route(Arc<RouteAction>),
    /// Answer directly.
    Direct {
        /// The status.
        status: u16,
        /// The body, if any.
        body: Option<bytes::Bytes>,
    },
    /// Redirect.
    Redirect(Arc<Redirect>),
}

/// `route` action.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteAction {
    /// Where it goes.
    pub destination: Destination,
    /// The whole request's timeout (`timeout`; Envoy's default 15 s; zero: none).
    pub timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Mirrors, each sent with the given share of requests.
    pub mirrors: Vec<Mirror>,
    /// Path rewrites.
    pub rewrite: Option<Rewrite>,
    /// `host_rewrite_literal`.
    pub host_rewrite: Option<String>,
    /// `max_stream_duration.max_stream_duration` (or the gRPC timeout header cap), if set.
    pub max_stream_duration: Option<Duration>,
    /// CONNECT requests to this route are tunnelled (`upgrade_configs` CONNECT on the
    /// route, or the listener's).
    pub connect: bool,
    /// The status answered when the cluster chosen is not known
    /// (`cluster_not_found_response_code`: 503 by default, 404 or 500).
    pub cluster_not_found_status: u16,
}

/// A route's destination.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    /// One cluster by name.
    Cluster(String),
    /// Weighted clusters: each request picks one in proportion to its weight.
    Weighted(Vec<WeightedCluster>),
}

/// One share of weighted clusters.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedCluster {
    /// The cluster.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Header edits of this backend.
    pub headers: HeaderEdits,
}

/// A path rewrite.
#[derive(Clone, Debug)]
pub enum Rewrite {
    /// Replace the matched prefix (`prefix_rewrite`).
    Prefix(String),
    /// Replace every match of the pattern (`regex_rewrite`).
    Regex(Arc<regex::Regex>, String),
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Rewrite::Prefix(a), Rewrite::Prefix(b)) => a == b,
            (Rewrite::Regex(a, x), Rewrite::Regex(b, y)) => same_regex(a, b) && x == y,
            _ => false,
        }
    }
}

/// A redirect.
#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    /// Scheme to use, if set.
    pub scheme: Option<String>,
    /// Host to use, if set.
    pub host: Option<String>,
    /// Port to use, if set.
    pub port: Option<u16>,
    /// The path: unchanged, replaced, or its matched prefix replaced.
    pub path: RedirectPath,
    /// The status (301, 302, 303, 307 or 308).
    pub status: u16,
    /// Drop the query (`strip_query`).
    pub strip_query: bool,
}

/// The path of a redirect.
#[derive(Clone, Debug)]
pub enum RedirectPath {
    /// Unchanged.
    Keep,
    /// `path_redirect`.
    Full(String),
    /// `prefix_rewrite`.
    Prefix(String),
    /// `regex_rewrite`.
    Regex(Arc<regex::Regex>, String),
}

impl PartialEq for RedirectPath {
    fn eq(&self, other: &Self) -> bool {
        use RedirectPath::{Full, Keep, Prefix, Regex};
        match (self, other) {
            (Keep, Keep) => true,
            (Full(a), Full(b)) | (Prefix(a), Prefix(b)) => a == b,
            (Regex(a, x), Regex(b, y)) => same_regex(a, b) && x == y,
            _ => false,
        }
    }
}

/// A request mirror.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// The cluster mirrored to.
    pub cluster: String,
    /// The share of requests mirrored, in millionths (`runtime_fraction`'s default);
    /// 1,000,000 when unset.
    pub per_million: u32,
}

/// Header edits (`request_headers_to_add` / `_remove`, `response_headers_to_add` /
/// `_remove`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderEdits {
    /// Request headers to add, in order.
    pub request_add: Vec<HeaderAdd>,
    /// Request headers to remove (lowercase).
    pub request_remove: Vec<String>,
    /// Response headers to add, in order.
    pub response_add: Vec<HeaderAdd>,
    /// Response headers to remove (lowercase).
    pub response_remove: Vec<String>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// One header added.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderAdd {
    /// Lowercase name.
    pub name: http::HeaderName,
    /// Value.
    pub value: http::HeaderValue,
    /// How it is added.
    pub append: AppendAction,
}

/// `header_value_option.append_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    /// Append to any existing values (the default).
    AppendIfExistsOrAdd,
    /// Add only if absent.
    AddIfAbsent,
    /// Replace any existing values.
    OverwriteIfExistsOrAdd,
    /// Replace only if present.
    OverwriteIfExists,
}

/// `retry_policy`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// The conditions (`retry_on`).
    pub on: RetryOn,
    /// Retries after the first try (`num_retries`, Envoy's default 1).
    pub num_retries: u32,
    /// Each try's timeout, if set.
    pub per_try_timeout: Option<Duration>,
    /// Backoff between tries (`retry_back_off`, default base 25 ms, max 10 x base),
    /// fully jittered as Envoy does.
    pub backoff: Backoff,
    /// Status codes that `retriable-status-codes` retries.
    pub retriable_status_codes: Vec<u16>,
}

/// The `retry_on` conditions Rudder emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`: a 5xx answer, a reset or a failed connection.
    pub five_xx: bool,
    /// `gateway-error`: 502, 503, 504, a reset or a failed connection.
    pub gateway_error: bool,
    /// `reset`: the upstream reset or closed before answering.
    pub reset: bool,
    /// `reset-before-request`: the upstream reset before the request was sent.
    pub reset_before_request: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// `retriable-status-codes`.
    pub retriable_status_codes: bool,
    /// `retriable-4xx`: a 409 answer.
    pub retriable_4xx: bool,
    /// gRPC conditions: the answer's `grpc-status` (in the headers of a trailers-only
    /// answer) is `cancelled` (1), `deadline-exceeded` (4), `resource-exhausted` (8),
    /// `internal` (13) or `unavailable` (14).
    pub grpc: GrpcRetryOn,
}

/// The gRPC `retry_on` conditions (by `grpc-status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcRetryOn {
    /// `cancelled` (1).
    pub cancelled: bool,
    /// `deadline-exceeded` (4).
    pub deadline_exceeded: bool,
    /// `resource-exhausted` (8).
    pub resource_exhausted: bool,
    /// `internal` (13).
    pub internal: bool,
    /// `unavailable` (14).
    pub unavailable: bool,
}

/// Retry backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The base interval.
    pub base: Duration,
    /// The cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}
