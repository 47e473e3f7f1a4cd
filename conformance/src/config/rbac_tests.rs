//! The RBAC decision as a pure function: policies, ALLOW and DENY, shadow rules,
//! permissions on method, path, headers and port, principals on the TLS peer.

use std::sync::Arc;

use super::*;
use crate::config::route::HeaderValueMatch;

const WEB: &str = "spiffe://td/ns/shop/sa/web";
const CONTROL: &str = "spiffe://td/ns/rudder-system/sa/rudder";

fn re(p: &str) -> StringMatch {
    StringMatch::Regex(Arc::new(
        regex::Regex::new(&format!("^(?:{p})$")).expect("regex"),
    ))
}

fn header(name: &str, m: StringMatch) -> Permission {
    Permission::Header(HeaderMatch {
        name: name.into(),
        value: HeaderValueMatch::String(m),
        invert: false,
    })
}

fn authenticated(m: StringMatch) -> Principal {
    Principal::Authenticated(Some(m))
}

/// The shape the control plane emits: the control plane's namespace may do anything,
/// `web` may `GET /api.*`.
fn mesh_rules(action: Action) -> Rules {
    Rules {
        action,
        policies: vec![
            Policy {
                name: "TrafficTarget shop/allow-web".into(),
                permissions: vec![Permission::Or(vec![Permission::And(vec![
                    header(":method", StringMatch::Exact("GET".into(), false)),
                    Permission::UrlPath(re("/api.*")),
                ])])],
                principals: vec![Principal::Or(vec![authenticated(StringMatch::Exact(
                    WEB.into(),
                    false,
                ))])],
            },
            Policy {
                name: "rudder-control-plane".into(),
                permissions: vec![Permission::Any],
                principals: vec![authenticated(StringMatch::Prefix(
                    "spiffe://td/ns/rudder-system/".into(),
                    false,
                ))],
            },
        ],
    }
}

struct Req {
    method: &'static str,
    path: &'static str,
    headers: http::HeaderMap,
}

fn req(method: &'static str, path: &'static str) -> Req {
    Req {
        method,
        path,
        headers: http::HeaderMap::new(),
    }
}

fn allows(rules: &Rules, r: &Req, peer: Peer<'_>, port: u16) -> bool {
    let view = RequestView {
        method: r.method,
        authority: "shop",
        path_and_query: r.path,
        scheme: "https",
        headers: &r.headers,
    };
    rules.allows(&Subject {
        request: Some(&view),
        destination_port: port,
        peer,
    })
}

fn tls(uris: &[String]) -> Peer<'_> {
    Peer::Tls { uri_sans: uris }
}

#[test]
fn allow_rules_let_through_only_what_a_policy_matches() {
    let rules = mesh_rules(Action::Allow);
    let web = [WEB.to_string()];
    let control = [CONTROL.to_string()];
    let other = ["spiffe://td/ns/shop/sa/other".to_string()];
    assert!(allows(&rules, &req("GET", "/api/items?x=1"), tls(&web), 80));
    assert!(
        !allows(&rules, &req("POST", "/api/items"), tls(&web), 80),
        "method"
    );
    assert!(
        !allows(&rules, &req("GET", "/admin"), tls(&web), 80),
        "path"
    );
    assert!(
        !allows(&rules, &req("GET", "/api/x"), tls(&other), 80),
        "identity"
    );
    assert!(allows(&rules, &req("DELETE", "/x"), tls(&control), 80));
    assert!(
        !allows(&rules, &req("GET", "/api/x"), Peer::Plain, 80),
        "plain text is not authenticated"
    );
    assert!(
        !allows(&rules, &req("GET", "/api/x"), tls(&[]), 80),
        "TLS without a certificate has no URI SAN"
    );
    // Any URI SAN of the certificate may match.
    let two = ["spiffe://elsewhere/x".to_string(), WEB.to_string()];
    assert!(allows(&rules, &req("GET", "/api"), tls(&two), 80));
}

#[test]
fn deny_rules_are_the_inverse_and_no_policy_decides_by_the_action() {
    let rules = mesh_rules(Action::Deny);
    let web = [WEB.to_string()];
    assert!(!allows(&rules, &req("GET", "/api"), tls(&web), 80));
    assert!(allows(&rules, &req("POST", "/api"), tls(&web), 80));
    let empty = |action| Rules {
        action,
        policies: vec![],
    };
    assert!(!allows(
        &empty(Action::Allow),
        &req("GET", "/"),
        tls(&web),
        80
    ));
    assert!(allows(
        &empty(Action::Deny),
        &req("GET", "/"),
        tls(&web),
        80
    ));
}

