//! Header work of the connection manager and router: the configured edits in Envoy's
//! order, hop-by-hop headers, `x-forwarded-client-cert`, `x-request-id` and
//! `x-forwarded-proto`.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::listener::ForwardClientCert;
use crate::config::route::{AppendAction, HeaderAdd, HeaderEdits};
use crate::data::tls::PeerInfo;

/// Which side of the edits applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// `request_headers_to_add` / `_remove`.
    Request,
    /// `response_headers_to_add` / `_remove`.
    Response,
}

/// Applies `levels` in order (Envoy's default order: weighted cluster, then route, then
/// virtual host; each level removes, then adds).
pub(crate) fn apply(headers: &mut HeaderMap, levels: &[&HeaderEdits], side: Side) {
    for edits in levels {
        let (remove, add) = match side {
            Side::Request => (&edits.request_remove, &edits.request_add),
            Side::Response => (&edits.response_remove, &edits.response_add),
        };
        for name in remove {
            // Pseudo-headers and `host` are not removable, as in Envoy.
            if name.starts_with(':') || name == "host" {
                continue;
            }
            headers.remove(name.as_str());
        }
        for a in add {
            add_one(headers, a);
        }
    }
}

fn add_one(headers: &mut HeaderMap, a: &HeaderAdd) {
    let present = headers.contains_key(&a.name);
    match a.append {
        AppendAction::AppendIfExistsOrAdd => {
            headers.append(a.name.clone(), a.value.clone());
        }
        AppendAction::AddIfAbsent if !present => {
            headers.insert(a.name.clone(), a.value.clone());
        }
        AppendAction::OverwriteIfExistsOrAdd => {
            headers.insert(a.name.clone(), a.value.clone());
        }
        AppendAction::OverwriteIfExists if present => {
            headers.insert(a.name.clone(), a.value.clone());
        }
        AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
    }
}

/// Hop-by-hop headers a proxy never forwards.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers and those the `Connection` header names (`te: trailers`
/// stays, as Envoy keeps it for gRPC).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let te_trailers = headers
        .get(http::header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for n in named {
        headers.remove(n.as_str());
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
    if te_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `x-forwarded-client-cert` value of a connection under `mode`: none for
/// `Sanitize` or without a verified peer certificate, else Envoy's
/// `By=<own URI>;Hash=<sha256 hex>;URI=<peer URI>` (`URI` only when asked).
pub(crate) fn xfcc(
    mode: ForwardClientCert,
    peer: Option<&PeerInfo>,
    own_uri: Option<&str>,
) -> Option<String> {
    let ForwardClientCert::SanitizeSet { uri } = mode else {
        return None;
    };
    let peer = peer?;
    let mut parts = Vec::new();
    if let Some(by) = own_uri {
        parts.push(format!("By={}", quote(by)));
    }
    parts.push(format!("Hash={}", peer.sha256_hex));
    if uri && let Some(u) = peer.uris.first() {
        parts.push(format!("URI={}", quote(u)));
    }
    Some(parts.join(";"))
}

/// Envoy quotes a value holding `,` `;` or `=` (and escapes `"`).
fn quote(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

/// Sets `x-forwarded-client-cert` per `mode`, removing any the client sent.
pub(crate) fn set_xfcc(
    headers: &mut HeaderMap,
    mode: ForwardClientCert,
    peer: Option<&PeerInfo>,
    own_uri: Option<&str>,
) {
    let name = HeaderName::from_static("x-forwarded-client-cert");
    headers.remove(&name);
    if let Some(v) = xfcc(mode, peer, own_uri).and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(name, v);
    }
}

/// Adds `x-request-id` (a random UUID v4) when absent, and `x-forwarded-proto` (the
/// downstream scheme) when absent.
pub(crate) fn set_request_ids(headers: &mut HeaderMap, scheme: &str) {
    if !headers.contains_key("x-request-id")
        && let Ok(v) = HeaderValue::from_str(&uuid_v4())
    {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    if !headers.contains_key("x-forwarded-proto")
        && let Ok(v) = HeaderValue::from_str(scheme)
    {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
}

/// A random version 4 UUID, as Envoy's request ids are.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(name: &'static str, value: &'static str, append: AppendAction) -> HeaderAdd {
        HeaderAdd {
            name: HeaderName::from_static(name),
            value: HeaderValue::from_static(value),
            append,
        }
    }

    #[test]
    fn edits_apply_in_order_with_each_append_action() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("0"));
        h.insert("gone", HeaderValue::from_static("x"));
        let route = HeaderEdits {
            request_add: vec![
                add("a", "1", AppendAction::AppendIfExistsOrAdd),
                add("b", "1", AppendAction::AddIfAbsent),
                add("c", "1", AppendAction::OverwriteIfExists),
            ],
            request_remove: vec!["gone".into(), "host".into()],
            ..Default::default()
        };
        let vhost = HeaderEdits {
            request_add: vec![
                add("b", "2", AppendAction::AddIfAbsent),
                add("a", "v", AppendAction::OverwriteIfExistsOrAdd),
            ],
            ..Default::default()
        };
        apply(&mut h, &[&route, &vhost], Side::Request);
        let all = |n: &str| -> Vec<&str> {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap_or(""))
                .collect()
        };
        assert_eq!(
            all("a"),
            vec!["v"],
            "the virtual host's overwrite comes last"
        );
        assert_eq!(all("b"), vec!["1"]);
        assert!(all("c").is_empty());
        assert!(all("gone").is_empty());
        let mut resp = HeaderMap::new();
        apply(&mut resp, &[&route], Side::Response);
        assert!(resp.is_empty(), "request edits leave responses alone");
    }

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers, gzip"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn xfcc_is_envoys_format_and_replaces_the_clients() {
        let peer = PeerInfo {
            uris: vec!["spiffe://cluster.local/ns/a/sa/client".into()],
            sha256_hex: "ab12".into(),
        };
        let own = Some("spiffe://cluster.local/ns/b/sa/server");
        assert_eq!(
            xfcc(
                ForwardClientCert::SanitizeSet { uri: true },
                Some(&peer),
                own
            )
            .as_deref(),
            Some(
                "By=spiffe://cluster.local/ns/b/sa/server;Hash=ab12;\
                 URI=spiffe://cluster.local/ns/a/sa/client"
            )
        );
        assert_eq!(
            xfcc(
                ForwardClientCert::SanitizeSet { uri: false },
                Some(&peer),
                None
            )
            .as_deref(),
            Some("Hash=ab12")
        );
        assert_eq!(xfcc(ForwardClientCert::Sanitize, Some(&peer), own), None);
        assert_eq!(
            xfcc(ForwardClientCert::SanitizeSet { uri: true }, None, own),
            None
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("forged"),
        );
        set_xfcc(&mut h, ForwardClientCert::Sanitize, Some(&peer), own);
        assert!(!h.contains_key("x-forwarded-client-cert"));
        assert_eq!(quote("a;b"), "\"a;b\"");
    }

    #[test]
    fn request_ids_are_uuids_and_kept_when_sent() {
        let mut h = HeaderMap::new();
        set_request_ids(&mut h, "http");
        let id = h
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let mut kept = HeaderMap::new();
        kept.insert("x-request-id", HeaderValue::from_static("mine"));
        kept.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_request_ids(&mut kept, "http");
        assert_eq!(
            kept.get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"mine"[..])
        );
        assert_eq!(
            kept.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
    }
}
