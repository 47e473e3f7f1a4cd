//! Conversion of the RBAC filters: the shapes Rudder emits, and each refusal with the
//! path of the field.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission as PbPermission, Policy as PbPolicy, Principal as PbPrincipal, Rbac as PbRules,
    permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::api::expr::v1alpha1::Expr;
use envoy_types::pb::google::protobuf::Duration;

use super::*;
use crate::config::rbac::{Action, Permission, Principal};

fn sm(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..Default::default()
    }
}

fn perm(rule: permission::Rule) -> PbPermission {
    PbPermission { rule: Some(rule) }
}

fn princ(id: principal::Identifier) -> PbPrincipal {
    PbPrincipal {
        identifier: Some(id),
    }
}

fn authenticated(p: MatchPattern) -> PbPrincipal {
    princ(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(sm(p)),
        },
    ))
}

fn any_perm() -> PbPermission {
    perm(permission::Rule::Any(true))
}

/// What the control plane emits for an HTTP destination.
fn mesh_rules() -> PbRules {
    let get_api = perm(permission::Rule::AndRules(permission::Set {
        rules: vec![
            perm(permission::Rule::Header(HeaderMatcher {
                name: ":method".into(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    sm(MatchPattern::Exact("GET".into())),
                )),
                ..Default::default()
            })),
            perm(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(sm(MatchPattern::SafeRegex(
                    RegexMatcher {
                        regex: "/api.*".into(),
                        ..Default::default()
                    },
                )))),
            })),
        ],
    }));
    let policies = HashMap::from([
        (
            "rudder-control-plane".to_string(),
            PbPolicy {
                permissions: vec![any_perm()],
                principals: vec![authenticated(MatchPattern::Prefix(
                    "spiffe://TD/ns/rudder-system/".into(),
                ))],
                ..Default::default()
            },
        ),
        (
            "TrafficTarget shop/allow-web".to_string(),
            PbPolicy {
                permissions: vec![perm(permission::Rule::OrRules(permission::Set {
                    rules: vec![get_api],
                }))],
                principals: vec![princ(principal::Identifier::OrIds(principal::Set {
                    ids: vec![authenticated(MatchPattern::Exact(
                        "spiffe://TD/ns/shop/sa/web".into(),
                    ))],
                }))],
                ..Default::default()
            },
        ),
    ]);
    PbRules {
        action: 0,
        policies,
        ..Default::default()
    }
}

/// One policy `p` of `permission` for any principal.
fn one(permission: PbPermission, principal: PbPrincipal) -> PbRules {
    PbRules {
        action: 0,
        policies: HashMap::from([(
            "p".to_string(),
            PbPolicy {
                permissions: vec![permission],
                principals: vec![principal],
                ..Default::default()
            },
        )]),
        ..Default::default()
    }
}

fn any_princ() -> PbPrincipal {
    princ(principal::Identifier::Any(true))
}

fn http(rules: PbRules) -> R<crate::config::rbac::Rbac> {
    http_rbac(
        &Path::root(),
        &PbHttpRbac {
            rules: Some(rules),
            ..Default::default()
        },
    )
}

