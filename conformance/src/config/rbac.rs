//! Role-based access control, as Envoy's `envoy.filters.http.rbac` and
//! `envoy.filters.network.rbac` decide it: the policies (permissions and principals) of
//! the enforced and the shadow rules, and the decision, a pure function of what a
//! request or connection shows ([`Subject`]: the HTTP request if there is one, the
//! destination port, the TLS peer's URI SANs). Conversion is `convert::rbac`; counting
//! the decision and acting on it is the data path's (`data::rbac`).
//!
//! Envoy's semantics: a policy matches when any of its permissions and any of its
//! principals match; `ALLOW` rules allow what some policy matches (no policy: nothing),
//! `DENY` rules allow what none matches. Absent rules allow everything and count
//! nothing. Shadow rules are decided and counted, never enforced.
//!
//! `authenticated` matches a TLS connection: without a principal name, any TLS
//! connection (as Envoy, even one whose peer sent no certificate); with one, when one of
//! the peer certificate's URI SANs matches it. Envoy would then also try the DNS SANs and
//! the subject; Rudder's certificates carry a SPIFFE URI only, so this does not.

use super::matcher::StringMatch;
use super::route::{HeaderMatch, RequestView};

/// An RBAC filter's two sets of rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rbac {
    /// The enforced rules (`rules`); none: every request or connection is allowed and
    /// `allowed`/`denied` are not counted.
    pub rules: Option<Rules>,
    /// The shadow rules (`shadow_rules`): decided and counted (`shadow_allowed`,
    /// `shadow_denied`), never enforced.
    pub shadow: Option<Rules>,
}

/// `envoy.filters.network.rbac`: the rules and where their counters go.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRbac {
    /// `stat_prefix`: counters are `<stat_prefix>.rbac.allowed` and so on.
    pub stat_prefix: String,
    /// The rules.
    pub rbac: Rbac,
}

/// `config.rbac.v3.RBAC`: an action and the policies it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// `ALLOW` or `DENY`.
    pub action: Action,
    /// The policies, by name (sorted, as Envoy keeps them).
    pub policies: Vec<Policy>,
}

/// What matching a policy means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Allowed only when a policy matches.
    Allow,
    /// Denied when a policy matches.
    Deny,
}

/// One named policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Its name (the key in `policies`).
    pub name: String,
    /// Any of these must match (at least one).
    pub permissions: Vec<Permission>,
    /// And any of these (at least one).
    pub principals: Vec<Principal>,
}

/// What is being done (`config.rbac.v3.Permission`), the subset Rudder emits.
#[derive(Clone, Debug, PartialEq)]
pub enum Permission {
    /// `any: true`.
    Any,
    /// `and_rules`: every one matches.
    And(Vec<Permission>),
    /// `or_rules`: one matches.
    Or(Vec<Permission>),
    /// `not_rule`.
    Not(Box<Permission>),
    /// `header`: a request header (pseudo-headers too) as a route matches it; with no
    /// request (the network filter) every header is absent.
    Header(HeaderMatch),
    /// `url_path`: the path without query and fragment; never matches without a path
    /// (a connection, a CONNECT request).
    UrlPath(StringMatch),
    /// `destination_port`: the port the connection was for (its original destination
    /// under interception).
    DestinationPort(u16),
}

/// Who is doing it (`config.rbac.v3.Principal`), the subset Rudder emits.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    /// `any: true`.
    Any,
    /// `and_ids`: every one matches.
    And(Vec<Principal>),
    /// `or_ids`: one matches.
    Or(Vec<Principal>),
    /// `not_id`.
    Not(Box<Principal>),
    /// `authenticated`: a TLS connection, and (when set) one of the peer certificate's
    /// URI SANs matches `principal_name`.
    Authenticated(Option<StringMatch>),
}

/// The downstream side of the connection as RBAC sees it.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    /// Plain text: `authenticated` never matches.
    Plain,
    /// TLS was terminated; the verified peer certificate's URI SANs (none when the
    /// peer sent no certificate).
    Tls {
        /// URI SANs of the peer certificate.
        uri_sans: &'a [String],
    },
}

/// What a decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The HTTP request (the HTTP filter), or none (the network filter).
    pub request: Option<&'a RequestView<'a>>,
    /// The destination port of the connection.
    pub destination_port: u16,
    /// The downstream peer.
    pub peer: Peer<'a>,
}

/// The outcome of both sets of rules: `None` where there are no rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The enforced rules allowed (`Some(true)`) or denied (`Some(false)`).
    pub enforced: Option<bool>,
    /// The shadow rules would have allowed or denied.
    pub shadow: Option<bool>,
}

impl Decision {
    /// Whether the request or connection goes on (only enforced rules deny).
    pub fn allowed(&self) -> bool {
        self.enforced != Some(false)
    }
}

impl Rbac {
    /// Decides `s` under both sets of rules.
    pub fn decide(&self, s: &Subject<'_>) -> Decision {
        Decision {
            enforced: self.rules.as_ref().map(|r| r.allows(s)),
            shadow: self.shadow.as_ref().map(|r| r.allows(s)),
        }
    }
}

impl Rules {
    /// Whether these rules allow `s`.
    pub fn allows(&self, s: &Subject<'_>) -> bool {
        let matched = self.policies.iter().any(|p| p.matches(s));
        match self.action {
            Action::Allow => matched,
            Action::Deny => !matched,
        }
    }
}

impl Policy {
    /// Whether one permission and one principal match `s`.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(s))
            && self.principals.iter().any(|p| p.matches(s))
    }
}

impl Permission {
    /// Whether this permission matches `s`.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::And(all) => all.iter().all(|p| p.matches(s)),
            Permission::Or(any) => any.iter().any(|p| p.matches(s)),
            Permission::Not(p) => !p.matches(s),
            Permission::Header(h) => h.matches(header(s.request, &h.name).as_deref()),
            Permission::UrlPath(m) => url_path(s.request).is_some_and(|p| m.matches(p)),
            Permission::DestinationPort(port) => s.destination_port == *port,
        }
    }
}

impl Principal {
    /// Whether this principal matches `s`.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::And(all) => all.iter().all(|p| p.matches(s)),
            Principal::Or(any) => any.iter().any(|p| p.matches(s)),
            Principal::Not(p) => !p.matches(s),
            Principal::Authenticated(name) => match s.peer {
                Peer::Plain => false,
                Peer::Tls { uri_sans } => name
                    .as_ref()
                    .is_none_or(|m| uri_sans.iter().any(|u| m.matches(u))),
            },
        }
    }
}

fn is_connect(req: &RequestView<'_>) -> bool {
    req.method.eq_ignore_ascii_case("CONNECT")
}

/// A header's value as an RBAC header matcher sees it: none without a request, and no
/// `:path` for CONNECT (it has none).
fn header(req: Option<&RequestView<'_>>, name: &str) -> Option<String> {
    let req = req?;
    if name == ":path" && is_connect(req) {
        return None;
    }
    req.header(name)
}

/// The URL path: `:path` without its query and fragment.
fn url_path<'a>(req: Option<&'a RequestView<'a>>) -> Option<&'a str> {
    let req = req.filter(|r| !is_connect(r))?;
    let p = req.path_and_query;
    Some(p.find(['?', '#']).map_or(p, |i| &p[..i]))
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
