//! The proxy-neutral routing IR: what requests to one Service port do (rules, matches,
//! weighted destinations, retries, timeouts, header edits, mirrors), with facts about each
//! backend an emitter may need. Resolvers ([`crate::policy`], [`crate::gamma`]) produce it;
//! emitters ([`crate::envoy`], [`crate::grpc`]) render it for their client kind. Nothing
//! here knows who renders it.

use crds::{HTTPMatch, RetryPolicy};

use crate::model::{ObjectKey, Protocol};

/// Where one weighted share of requests goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A cluster.
    Cluster(String),
    /// A backend that did not resolve (a Gateway API backendRef): its share fails, as
    /// [`RuleExtra::no_backend_status`] says.
    Missing,
}

/// Where matching requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// One cluster.
    Cluster(String),
    /// Shares with weights (each > 0, sum within u32: the policy checked).
    Weighted(Vec<(Backend, u32)>),
    /// No backend resolved (a GRPCRoute rule whose backends are all missing or weighted
    /// 0): every request fails, as [`RuleExtra::no_backend_status`] says.
    NoBackend,
    /// No backend: answered by the proxy with this HTTP status (an HTTPRoute rule
    /// whose backends are all missing or weighted 0 gets 500).
    Status(u32),
}

/// Facts about one backend cluster a port routes to, for emitters that cannot reach
/// every kind of backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BackendFacts {
    /// The cluster.
    pub cluster: String,
    /// Whether it is an HTTP port of a Service with endpoints
    /// ([`crate::model::MeshService::http_with_endpoints`]): not an ExternalName Service
    /// (DNS) and not a TCP port.
    pub http_with_endpoints: bool,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathMatch {
    /// Starts with these characters (`/` is every path).
    Prefix(String),
    /// Starts with these whole segments (Gateway API `PathPrefix`: `/foo` matches `/foo`
    /// and `/foo/bar`, not `/foobar`).
    Segments(String),
    /// Exactly this path.
    Exact(String),
    /// A full-match RE2 expression.
    Regex(String),
}

/// A string condition (header, query parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StrMatch {
    /// Exactly this value.
    Exact(String),
    /// A full-match RE2 expression.
    Regex(String),
}

/// What a request must look like; every condition must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    pub path: PathMatch,
    /// (name, condition), in order.
    pub headers: Vec<(String, StrMatch)>,
    pub query: Vec<(String, StrMatch)>,
    /// Any of these methods (empty: any method).
    pub methods: Vec<String>,
}

impl Match {
    /// An SMI HTTPRouteGroup match: a path regex, header regexes and methods (`*` is
    /// any method).
    pub(crate) fn smi(m: &HTTPMatch) -> Self {
        Match {
            path: match &m.path_regex {
                Some(re) => PathMatch::Regex(re.clone()),
                None => PathMatch::Prefix("/".into()),
            },
            headers: m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), StrMatch::Regex(v.clone())))
                .collect(),
            query: Vec::new(),
            methods: if m.methods.iter().any(|x| x == "*") {
                Vec::new()
            } else {
                m.methods.clone()
            },
        }
    }
}

/// Header changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderEdits {
    /// Replace (or add).
    pub set: Vec<(String, String)>,
    /// Append.
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// What a Gateway API rule sets beyond where requests go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleExtra {
    /// The route that set it (for diagnostics).
    pub source: Option<ObjectKey>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// `timeouts.request` (zero: none); overrides a RetryPolicy's timeout.
    pub timeout: Option<std::time::Duration>,
    /// `timeouts.backendRequest`: each attempt.
    pub backend_timeout: Option<std::time::Duration>,
    /// `retry`; overrides the RetryPolicy.
    pub retry: Option<Retry>,
    /// The HTTP status of requests whose share has no backend ([`Backend::Missing`],
    /// [`Dest::NoBackend`]): 500 (HTTPRoute) or 503
    /// (GRPCRoute: read as UNAVAILABLE).
    pub no_backend_status: u32,
    /// `RequestMirror` filters: (cluster, share of requests in millionths).
    pub mirrors: Vec<(String, u32)>,
    /// Per-backend header filters: (cluster, request changes, response changes).
    pub backend_headers: Vec<(String, HeaderEdits, HeaderEdits)>,
    /// `RequestRedirect`: requests are answered with a redirect, not forwarded.
    pub redirect: Option<Redirect>,
    /// `URLRewrite`: requests are forwarded with a new host or path.
    pub rewrite: Option<Rewrite>,
}

