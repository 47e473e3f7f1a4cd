//! The proxy-neutral authorization of one inbound port ([`InboundAuthz`]): the rules a
//! proxy enforces and the ones it only records (dry run), as lists of allow policies,
//! each a set of caller identities and a set of requests. Resolved from the model by
//! [`crate::policy::authz`], rendered by each emitter (Envoy and gRPC RBAC), and
//! evaluated here for `xdsctl authz check` ([`Rules::decide`]), so the answer comes
//! from the same rules the proxies are sent.

use crate::model::ObjectKey;

/// Who may call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Callers {
    /// Peers whose certificate names one of these SPIFFE IDs.
    Identities(Vec<String>),
    /// Peers whose SPIFFE ID starts with this prefix (`spiffe://TD/ns/NS/`).
    IdentityPrefix(String),
}

/// One HTTP request match: every condition given must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestMatch {
    /// Methods, any of them (empty: any method).
    pub methods: Vec<String>,
    /// RE2 the whole path (without the query) must match.
    pub path_regex: Option<String>,
    /// Header name (lowercase) and RE2 its whole value must match.
    pub headers: Vec<(String, String)>,
}

/// What may be asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Requests {
    /// Anything: every request, every connection.
    Any,
    /// HTTP requests matching any of these (none: nothing).
    Http(Vec<RequestMatch>),
}

/// One allow policy: callers that may make these requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllowPolicy {
    /// Its name in the proxy's config and in answers (`TrafficTarget NS/NAME`, ...).
    pub name: String,
    /// The object it comes from, if any.
    pub source: Option<ObjectKey>,
    /// Who.
    pub callers: Callers,
    /// What.
    pub requests: Requests,
}

/// Allow rules: a request passes when some policy allows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rules {
    /// The policies, in a stable order.
    pub policies: Vec<AllowPolicy>,
}

/// The authorization of one inbound port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InboundAuthz {
    /// The rules enforced; `None`: every caller is allowed (no filter at all).
    pub enforced: Option<Rules>,
    /// The rules recorded but not enforced (TrafficTargets in dry run): what would
    /// happen with them enforced.
    pub shadow: Option<Rules>,
}

impl InboundAuthz {
    /// Whether nothing is enforced or recorded (the proxy needs no filter).
    pub fn is_open(&self) -> bool {
        self.enforced.is_none() && self.shadow.is_none()
    }

    /// The objects (TrafficTargets) its policies come from: a proxy's rejection of the
    /// resource names them.
    pub fn sources(&self) -> impl Iterator<Item = ObjectKey> + '_ {
        self.enforced
            .iter()
            .chain(self.shadow.iter())
            .flat_map(|r| r.policies.iter().filter_map(|p| p.source.clone()))
    }
}

/// A request as `xdsctl authz check` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// The caller's SPIFFE ID (`None`: plain text).
    pub caller: Option<&'a str>,
    /// The HTTP method and path, for an HTTP port (`None`: a TCP connection).
    pub http: Option<(&'a str, &'a str)>,
    /// Request headers (lowercase names).
    pub headers: &'a [(String, String)],
}

/// An answer: allowed or not, and the policies that allowed it (empty when denied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request passes.
    pub allowed: bool,
    /// The policies that allow it.
    pub by: Vec<String>,
}

/// Whether RE2 `re` matches all of `s` (an invalid regex matches nothing; the model
/// refuses those before they get here).
fn full_match(re: &str, s: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(s))
}

impl RequestMatch {
    fn matches(&self, method: &str, path: &str, headers: &[(String, String)]) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && self
                .path_regex
                .as_ref()
                .is_none_or(|re| full_match(re, path))
            && self.headers.iter().all(|(name, re)| {
                headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && full_match(re, v))
            })
    }
}

impl AllowPolicy {
    /// Whether this policy allows `req`.
    pub fn allows(&self, req: &Request<'_>) -> bool {
        let who = match (&self.callers, req.caller) {
            (_, None) => false,
            (Callers::Identities(ids), Some(c)) => ids.iter().any(|id| id == c),
            (Callers::IdentityPrefix(p), Some(c)) => c.starts_with(p.as_str()),
        };
        who && match (&self.requests, req.http) {
            (Requests::Any, _) => true,
            (Requests::Http(_), None) => false,
            (Requests::Http(ms), Some((method, path))) => {
                ms.iter().any(|m| m.matches(method, path, req.headers))
            }
        }
    }
}

impl Rules {
    /// Whether `req` passes these rules, and which policies let it.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let by: Vec<String> = self
            .policies
            .iter()
            .filter(|p| p.allows(req))
            .map(|p| p.name.clone())
            .collect();
        Decision {
            allowed: !by.is_empty(),
            by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(requests: Requests) -> AllowPolicy {
        AllowPolicy {
            name: "TrafficTarget shop/t".into(),
            source: None,
            callers: Callers::Identities(vec!["spiffe://td/ns/shop/sa/web".into()]),
            requests,
        }
    }

    #[test]
    fn a_policy_needs_both_the_caller_and_the_request() {
        let api = RequestMatch {
            methods: vec!["GET".into()],
            path_regex: Some("/api/.*".into()),
            headers: vec![("x-env".into(), "prod|stage".into())],
        };
        let rules = Rules {
            policies: vec![policy(Requests::Http(vec![api]))],
        };
        let h = vec![("X-Env".to_string(), "prod".to_string())];
        let web = Some("spiffe://td/ns/shop/sa/web");
        let req = |caller, method, path| Request {
            caller,
            http: Some((method, path)),
            headers: &h,
        };
        assert!(rules.decide(&req(web, "GET", "/api/items?x=1")).allowed);
        assert!(!rules.decide(&req(web, "POST", "/api/items")).allowed);
        assert!(
            !rules.decide(&req(web, "GET", "/apix")).allowed,
            "the whole path"
        );
        assert!(
            !rules
                .decide(&req(Some("spiffe://td/ns/shop/sa/other"), "GET", "/api/x"))
                .allowed
        );
        assert!(
            !rules.decide(&req(None, "GET", "/api/x")).allowed,
            "plain text"
        );
        let tcp = Request {
            caller: web,
            http: None,
            headers: &[],
        };
        assert!(!rules.decide(&tcp).allowed, "HTTP rules allow no TCP");
        let any = Rules {
            policies: vec![policy(Requests::Any)],
        };
        assert_eq!(any.decide(&tcp).by, ["TrafficTarget shop/t"]);
    }
}
