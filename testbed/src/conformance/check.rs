//! What a case expects against what came back: upstream's mesh comparison (status,
//! headers the backend saw and did not see, response headers, the answering pod), plus
//! what upstream checks only for gateways (the path the backend saw, the redirect's
//! `Location`, as its `RedirectRequest` rules), and the weighted distribution check.
//! Every mismatch is one line naming the field.

use std::collections::BTreeMap;

use super::data::{Case, Redirect};

/// One exchange as the client saw it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// HTTP status.
    pub status: u16,
    /// Response headers (names lowercase), trailers included for gRPC.
    pub headers: Vec<(String, String)>,
    /// The echo text (for gRPC, the message's text), or the body as it came.
    pub body: String,
}

impl Observed {
    /// Values of response header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the echo backend reported (empty when something else answered).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Echo {
    /// `Hostname=`: the pod.
    pub hostname: String,
    /// `Namespace=`.
    pub namespace: String,
    /// `URL=`: path and query.
    pub url: String,
    /// `RequestHeader=`: values by lowercase name, in order.
    pub request_headers: BTreeMap<String, Vec<String>>,
}

/// Parses the echo backend's `Key=Value` lines.
pub fn parse_echo(text: &str) -> Echo {
    let mut echo = Echo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "Hostname" => echo.hostname = v.to_string(),
            "Namespace" => echo.namespace = v.to_string(),
            "URL" => echo.url = v.to_string(),
            "RequestHeader" => {
                if let Some((name, value)) = v.split_once(':') {
                    echo.request_headers
                        .entry(name.to_ascii_lowercase())
                        .or_default()
                        .push(value.to_string());
                }
            }
            _ => {}
        }
    }
    echo
}

/// Every way `seen` differs from what `case` expects; empty when it passes. `path` is
/// the request's path and query as sent.
pub fn compare(case: &Case, path: &str, seen: &Observed) -> Vec<String> {
    let mut diffs = Vec::new();
    let want = case.response.status.unwrap_or(200);
    if seen.status != want {
        diffs.push(format!("status: want {want}, got {}", seen.status));
    }
    if case.request.is_grpc() && want == 200 {
        let got = seen.header("grpc-status").join(",");
        if got != "0" {
            diffs.push(format!("grpc-status: want 0, got {got:?}"));
        }
    }
    let echo = parse_echo(&seen.body);
    if let Some(b) = &case.backend_request {
        compare_backend_request(b, &echo, &mut diffs);
    }
    for (name, value) in &case.response.headers {
        let got = seen.header(name).join(",");
        if &got != value {
            diffs.push(format!(
                "response header {name}: want {value:?}, got {got:?}"
            ));
        }
    }
    for name in &case.response.absent_headers {
        let got = seen.header(name);
        if !got.is_empty() {
            diffs.push(format!("response header {name}: want absent, got {got:?}"));
        }
    }
    if let Some(backend) = &case.backend
        && !echo.hostname.starts_with(backend.as_str())
    {
        diffs.push(format!(
            "backend: want a pod of {backend}, got {:?}",
            echo.hostname
        ));
    }
    if let Some(ns) = &case.namespace
        && !echo.hostname.is_empty()
        && &echo.namespace != ns
    {
        diffs.push(format!("namespace: want {ns}, got {:?}", echo.namespace));
    }
    if let Some(r) = &case.redirect
        && (300..400).contains(&seen.status)
    {
        compare_redirect(r, path, seen, &mut diffs);
    }
    diffs
}

fn compare_backend_request(
    want: &super::data::BackendRequest,
    echo: &Echo,
    diffs: &mut Vec<String>,
) {
    if let Some(path) = &want.path {
        let got = echo.url.split('?').next().unwrap_or_default();
        if got != path {
            diffs.push(format!("backend saw path: want {path}, got {got:?}"));
        }
    }
    for (name, value) in &want.headers {
        match echo.request_headers.get(&name.to_ascii_lowercase()) {
            None => diffs.push(format!("backend saw header {name}: want {value:?}, absent")),
            Some(got) if &got.join(",") != value => diffs.push(format!(
                "backend saw header {name}: want {value:?}, got {:?}",
                got.join(",")
            )),
            Some(_) => {}
        }
    }
    for name in &want.absent_headers {
        if let Some(got) = echo.request_headers.get(&name.to_ascii_lowercase()) {
            diffs.push(format!(
                "backend saw header {name}: want absent, got {got:?}"
            ));
        }
    }
}

/// Upstream's rules: an unset host matches any; an unset scheme or path is the
/// request's; an unset port must be absent or the scheme's default.
fn compare_redirect(want: &Redirect, path: &str, seen: &Observed, diffs: &mut Vec<String>) {
    let Some(location) = seen.header("location").first().map(|s| s.to_string()) else {
        diffs.push("redirect: no Location header".into());
        return;
    };
    let Some((scheme, host, port, got_path)) = split_location(&location) else {
        diffs.push(format!(
            "redirect: Location {location:?} is not an absolute URL"
        ));
        return;
    };
    let want_scheme = want.scheme.as_deref().unwrap_or("http");
    if scheme != want_scheme {
        diffs.push(format!("redirect scheme: want {want_scheme}, got {scheme}"));
    }
    if let Some(h) = &want.host
        && &host != h
    {
        diffs.push(format!("redirect host: want {h}, got {host}"));
    }
    match &want.port {
        Some(p) if &port != p => diffs.push(format!("redirect port: want {p}, got {port:?}")),
        None => {
            let default = if scheme == "https" { "443" } else { "80" };
            if !port.is_empty() && port != default {
                diffs.push(format!(
                    "redirect port: want none or {default} for {scheme}, got {port}"
                ));
            }
        }
        _ => {}
    }
    let request_path = path.split('?').next().unwrap_or_default();
    let want_path = want.path.as_deref().unwrap_or(request_path);
    if got_path != want_path {
        diffs.push(format!("redirect path: want {want_path}, got {got_path}"));
    }
}