fn refused(r: R<crate::config::rbac::Rbac>) -> crate::convert::check::Fail {
    match r {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_mesh_shape_converts_sorted_by_policy_name() {
    let r = http(mesh_rules()).expect("converts");
    let rules = r.rules.expect("rules");
    assert!(r.shadow.is_none());
    assert_eq!(rules.action, Action::Allow);
    let names: Vec<&str> = rules.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["TrafficTarget shop/allow-web", "rudder-control-plane"]
    );
    let Permission::Or(or) = &rules.policies[0].permissions[0] else {
        panic!("{:?}", rules.policies[0].permissions);
    };
    assert!(matches!(&or[0], Permission::And(a) if a.len() == 2));
    assert!(matches!(&rules.policies[0].principals[0], Principal::Or(ids) if ids.len() == 1));
    assert!(matches!(
        &rules.policies[1].principals[0],
        Principal::Authenticated(Some(_))
    ));
    // Dry run: the same rules as shadow rules only.
    let dry = http_rbac(
        &Path::root(),
        &PbHttpRbac {
            shadow_rules: Some(mesh_rules()),
            ..Default::default()
        },
    )
    .expect("converts");
    assert!(dry.rules.is_none());
    assert_eq!(dry.shadow.expect("shadow").policies.len(), 2);
}

#[test]
fn actions_other_than_allow_and_deny_and_unimplemented_fields_are_refused() {
    let mut log = mesh_rules();
    log.action = 2;
    let e = refused(http(log));
    assert_eq!(e.path, "rules.action");
    assert!(e.message.contains("LOG"), "{e:?}");
    let mut deny = mesh_rules();
    deny.action = 1;
    assert_eq!(
        http(deny).expect("DENY").rules.expect("rules").action,
        Action::Deny
    );

    let mut cond = one(any_perm(), any_princ());
    if let Some(p) = cond.policies.get_mut("p") {
        p.condition = Some(Expr::default());
    }
    assert_eq!(refused(http(cond)).path, "rules.policies[\"p\"].condition");
    let mut audit = mesh_rules();
    audit.audit_logging_options = Some(Default::default());
    assert_eq!(refused(http(audit)).path, "rules.audit_logging_options");

    let prefixed = PbHttpRbac {
        rules_stat_prefix: "x".into(),
        ..Default::default()
    };
    let e = http_rbac(&Path::root(), &prefixed).expect_err("refused");
    assert_eq!(e.path, "rules_stat_prefix");
    let per_rule = PbHttpRbac {
        track_per_rule_stats: true,
        ..Default::default()
    };
    let e = http_rbac(&Path::root(), &per_rule).expect_err("refused");
    assert_eq!(e.path, "track_per_rule_stats");
}

#[test]
fn unsupported_permissions_and_principals_are_named_where_they_are() {
    let ip = perm(permission::Rule::DestinationIp(CidrRange::default()));
    let e = refused(http(one(ip.clone(), any_princ())));
    assert_eq!(
        e.path,
        "rules.policies[\"p\"].permissions[0].destination_ip"
    );
    assert!(
        e.message.contains("unsupported permission destination_ip"),
        "{e:?}"
    );
    let nested = perm(permission::Rule::OrRules(permission::Set {
        rules: vec![any_perm(), ip],
    }));
    assert_eq!(
        refused(http(one(nested, any_princ()))).path,
        "rules.policies[\"p\"].permissions[0].or_rules.rules[1].destination_ip"
    );
    let source = princ(principal::Identifier::SourceIp(CidrRange::default()));
    let e = refused(http(one(any_perm(), source)));
    assert_eq!(e.path, "rules.policies[\"p\"].principals[0].source_ip");
    assert!(
        e.message.contains("unsupported principal source_ip"),
        "{e:?}"
    );
    let not = princ(principal::Identifier::NotId(Box::new(princ(
        principal::Identifier::Header(HeaderMatcher::default()),
    ))));
    assert_eq!(
        refused(http(one(any_perm(), not))).path,
        "rules.policies[\"p\"].principals[0].not_id.header"
    );
}

#[test]
fn envoys_validation_any_true_sets_and_lists_not_empty_ports_regexes() {
    let e = refused(http(one(perm(permission::Rule::Any(false)), any_princ())));
    assert_eq!(e.path, "rules.policies[\"p\"].permissions[0].any");
    let empty_and = perm(permission::Rule::AndRules(permission::Set {
        rules: vec![],
    }));
    assert_eq!(
        refused(http(one(empty_and, any_princ()))).path,
        "rules.policies[\"p\"].permissions[0].and_rules.rules"
    );
    let mut no_principals = one(any_perm(), any_princ());
    if let Some(p) = no_principals.policies.get_mut("p") {
        p.principals.clear();
    }
    assert_eq!(
        refused(http(no_principals)).path,
        "rules.policies[\"p\"].principals"
    );
    let port = perm(permission::Rule::DestinationPort(70_000));
    assert_eq!(
        refused(http(one(port, any_princ()))).path,
        "rules.policies[\"p\"].permissions[0].destination_port"
    );
    let bad_re = authenticated(MatchPattern::SafeRegex(RegexMatcher {
        regex: "(".into(),
        ..Default::default()
    }));
    assert_eq!(
        refused(http(one(any_perm(), bad_re))).path,
        "rules.policies[\"p\"].principals[0].authenticated.principal_name.safe_regex.regex"
    );
    let no_rule = PbPermission { rule: None };
    assert_eq!(
        refused(http(one(no_rule, any_princ()))).path,
        "rules.policies[\"p\"].permissions[0]"
    );
}

fn network(m: PbNetworkRbac) -> R<crate::config::rbac::NetworkRbac> {
    network_rbac(&Path::root(), &m)
}

#[test]
fn the_network_filter_needs_a_stat_prefix_enforces_once_and_has_no_headers() {
    let tcp = PbNetworkRbac {
        rules: Some(one(
            any_perm(),
            authenticated(MatchPattern::Exact("spiffe://TD/ns/shop/sa/web".into())),
        )),
        stat_prefix: "inbound_tcp".into(),
        ..Default::default()
    };
    let n = network(tcp.clone()).expect("converts");
    assert_eq!(n.stat_prefix, "inbound_tcp");
    assert!(n.rbac.rules.is_some() && n.rbac.shadow.is_none());

    let mut no_prefix = tcp.clone();
    no_prefix.stat_prefix.clear();
    assert_eq!(network(no_prefix).expect_err("refused").path, "stat_prefix");
    let mut continuous = tcp.clone();
    continuous.enforcement_type = 1;
    let e = network(continuous).expect_err("refused");
    assert_eq!(e.path, "enforcement_type");
    assert!(e.message.contains("CONTINUOUS"), "{e:?}");
    let mut delayed = tcp.clone();
    delayed.delay_deny = Some(Duration {
        seconds: 1,
        nanos: 0,
    });
    assert_eq!(network(delayed).expect_err("refused").path, "delay_deny");
    let mut headers = tcp;
    headers.shadow_rules = Some(one(
        perm(permission::Rule::Header(HeaderMatcher {
            name: ":method".into(),
            ..Default::default()
        })),
        any_princ(),
    ));
    let e = network(headers).expect_err("refused");
    assert_eq!(e.path, "shadow_rules.policies[\"p\"].permissions[0].header");
    assert!(e.message.contains("network filter"), "{e:?}");
}
