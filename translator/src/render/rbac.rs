//! Envoy RBAC rules from the proxy-neutral authorization ([`crate::routing::authz`]):
//! the `envoy.config.rbac.v3.RBAC` that Envoy's HTTP and network RBAC filters and gRPC's
//! server RBAC (A41) all read. Principals are the peer certificate's URI SAN
//! (`authenticated.principal_name`); permissions are HTTP method, path and header
//! matches, or anything.

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal, rbac::Action,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::render::route::regex;
use crate::routing::authz::{
    AllowPolicy, Callers, InboundAuthz, Ports, RequestMatch, Requests, Rules,
};

fn string(pattern: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn header(name: &str, pattern: MatchPattern) -> Permission {
    Permission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: name.into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string(pattern),
            )),
            ..Default::default()
        })),
    }
}

fn any_permission() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn one_of(mut rules: Vec<Permission>, or: bool) -> Permission {
    if rules.len() == 1 {
        return rules.remove(0);
    }
    let set = permission::Set { rules };
    Permission {
        rule: Some(if or {
            permission::Rule::OrRules(set)
        } else {
            permission::Rule::AndRules(set)
        }),
    }
}

/// One request match: method (any of), path and headers, all of them.
fn request(m: &RequestMatch) -> Permission {
    let mut all = Vec::new();
    if !m.methods.is_empty() {
        let methods = m
            .methods
            .iter()
            .map(|x| header(":method", MatchPattern::Exact(x.clone())))
            .collect();
        all.push(one_of(methods, true));
    }
    if let Some(re) = &m.path_regex {
        all.push(Permission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(string(MatchPattern::SafeRegex(
                    regex(re),
                )))),
            })),
        });
    }
    for (name, re) in &m.headers {
        all.push(header(name, MatchPattern::SafeRegex(regex(re))));
    }
    if all.is_empty() {
        return any_permission();
    }
    one_of(all, false)
}

fn destination_ports(ps: &[u16]) -> Permission {
    one_of(
        ps.iter()
            .map(|p| Permission {
                rule: Some(permission::Rule::DestinationPort(u32::from(*p))),
            })
            .collect(),
        true,
    )
}

fn permissions(ports: &Ports, r: &Requests) -> Vec<Permission> {
    let what = match r {
        Requests::Any => any_permission(),
        Requests::Http(ms) => one_of(ms.iter().map(request).collect(), true),
    };
    let on = match ports {
        Ports::All => return vec![what],
        Ports::Only(ps) => destination_ports(ps),
        Ports::Except(ps) if ps.is_empty() => return vec![what],
        Ports::Except(ps) => Permission {
            rule: Some(permission::Rule::NotRule(Box::new(destination_ports(ps)))),
        },
    };
    if matches!(r, Requests::Any) {
        return vec![on];
    }
    vec![one_of(vec![on, what], false)]
}

fn authenticated(pattern: MatchPattern) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(string(pattern)),
            },
        )),
    }
}

fn principals(c: &Callers) -> Vec<Principal> {
    match c {
        Callers::Anyone => vec![Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }],
        Callers::IdentityPrefix(p) => vec![authenticated(MatchPattern::Prefix(p.clone()))],
        Callers::Identities(ids) => ids
            .iter()
            .map(|id| authenticated(MatchPattern::Exact(id.clone())))
            .collect(),
    }
}

fn policy(p: &AllowPolicy) -> Policy {
    Policy {
        permissions: permissions(&p.ports, &p.requests),
        principals: principals(&p.callers),
        ..Default::default()
    }
}

/// `envoy.config.rbac.v3.RBAC` with its policies in name order: the generated type
/// keeps them in a HashMap, whose encoding would differ from build to build (and so
/// re-send unchanged listeners). Same field numbers, same bytes on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct SortedRules {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(message, repeated, tag = "2")]
    policies: Vec<PolicyEntry>,
}

