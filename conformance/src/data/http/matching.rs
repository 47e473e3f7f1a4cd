//! Which virtual host and which route a request takes, as Envoy chooses them: domains
//! by authority (exact, then the longest `*.suffix`, then the longest `prefix*`, then
//! `*`), then the first route whose path, header and query matchers all match.

use crate::config::route::{
    HeaderMatch, PathMatch, QueryMatch, Route, RouteConfig, RouteMatch, VirtualHost,
};

pub(crate) use crate::config::route::RequestView;

/// The virtual host that answers `authority`. Domains are compared without ASCII case;
/// the authority is matched as given (with its port, if it has one: Rudder lists both
/// forms), and Envoy's precedence decides between several matches.
pub(crate) fn virtual_host<'a>(rc: &'a RouteConfig, authority: &str) -> Option<&'a VirtualHost> {
    let host = authority.to_ascii_lowercase();
    let mut best: Option<(u8, usize, &VirtualHost)> = None;
    for vh in &rc.virtual_hosts {
        for d in &vh.domains {
            let Some((rank, len)) = domain_rank(&d.to_ascii_lowercase(), &host) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((r, l, _)) => rank < r || (rank == r && len > l),
            };
            if better {
                best = Some((rank, len, vh));
            }
        }
    }
    best.map(|(_, _, vh)| vh)
}

/// How `domain` matches `host`: (0 exact, 1 suffix wildcard, 2 prefix wildcard, 3 `*`;
/// the wildcard's length, longer wins), or `None`.
pub(crate) fn domain_rank(domain: &str, host: &str) -> Option<(u8, usize)> {
    if domain == "*" {
        return Some((3, 0));
    }
    if domain == host {
        return Some((0, domain.len()));
    }
    if let Some(suffix) = domain.strip_prefix('*') {
        // `*.example.com` and `*-bar.example.com`: the wildcard matches one or more chars.
        if host.len() > suffix.len() && host.ends_with(suffix) {
            return Some((1, domain.len()));
        }
        return None;
    }
    if let Some(prefix) = domain.strip_suffix('*')
        && host.len() > prefix.len()
        && host.starts_with(prefix)
    {
        return Some((2, domain.len()));
    }
    None
}

/// The first route of `vh` that matches, and whether the request is a CONNECT.
pub(crate) fn route<'a>(vh: &'a VirtualHost, req: &RequestView<'_>) -> Option<&'a Route> {
    vh.routes.iter().find(|r| matches(&r.matcher, req))
}

/// Whether `m` matches the request.
pub(crate) fn matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    let is_connect = req.method.eq_ignore_ascii_case("CONNECT");
    if m.connect {
        if !is_connect {
            return false;
        }
    } else if is_connect {
        // A CONNECT request has no path: only a connect matcher, or a `prefix: ""`
        // that the empty path matches, takes it (as in Envoy).
        if !matches!(&m.path, PathMatch::Prefix(p) if p.is_empty()) {
            return false;
        }
    } else if !path_matches(&m.path, m.case_sensitive, req.path()) {
        return false;
    }
    m.headers.iter().all(|h| header_matches(h, req))
        && m.query.iter().all(|q| query_matches(q, req))
}

/// Whether the path (without its query) matches.
pub(crate) fn path_matches(p: &PathMatch, case_sensitive: bool, path: &str) -> bool {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_ascii_lowercase()
        }
    };
    match p {
        PathMatch::Prefix(pre) => fold(path).starts_with(&fold(pre)),
        PathMatch::Exact(e) => fold(path) == fold(e),
        PathMatch::Regex(re) => re
            .find(path)
            .is_some_and(|m| m.start() == 0 && m.end() == path.len()),
        PathMatch::SeparatedPrefix(pre) => {
            let (path, pre) = (fold(path), fold(pre));
            path.strip_prefix(&pre)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    }
}

fn header_matches(h: &HeaderMatch, req: &RequestView<'_>) -> bool {
    h.matches(req.header(&h.name).as_deref())
}

fn query_matches(q: &QueryMatch, req: &RequestView<'_>) -> bool {
    // Envoy compares names and values percent-decoded.
    let first = req.query().and_then(|query| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == q.name).then(|| percent_decode(v))
        })
    });
    match (&q.value, first) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(sm), Some(v)) => sm.matches(&v),
    }
}