/// scheme, host, port ("" when none), path (without query).
fn split_location(location: &str) -> Option<(String, String, String, String)> {
    let (scheme, rest) = location.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
        _ => (authority, ""),
    };
    let path = path.split('?').next().unwrap_or_default();
    Some((
        scheme.to_string(),
        host.to_string(),
        port.to_string(),
        path.to_string(),
    ))
}

/// The backend of a pod: its name without the last `-N` (`echo-v1-0` -> `echo-v1`).
pub fn backend_of(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(b, _)| b)
}

/// Upstream's weighted distribution check (conformance/utils/weight): every pod a known
/// backend, the backends with weight all seen, each share within `tolerance`.
pub fn compare_weights(
    expected: &BTreeMap<String, f64>,
    pods: &[String],
    tolerance: f64,
) -> Vec<String> {
    let mut seen: BTreeMap<&str, f64> = BTreeMap::new();
    let mut diffs = Vec::new();
    for pod in pods {
        let b = backend_of(pod);
        if !expected.contains_key(b) {
            diffs.push(format!("answered by an unexpected pod {pod:?}"));
            return diffs;
        }
        *seen.entry(b).or_default() += 1.0;
    }
    let total = pods.len().max(1) as f64;
    for (backend, want) in expected {
        let got = seen.get(backend.as_str()).copied().unwrap_or(0.0) / total;
        if *want > 0.0 && got == 0.0 {
            diffs.push(format!("backend {backend}: no traffic (want {want})"));
        } else if (got - want).abs() > tolerance {
            diffs.push(format!(
                "backend {backend}: share {got:.3}, want {want} +/- {tolerance}"
            ));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::data::Case;

    fn case(yaml: &str) -> Case {
        serde_saphyr::from_str(yaml).expect("a case")
    }

    fn echo_body(pod: &str, url: &str, headers: &[(&str, &str)]) -> String {
        let mut s = format!("{pod} proto=HTTP/1.1\nHostname={pod}\nNamespace=ns\nURL={url}\n");
        for (k, v) in headers {
            s.push_str(&format!("RequestHeader={k}:{v}\n"));
        }
        s
    }

    #[test]
    fn a_matching_exchange_passes_and_each_difference_is_named() {
        let c = case(
            "request: {path: /add}\nbackendRequest: {path: /add, headers: {X-Header-Add: \"a,b\"}, absentHeaders: [X-Gone]}\nresponse: {headers: {X-Set: v}}\nbackend: echo-v1\nnamespace: ns\n",
        );
        let ok = Observed {
            status: 200,
            headers: vec![("x-set".into(), "v".into())],
            body: echo_body(
                "echo-v1-0",
                "/add",
                &[("x-header-add", "a"), ("x-header-add", "b")],
            ),
        };
        assert_eq!(compare(&c, "/add", &ok), Vec::<String>::new());
        let bad = Observed {
            status: 404,
            headers: vec![],
            body: echo_body("echo-v2-0", "/x", &[("x-gone", "1")]),
        };
        let diffs = compare(&c, "/add", &bad);
        for want in [
            "status: want 200, got 404",
            "backend saw path: want /add",
            "backend saw header X-Header-Add",
            "backend saw header X-Gone: want absent",
            "response header X-Set",
            "backend: want a pod of echo-v1",
        ] {
            assert!(
                diffs.iter().any(|d| d.starts_with(want)),
                "{want}: {diffs:?}"
            );
        }
    }

    #[test]
    fn redirects_follow_upstreams_defaults() {
        let c =
            case("request: {path: /port}\nresponse: {status: 302}\nredirect: {port: \"8083\"}\n");
        let seen = |loc: &str| Observed {
            status: 302,
            headers: vec![("location".into(), loc.into())],
            body: String::new(),
        };
        assert!(compare(&c, "/port", &seen("http://echo:8083/port")).is_empty());
        assert!(!compare(&c, "/port", &seen("http://echo/port")).is_empty());
        let c = case("request: {path: /p}\nresponse: {status: 301}\nredirect: {scheme: https}\n");
        let moved = |loc: &str| Observed {
            status: 301,
            ..seen(loc)
        };
        assert!(compare(&c, "/p?q=1", &moved("https://echo/p")).is_empty());
        assert!(compare(&c, "/p?q=1", &moved("https://echo:443/p")).is_empty());
        assert!(!compare(&c, "/p?q=1", &moved("http://echo/p")).is_empty());
        assert!(!compare(&c, "/p?q=1", &moved("https://echo:8443/p")).is_empty());
    }

    #[test]
    fn weights_are_checked_within_the_tolerance() {
        let want: BTreeMap<String, f64> =
            [("echo-v1".to_string(), 0.7), ("echo-v2".to_string(), 0.3)].into();
        let pods = |a: usize, b: usize| -> Vec<String> {
            std::iter::repeat_n("echo-v1-0".to_string(), a)
                .chain(std::iter::repeat_n("echo-v2-0".to_string(), b))
                .collect()
        };
        assert!(compare_weights(&want, &pods(350, 150), 0.05).is_empty());
        assert!(!compare_weights(&want, &pods(450, 50), 0.05).is_empty());
        assert!(!compare_weights(&want, &pods(500, 0), 0.05).is_empty());
        let mut odd = pods(350, 149);
        odd.push("other-0".into());
        assert!(!compare_weights(&want, &odd, 0.05).is_empty());
    }
}