#[test]
fn authenticated_without_a_name_takes_any_tls_connection_as_envoy() {
    let rules = Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "tls".into(),
            permissions: vec![Permission::Any],
            principals: vec![Principal::Authenticated(None)],
        }],
    };
    assert!(allows(&rules, &req("GET", "/"), tls(&[]), 80));
    assert!(!allows(&rules, &req("GET", "/"), Peer::Plain, 80));
}

#[test]
fn not_and_or_ports_and_header_matchers() {
    let web = [WEB.to_string()];
    let policy = |permissions, principals| Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "p".into(),
            permissions,
            principals,
        }],
    };
    let port = policy(
        vec![Permission::DestinationPort(8080)],
        vec![Principal::Any],
    );
    assert!(allows(&port, &req("GET", "/"), Peer::Plain, 8080));
    assert!(!allows(&port, &req("GET", "/"), Peer::Plain, 8081));
    let not_admin = policy(
        vec![Permission::Not(Box::new(Permission::UrlPath(
            StringMatch::Prefix("/admin".into(), true),
        )))],
        vec![Principal::Not(Box::new(authenticated(StringMatch::Exact(
            WEB.into(),
            false,
        ))))],
    );
    assert!(allows(&not_admin, &req("GET", "/x"), Peer::Plain, 80));
    assert!(!allows(
        &not_admin,
        &req("GET", "/ADMIN/x"),
        Peer::Plain,
        80
    ));
    assert!(!allows(&not_admin, &req("GET", "/x"), tls(&web), 80));
    let both = policy(
        vec![Permission::Any],
        vec![Principal::And(vec![
            Principal::Any,
            Principal::Authenticated(None),
        ])],
    );
    assert!(!allows(&both, &req("GET", "/"), Peer::Plain, 80));
    // Headers: every value joined by `,`, present and inverted matchers.
    let mut r = req("GET", "/");
    r.headers.append("x-team", "a".parse().expect("value"));
    r.headers.append("x-team", "b".parse().expect("value"));
    let team = policy(
        vec![header("x-team", StringMatch::Exact("a,b".into(), false))],
        vec![Principal::Any],
    );
    assert!(allows(&team, &r, Peer::Plain, 80));
    let absent = policy(
        vec![Permission::Header(HeaderMatch {
            name: "x-debug".into(),
            value: HeaderValueMatch::Present(true),
            invert: true,
        })],
        vec![Principal::Any],
    );
    assert!(allows(&absent, &r, Peer::Plain, 80));
    r.headers.insert("x-debug", "1".parse().expect("value"));
    assert!(!allows(&absent, &r, Peer::Plain, 80));
}

#[test]
fn url_path_drops_query_and_fragment_and_connect_has_none() {
    let rules = Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "p".into(),
            permissions: vec![Permission::UrlPath(StringMatch::Exact("/a".into(), false))],
            principals: vec![Principal::Any],
        }],
    };
    assert!(allows(&rules, &req("GET", "/a?b=c"), Peer::Plain, 80));
    assert!(allows(&rules, &req("GET", "/a#f"), Peer::Plain, 80));
    assert!(!allows(&rules, &req("GET", "/a/b"), Peer::Plain, 80));
    let prefix = Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "p".into(),
            permissions: vec![Permission::Or(vec![
                Permission::UrlPath(StringMatch::Prefix(String::new(), false)),
                header(":path", StringMatch::Prefix(String::new(), false)),
            ])],
            principals: vec![Principal::Any],
        }],
    };
    assert!(!allows(&prefix, &req("CONNECT", ""), Peer::Plain, 80));
}

#[test]
fn a_connection_has_no_request_and_shadow_rules_are_decided_not_enforced() {
    let web = [WEB.to_string()];
    let tcp = Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "p".into(),
            permissions: vec![Permission::Any],
            principals: vec![authenticated(StringMatch::Exact(WEB.into(), false))],
        }],
    };
    let conn = |peer| Subject {
        request: None,
        destination_port: 5432,
        peer,
    };
    let path_only = Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "p".into(),
            permissions: vec![Permission::UrlPath(StringMatch::Prefix(
                String::new(),
                false,
            ))],
            principals: vec![Principal::Any],
        }],
    };
    assert!(!path_only.allows(&conn(tls(&web))), "no request, no path");
    let dry_run = Rbac {
        rules: None,
        shadow: Some(tcp.clone()),
    };
    let d = dry_run.decide(&conn(Peer::Plain));
    assert_eq!(
        d,
        Decision {
            enforced: None,
            shadow: Some(false)
        }
    );
    assert!(d.allowed());
    let enforced = Rbac {
        rules: Some(tcp),
        shadow: None,
    };
    assert!(enforced.decide(&conn(tls(&web))).allowed());
    assert!(!enforced.decide(&conn(Peer::Plain)).allowed());
    assert!(Rbac::default().decide(&conn(Peer::Plain)).allowed());
}
