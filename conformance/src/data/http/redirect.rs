//! The `Location` of a redirect, built as Envoy builds it: the scheme (the redirect's,
//! else the request's), the host (the redirect's, else the request's without a port
//! that the new port or scheme replaces), the port (the redirect's, left out when it is
//! the scheme's well-known one), and the path (kept, replaced, its matched prefix
//! rewritten, or regex-substituted) with the query unless it is stripped.

use crate::config::route::{PathMatch, Redirect, RedirectPath};

/// What a redirect keeps of the request.
#[derive(Debug)]
pub(crate) struct Origin<'a> {
    /// The request's scheme (`http` or `https`).
    pub(crate) scheme: &'a str,
    /// Its authority.
    pub(crate) authority: &'a str,
    /// Its path and query.
    pub(crate) path_and_query: &'a str,
}

/// The `Location` header value.
pub(crate) fn location(r: &Redirect, matched: &PathMatch, origin: &Origin<'_>) -> String {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(origin.scheme)
        .to_ascii_lowercase();
    let well_known = if scheme == "https" { 443 } else { 80 };
    let (req_host, req_port) = split_port(origin.authority);
    let (host, port) = match (&r.host, r.port) {
        (Some(h), Some(p)) => (split_port(h).0.to_string(), Some(p)),
        (Some(h), None) => {
            let (h, p) = split_port(h);
            (h.to_string(), p)
        }
        (None, Some(p)) => (req_host.to_string(), Some(p)),
        // The request's port stays unless it is the new scheme's well-known one.
        (None, None) => (req_host.to_string(), req_port),
    };
    let port = port.filter(|p| *p != well_known);
    let host_port = match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    format!(
        "{scheme}://{host_port}{}",
        path(r, matched, origin.path_and_query)
    )
}

/// The host and the port of an authority (`[v6]:port` included).
pub(crate) fn split_port(authority: &str) -> (&str, Option<u16>) {
    let cut = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match cut {
        Some(i) => match authority[i + 1..].parse::<u16>() {
            Ok(p) => (&authority[..i], Some(p)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

fn path(r: &Redirect, matched: &PathMatch, path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let new_path = match &r.path {
        RedirectPath::Keep => path.to_string(),
        // A full path with its own query replaces the request's query, stripped or not.
        RedirectPath::Full(p) if p.contains('?') => return p.clone(),
        RedirectPath::Full(p) => p.clone(),
        RedirectPath::Prefix(p) => rewrite_prefix(matched, path, p),
        RedirectPath::Regex(re, sub) => substitute(re, path, sub),
    };
    match query {
        Some(q) if !r.strip_query => format!("{new_path}?{q}"),
        _ => new_path,
    }
}

/// `prefix_rewrite` of `path` matched by `matched`: the matched prefix is replaced; an
/// exact or regex match is replaced whole.
pub(crate) fn rewrite_prefix(matched: &PathMatch, path: &str, with: &str) -> String {
    let prefix_len = match matched {
        PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len().min(path.len()),
        PathMatch::Exact(_) | PathMatch::Regex(_) => path.len(),
    };
    let rest = path.get(prefix_len..).unwrap_or("");
    // Gateway API's `ReplacePrefixMatch` of `/` on `/api` + `/x`: no double slash.
    if with.ends_with('/') && rest.starts_with('/') {
        format!("{with}{}", &rest[1..])
    } else {
        format!("{with}{rest}")
    }
}

/// Every match of `re` in `input` replaced by `sub`, whose RE2 group references (`\1`)
/// are taken as Envoy takes them.
pub(crate) fn substitute(re: &regex::Regex, input: &str, sub: &str) -> String {
    let mut rust = String::with_capacity(sub.len());
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    rust.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    rust.push('\\');
                    chars.next();
                }
                _ => rust.push('\\'),
            },
            '$' => rust.push_str("$$"),
            c => rust.push(c),
        }
    }
    re.replace_all(input, rust.as_str()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(scheme: Option<&str>, host: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme: scheme.map(str::to_string),
            host: host.map(str::to_string),
            port,
            path: RedirectPath::Keep,
            status: 302,
            strip_query: false,
        }
    }

    fn loc(r: &Redirect, authority: &str, pq: &str) -> String {
        location(
            r,
            &PathMatch::Prefix("/api".into()),
            &Origin {
                scheme: "http",
                authority,
                path_and_query: pq,
            },
        )
    }

    #[test]
    fn scheme_host_and_port_follow_envoy() {
        let https = redirect(Some("https"), None, None);
        assert_eq!(loc(&https, "web", "/a?b=1"), "https://web/a?b=1");
        assert_eq!(loc(&https, "web:8080", "/a"), "https://web:8080/a");
        assert_eq!(loc(&https, "web:443", "/a"), "https://web/a");
        let https443 = redirect(Some("https"), None, Some(443));
        assert_eq!(loc(&https443, "web:8080", "/a"), "https://web/a");
        let port = redirect(None, None, Some(8083));
        assert_eq!(loc(&port, "web:80", "/"), "http://web:8083/");
        let port80 = redirect(None, None, Some(80));
        assert_eq!(loc(&port80, "web:8080", "/"), "http://web/");
        let host = redirect(None, Some("example.org"), None);
        assert_eq!(loc(&host, "web:8080", "/x"), "http://example.org/x");
        let host_port = redirect(None, Some("example.org"), Some(8083));
        assert_eq!(loc(&host_port, "web", "/x"), "http://example.org:8083/x");
        assert_eq!(loc(&port, "[::1]:80", "/"), "http://[::1]:8083/");
    }

    #[test]
    fn paths_are_kept_replaced_or_rewritten_and_queries_stripped() {
        let mut r = redirect(None, None, None);
        r.path = RedirectPath::Full("/new".into());
        assert_eq!(loc(&r, "web", "/api/x?q=1"), "http://web/new?q=1");
        r.strip_query = true;
        assert_eq!(loc(&r, "web", "/api/x?q=1"), "http://web/new");
        r.path = RedirectPath::Prefix("/v2".into());
        r.strip_query = false;
        assert_eq!(loc(&r, "web", "/api/x?q=1"), "http://web/v2/x?q=1");
        r.path = RedirectPath::Prefix("/".into());
        assert_eq!(loc(&r, "web", "/api/x"), "http://web/x");
        r.path = RedirectPath::Regex(
            std::sync::Arc::new(regex::Regex::new("^/api/(.*)$").expect("regex")),
            "/b/\\1".to_string(),
        );
        assert_eq!(loc(&r, "web", "/api/x?z"), "http://web/b/x?z");
    }
}