/// One entry of the `policies` map.
#[derive(Clone, PartialEq, prost::Message)]
struct PolicyEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Policy>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`: `rules` and `shadow_rules`.
#[derive(Clone, PartialEq, prost::Message)]
struct HttpRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<SortedRules>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<SortedRules>,
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`: `rules`, `shadow_rules` and
/// `stat_prefix`.
#[derive(Clone, PartialEq, prost::Message)]
struct NetworkRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<SortedRules>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<SortedRules>,
    #[prost(string, tag = "3")]
    stat_prefix: String,
}

/// Allow rules as Envoy's RBAC (a request passes when some policy matches). A policy
/// with no requests (an HTTP rule set that matched nothing) allows nothing and is left
/// out.
fn sorted(rules: &Rules) -> SortedRules {
    let mut policies: Vec<PolicyEntry> = rules
        .policies
        .iter()
        .filter(|p| !matches!(&p.requests, Requests::Http(ms) if ms.is_empty()))
        .filter(|p| !matches!(&p.ports, Ports::Only(ps) if ps.is_empty()))
        .map(|p| PolicyEntry {
            key: p.name.clone(),
            value: Some(policy(p)),
        })
        .collect();
    policies.sort_by(|a, b| a.key.cmp(&b.key));
    policies.dedup_by(|a, b| a.key == b.key);
    SortedRules {
        action: Action::Allow as i32,
        policies,
    }
}

fn any(type_name: &str, value: Vec<u8>) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value,
    }
}

/// The HTTP RBAC filter enforcing `enforced` (none: everything passes) and recording
/// `shadow`.
pub(crate) fn http_filter(enforced: Option<&Rules>, shadow: Option<&Rules>) -> HttpFilter {
    let msg = HttpRbac {
        rules: enforced.map(sorted),
        shadow_rules: shadow.map(sorted),
    };
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(
            "envoy.extensions.filters.http.rbac.v3.RBAC",
            msg.encode_to_vec(),
        ))),
        ..Default::default()
    }
}

/// The HTTP RBAC filter of `authz`, unless it is open.
pub(crate) fn inbound_http_filter(authz: &InboundAuthz) -> Option<HttpFilter> {
    (!authz.is_open()).then(|| http_filter(authz.enforced.as_ref(), authz.shadow.as_ref()))
}

/// The network RBAC filter of `authz` (statistics under `stat_prefix`), unless it is
/// open: a denied connection is closed.
pub(crate) fn inbound_network_filter(authz: &InboundAuthz, stat_prefix: &str) -> Option<Filter> {
    if authz.is_open() {
        return None;
    }
    let msg = NetworkRbac {
        rules: authz.enforced.as_ref().map(sorted),
        shadow_rules: authz.shadow.as_ref().map(sorted),
        stat_prefix: stat_prefix.into(),
    };
    Some(Filter {
        name: "envoy.filters.network.rbac".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            "envoy.extensions.filters.network.rbac.v3.RBAC",
            msg.encode_to_vec(),
        ))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::authz::AllowPolicy;

    fn rules() -> Rules {
        let p = |name: &str| AllowPolicy {
            name: name.into(),
            source: None,
            callers: Callers::Identities(vec![format!("spiffe://td/ns/a/sa/{name}")]),
            ports: Ports::All,
            requests: Requests::Any,
        };
        Rules {
            policies: (0..20).map(|i| p(&format!("p{i:02}"))).rev().collect(),
        }
    }

    #[test]
    fn the_encoding_is_the_real_message_in_a_stable_order() {
        let a = http_filter(Some(&rules()), None);
        let b = http_filter(Some(&rules()), None);
        assert_eq!(a, b, "the same rules encode to the same bytes");
        let Some(http_filter::ConfigType::TypedConfig(any)) = &a.config_type else {
            panic!("typed config");
        };
        let real = envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac::decode(
            any.value.as_slice(),
        )
        .expect("decodes as Envoy's RBAC filter");
        let r = real.rules.expect("rules");
        assert_eq!(r.policies.len(), 20);
        assert_eq!(r.action, Action::Allow as i32);
        assert!(real.shadow_rules.is_none());
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
        );
    }
}