/// `%XX` escapes decoded (invalid ones and non-UTF-8 results kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::listener::StringMatch;
    use crate::config::route::{Action, HeaderEdits, HeaderValueMatch};

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![],
            headers: HeaderEdits::default(),
            retry: None,
        }
    }

    fn rc(hosts: Vec<VirtualHost>) -> RouteConfig {
        RouteConfig {
            name: "r".into(),
            virtual_hosts: hosts,
        }
    }

    fn pick(rc: &RouteConfig, authority: &str) -> Option<String> {
        virtual_host(rc, authority).map(|v| v.name.clone())
    }

    #[test]
    fn domains_take_envoy_precedence() {
        let c = rc(vec![
            vh("any", &["*"]),
            vh("prefix", &["web.*"]),
            vh("short-suffix", &["*.com"]),
            vh("suffix", &["*.example.com"]),
            vh("exact", &["web.example.com", "web.example.com:8080"]),
        ]);
        assert_eq!(pick(&c, "web.example.com").as_deref(), Some("exact"));
        assert_eq!(pick(&c, "WEB.example.com:8080").as_deref(), Some("exact"));
        assert_eq!(pick(&c, "api.example.com").as_deref(), Some("suffix"));
        assert_eq!(pick(&c, "api.other.com").as_deref(), Some("short-suffix"));
        assert_eq!(pick(&c, "web.local").as_deref(), Some("prefix"));
        assert_eq!(pick(&c, "db").as_deref(), Some("any"));
        // A port is part of the authority: `web.example.com:9090` is not the exact
        // domain, but `*.example.com` does not match it either (the port follows).
        assert_eq!(pick(&c, "web.example.com:9090").as_deref(), Some("prefix"));
    }

    #[test]
    fn no_domain_no_host_and_wildcards_need_one_char() {
        let c = rc(vec![vh("suffix", &["*.example.com"]), vh("exact", &["a"])]);
        assert_eq!(pick(&c, ".example.com"), None);
        assert_eq!(pick(&c, "b"), None);
    }

    fn view<'a>(method: &'a str, path: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
        RequestView {
            method,
            authority: "web",
            path_and_query: path,
            scheme: "http",
            headers,
        }
    }

    fn rm(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            case_sensitive: true,
            headers: vec![],
            query: vec![],
            connect: false,
        }
    }

    #[test]
    fn paths_match_as_envoy_compares_them() {
        let h = http::HeaderMap::new();
        let m = rm(PathMatch::Prefix("/api".into()));
        assert!(matches(&m, &view("GET", "/api/v1?x=1", &h)));
        assert!(matches(&m, &view("GET", "/apix", &h)));
        assert!(!matches(&m, &view("GET", "/API", &h)));
        let mut ci = m.clone();
        ci.case_sensitive = false;
        assert!(matches(&ci, &view("GET", "/API", &h)));
        let sep = rm(PathMatch::SeparatedPrefix("/api".into()));
        assert!(matches(&sep, &view("GET", "/api", &h)));
        assert!(matches(&sep, &view("GET", "/api/x", &h)));
        assert!(matches(&sep, &view("GET", "/api?q", &h)));
        assert!(!matches(&sep, &view("GET", "/apix", &h)));
        let exact = rm(PathMatch::Exact("/a".into()));
        assert!(matches(&exact, &view("GET", "/a?b", &h)));
        assert!(!matches(&exact, &view("GET", "/a/", &h)));
        let re = rm(PathMatch::Regex(Arc::new(
            regex::Regex::new("/v[0-9]+").expect("regex"),
        )));
        assert!(matches(&re, &view("GET", "/v12", &h)));
        assert!(!matches(&re, &view("GET", "/v12/x", &h)));
    }

    #[test]
    fn headers_pseudo_headers_query_and_invert() {
        let mut h = http::HeaderMap::new();
        h.insert("x-env", "canary".parse().expect("value"));
        let mut m = rm(PathMatch::Prefix("/".into()));
        m.headers = vec![
            HeaderMatch {
                name: ":method".into(),
                value: HeaderValueMatch::String(StringMatch::Exact("POST".into(), false)),
                invert: false,
            },
            HeaderMatch {
                name: "x-env".into(),
                value: HeaderValueMatch::String(StringMatch::Prefix("can".into(), false)),
                invert: false,
            },
            HeaderMatch {
                name: "x-debug".into(),
                value: HeaderValueMatch::Present(true),
                invert: true,
            },
        ];
        m.query = vec![QueryMatch {
            name: "v".into(),
            value: Some(StringMatch::Exact("2".into(), false)),
        }];
        assert!(matches(&m, &view("POST", "/x?a=1&v=2", &h)));
        assert!(!matches(&m, &view("GET", "/x?v=2", &h)));
        assert!(!matches(&m, &view("POST", "/x?v=3", &h)));
        assert!(matches(&m, &view("POST", "/x?%76=%32", &h)));
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert!(!matches(&m, &view("POST", "/x", &h)));
        h.insert("x-debug", "1".parse().expect("value"));
        assert!(!matches(&m, &view("POST", "/x?v=2", &h)));
    }

    #[test]
    fn connect_requests_take_only_connect_routes() {
        let h = http::HeaderMap::new();
        let mut c = rm(PathMatch::Prefix("/".into()));
        c.connect = true;
        assert!(matches(&c, &view("CONNECT", "", &h)));
        assert!(!matches(&c, &view("GET", "/", &h)));
        let plain = rm(PathMatch::Prefix("/api".into()));
        assert!(!matches(&plain, &view("CONNECT", "", &h)));
        let r = Route {
            name: String::new(),
            matcher: c,
            action: Action::Direct {
                status: 200,
                body: None,
            },
            headers: HeaderEdits::default(),
        };
        let mut host = vh("h", &["*"]);
        host.routes = vec![r];
        assert!(route(&host, &view("CONNECT", "", &h)).is_some());
    }
}