/// How a redirect or rewrite changes the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathChange {
    /// The whole path becomes this.
    Full(String),
    /// The part of the path the rule's prefix match matched becomes this.
    Prefix(String),
}

/// A `RequestRedirect` filter: the parts of the request's URL the `Location` replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Redirect {
    /// The filter's field (for diagnostics), `spec.rules[I].filters[J]`.
    pub field: String,
    /// `http` or `https`; None keeps the request's.
    pub scheme: Option<String>,
    pub host: Option<String>,
    /// The port as the filter sets it; None: the scheme's well-known port when the
    /// scheme is set, else the Service port (the emitter knows it).
    pub port: Option<u16>,
    pub path: Option<PathChange>,
    /// 301, 302, 303, 307 or 308.
    pub status: u32,
}

impl Redirect {
    /// The scheme of the `Location` (a mesh request is plain HTTP to its proxy).
    pub(crate) fn final_scheme(&self) -> &str {
        self.scheme.as_deref().unwrap_or("http")
    }

    /// The port the `Location` names, for a rule of Service port `service_port`.
    pub(crate) fn final_port(&self, service_port: u16) -> u16 {
        match (self.port, self.scheme.as_deref()) {
            (Some(p), _) => p,
            (None, Some("https")) => 443,
            (None, Some(_)) => 80,
            (None, None) => service_port,
        }
    }
}

/// A `URLRewrite` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// The filter's field (for diagnostics), `spec.rules[I].filters[J]`.
    pub field: String,
    pub host: Option<String>,
    pub path: Option<PathChange>,
}

/// One rule: requests matching `matches` (all requests when `None`) go to `dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub matches: Option<Match>,
    pub dest: Dest,
    /// Set by Gateway API routes only.
    pub extra: Option<Box<RuleExtra>>,
}

/// The RetryPolicy in effect, as values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// The policy's name (for diagnostics).
    pub name: String,
    /// Named conditions (`5xx`, `unavailable`, ...).
    pub on: Vec<String>,
    /// HTTP status codes.
    pub codes: Vec<u32>,
    pub num_retries: u32,
    pub per_try_timeout: Option<std::time::Duration>,
    /// (base, max) backoff intervals.
    pub backoff: Option<(std::time::Duration, Option<std::time::Duration>)>,
    /// Whether it sets a retry budget.
    pub budget: bool,
}

/// What requests to one Service port do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortRouting {
    /// `FQDN:PORT`.
    pub name: String,
    pub protocol: Protocol,
    /// In order; the last matches every request.
    pub rules: Vec<Rule>,
    /// The RetryPolicy in effect, if any.
    pub retry: Option<Retry>,
    /// The overall request timeout a RetryPolicy sets, if any.
    pub timeout: Option<std::time::Duration>,
    /// Clusters it routes to.
    pub refs: Vec<String>,
    /// Objects it was made from.
    pub sources: Vec<ObjectKey>,
    /// Facts about the backends among `refs`, in the order they were named (a backend
    /// named twice is listed twice).
    pub backends: Vec<BackendFacts>,
}

pub(crate) fn duration(s: Option<&str>) -> Option<std::time::Duration> {
    s.and_then(|d| crds::duration::parse(d).ok())
}

/// A RetryPolicy as values.
pub(crate) fn retry(p: &RetryPolicy) -> Retry {
    let spec = &p.spec;
    let mut on = Vec::new();
    let mut codes = Vec::new();
    for c in &spec.retry_on {
        match c.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => on.push(c.clone()),
        }
    }
    Retry {
        name: p.metadata.name.clone().unwrap_or_default(),
        on,
        codes,
        num_retries: spec.num_retries.unwrap_or(1),
        per_try_timeout: duration(spec.per_try_timeout.as_deref()),
        backoff: spec.backoff.as_ref().and_then(|b| {
            Some((
                duration(Some(&b.base_interval))?,
                duration(b.max_interval.as_deref()),
            ))
        }),
        budget: spec.budget.is_some(),
    }
}

/// Escapes `s` for use as a literal in an RE2 expression.
pub(crate) fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}
