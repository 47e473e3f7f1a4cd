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
    /// Anyone, plain text included (the default allow of the ports a listener serves
    /// beside enforced ones).
    Anyone,
}

/// The destination ports a policy covers. It matters only on a listener that serves
/// several ports (an intercepted pod's passthrough); a port's own listener is `All`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Every port.
    #[default]
    All,
    /// Only these.
    Only(Vec<u16>),
    /// Every port but these.
    Except(Vec<u16>),
}

impl Ports {
    /// Whether `port` is covered.
    pub fn covers(&self, port: u16) -> bool {
        match self {
            Ports::All => true,
            Ports::Only(ps) => ps.contains(&port),
            Ports::Except(ps) => !ps.contains(&port),
        }
    }
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
    /// On which ports.
    pub ports: Ports,
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

    /// Whether a caller without a certificate may pass: nothing is enforced, or some
    /// enforced policy is open to anyone.
    pub fn admits_plain_text(&self) -> bool {
        self.enforced
            .as_ref()
            .is_none_or(|r| r.policies.iter().any(|p| p.callers == Callers::Anyone))
    }

    /// The callers the enforced rules admit when they decide on the caller alone (each
    /// policy allows everything on every port to certain identities): a proxy can then
    /// refuse any other caller in the TLS handshake, before the app is connected, so a
    /// server that speaks first never greets a denied caller. None when nothing is
    /// enforced or some policy also looks at requests or ports.
    pub fn handshake_callers(&self) -> Option<Vec<&Callers>> {
        let rules = self.enforced.as_ref()?;
        let mut out = Vec::new();
        for p in &rules.policies {
            let allows_nothing = matches!(&p.requests, Requests::Http(ms) if ms.is_empty())
                || matches!(&p.ports, Ports::Only(ps) if ps.is_empty());
            if allows_nothing {
                continue;
            }
            if p.callers == Callers::Anyone || p.requests != Requests::Any || p.ports != Ports::All
            {
                return None;
            }
            out.push(&p.callers);
        }
        Some(out)
    }

    /// Whether some policy matches on the request path: the proxy then normalizes paths
    /// before deciding (see [`normalize_path`]), so `/public/../admin` cannot pass as
    /// `/public/...`.
    pub fn matches_paths(&self) -> bool {
        self.enforced
            .iter()
            .chain(self.shadow.iter())
            .flat_map(|r| r.policies.iter())
            .any(|p| matches!(&p.requests, Requests::Http(ms) if ms.iter().any(|m| m.path_regex.is_some())))
    }
}

/// The path a proxy decides on where [`InboundAuthz::matches_paths`]: escaped slashes
/// (`%2F`, `%5C`) unescaped, escapes of unreserved characters decoded, backslashes as
/// slashes, dot segments removed and runs of slashes merged, the query kept. `None` for a path the proxy
/// refuses (400): not starting with `/`, or a control character.
pub fn normalize_path(raw: &str) -> Option<String> {
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    let unescaped = decode_unreserved(&unescape_slashes(path)).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = unescaped.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        let dots = dot_segment(seg);
        match dots {
            Some(1) => trailing = i == last,
            Some(2) => {
                out.pop();
                trailing = i == last;
            }
            _ if seg.is_empty() => trailing = i == last,
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(unescaped.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if out.is_empty() || trailing {
        normal.push('/');
    }
    if let Some(q) = query {
        normal.push('?');
        normal.push_str(q);
    }
    Some(normal)
}

/// `%2F`/`%2f` as `/` and `%5C`/`%5c` as `\`.
fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.as_deref() {
            Some("2F") => out.push('/'),
            Some("5C") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// Escapes of unreserved characters (letters, digits, `-._~`) decoded, as Envoy's
/// normalization does (`/%61dmin` is `/admin`); other escapes kept.
fn decode_unreserved(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let byte = rest
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match byte {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// 1 for `.`, 2 for `..` (either spelled with `%2E`), None otherwise.
fn dot_segment(seg: &str) -> Option<u8> {
    let lower = seg.to_ascii_lowercase().replace("%2e", ".");
    match lower.as_str() {
        "." => Some(1),
        ".." => Some(2),
        _ => None,
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
    /// The destination port (on the pod).
    pub port: u16,
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
            (Callers::Anyone, _) => true,
            (_, None) => false,
            (Callers::Identities(ids), Some(c)) => ids.iter().any(|id| id == c),
            (Callers::IdentityPrefix(p), Some(c)) => c.starts_with(p.as_str()),
        };
        who && self.ports.covers(req.port)
            && match (&self.requests, req.http) {
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
            ports: Ports::All,
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
            port: 80,
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
            port: 80,
        };
        assert!(!rules.decide(&tcp).allowed, "HTTP rules allow no TCP");
        let any = Rules {
            policies: vec![policy(Requests::Any)],
        };
        assert_eq!(any.decide(&tcp).by, ["TrafficTarget shop/t"]);
    }

    #[test]
    fn paths_are_decided_as_the_proxy_normalizes_them() {
        let n = |p: &str| normalize_path(p);
        assert_eq!(n("/public/../admin").as_deref(), Some("/admin"));
        assert_eq!(n("/public/%2e%2E/admin").as_deref(), Some("/admin"));
        assert_eq!(n("/public%2F..%2Fadmin").as_deref(), Some("/admin"));
        assert_eq!(n("/public%5c..%5cadmin").as_deref(), Some("/admin"));
        assert_eq!(n("/public//x").as_deref(), Some("/public/x"));
        assert_eq!(n("/a/./b/").as_deref(), Some("/a/b/"));
        assert_eq!(n("/../..").as_deref(), Some("/"));
        assert_eq!(n("/a/b?x=/../y").as_deref(), Some("/a/b?x=/../y"));
        assert_eq!(n("/a%20b/%41").as_deref(), Some("/a%20b/A"));
        assert_eq!(n("/%61dmin").as_deref(), Some("/admin"));
        assert_eq!(n("a/b"), None);
        assert_eq!(n("/a\u{7f}"), None);
    }

    #[test]
    fn ports_and_anyone() {
        let open = AllowPolicy {
            name: "default allow".into(),
            source: None,
            callers: Callers::Anyone,
            ports: Ports::Except(vec![5432]),
            requests: Requests::Any,
        };
        let req = |port| Request {
            caller: None,
            http: None,
            headers: &[],
            port,
        };
        assert!(open.allows(&req(6000)), "plain text on another port");
        assert!(!open.allows(&req(5432)), "not on the enforced port");
    }
}
