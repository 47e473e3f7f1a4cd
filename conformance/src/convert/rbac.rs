//! The RBAC filters: `envoy.filters.http.rbac` (an HTTP filter before the router) and
//! `envoy.filters.network.rbac` (a network filter before the terminal one), their
//! `rules` and `shadow_rules` (`config.rbac.v3.RBAC`), policies, permissions and
//! principals, into [`crate::config::rbac`].
//!
//! Accepted: actions `ALLOW` and `DENY`; permissions `any`, `and_rules`, `or_rules`,
//! `not_rule`, `header`, `url_path`, `destination_port`; principals `any`, `and_ids`,
//! `or_ids`, `not_id`, `authenticated`. Anything else (`LOG`, a `condition`, audit
//! logging, matcher trees, per-rule stats, stat prefixes of the rules, another
//! permission or principal, `CONTINUOUS` enforcement, `delay_deny`) is refused by name.
//! As Envoy, the network filter refuses `header` permissions and principals, and the
//! sets Envoy's validation requires non-empty (permissions, principals, `and_rules`,
//! `or_rules`, `and_ids`, `or_ids`) are refused empty.

use envoy_types::pb::envoy::config::rbac::v3::{
    Permission as PbPermission, Policy as PbPolicy, Principal as PbPrincipal, Rbac as PbRules,
    permission::Rule, principal::Identifier, rbac::Action as PbAction,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as PbHttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::{
    Rbac as PbNetworkRbac, rbac::EnforcementType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, path_matcher};

use super::check::{Path, R, each, enumerated, must_be_default, name, opt_name};
use super::limits::{MAX_POLICIES, MAX_RBAC_RULES};
use super::matchers::string_matcher;
use super::route::header_match;
use crate::config::matcher::StringMatch;
use crate::config::rbac::{Action, NetworkRbac, Permission, Policy, Principal, Rbac, Rules};

/// Which filter the rules belong to (the network filter refuses `header`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    Http,
    Network,
}

/// `extensions.filters.http.rbac.v3.RBAC`.
pub(crate) fn http_rbac(path: &Path, m: &PbHttpRbac) -> R<Rbac> {
    must_be_default!(
        path,
        m,
        rules_stat_prefix,
        matcher,
        shadow_matcher,
        shadow_rules_stat_prefix,
        track_per_rule_stats,
    );
    both(
        path,
        m.rules.as_ref(),
        m.shadow_rules.as_ref(),
        Filter::Http,
    )
}

/// `extensions.filters.network.rbac.v3.RBAC`.
pub(crate) fn network_rbac(path: &Path, m: &PbNetworkRbac) -> R<NetworkRbac> {
    must_be_default!(
        path,
        m,
        matcher,
        shadow_matcher,
        shadow_rules_stat_prefix,
        delay_deny,
    );
    let ep = path.f("enforcement_type");
    let enforcement = enumerated::<EnforcementType>(&ep, m.enforcement_type)?;
    if enforcement != EnforcementType::OneTimeOnFirstByte {
        return Err(ep.err(format!(
            "unsupported value {} (only ONE_TIME_ON_FIRST_BYTE)",
            enforcement.as_str_name()
        )));
    }
    Ok(NetworkRbac {
        stat_prefix: name(&path.f("stat_prefix"), &m.stat_prefix)?,
        rbac: both(
            path,
            m.rules.as_ref(),
            m.shadow_rules.as_ref(),
            Filter::Network,
        )?,
    })
}

fn both(path: &Path, rules: Option<&PbRules>, shadow: Option<&PbRules>, filter: Filter) -> R<Rbac> {
    Ok(Rbac {
        rules: rules
            .map(|r| self::rules(&path.f("rules"), r, filter))
            .transpose()?,
        shadow: shadow
            .map(|r| self::rules(&path.f("shadow_rules"), r, filter))
            .transpose()?,
    })
}

/// `config.rbac.v3.RBAC`.
fn rules(path: &Path, r: &PbRules, filter: Filter) -> R<Rules> {
    must_be_default!(path, r, audit_logging_options);
    let ap = path.f("action");
    let action = match enumerated::<PbAction>(&ap, r.action)? {
        PbAction::Allow => Action::Allow,
        PbAction::Deny => Action::Deny,
        other => {
            return Err(ap.err(format!(
                "unsupported value {} (only ALLOW and DENY)",
                other.as_str_name()
            )));
        }
    };
    let pp = path.f("policies");
    if r.policies.len() > MAX_POLICIES {
        return Err(pp.err(format!(
            "{} entries, at most {MAX_POLICIES} accepted",
            r.policies.len()
        )));
    }
    // Envoy keeps policies in a sorted map; so do errors and the decision here.
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let policies = names
        .into_iter()
        .map(|n| policy(&pp.key(n), n, &r.policies[n], filter))
        .collect::<R<Vec<_>>>()?;
    Ok(Rules { action, policies })
}

fn policy(path: &Path, key: &str, p: &PbPolicy, filter: Filter) -> R<Policy> {
    must_be_default!(path, p, condition, checked_condition, cel_config);
    let permissions = non_empty(
        &path.f("permissions"),
        each(
            &path.f("permissions"),
            &p.permissions,
            MAX_RBAC_RULES,
            |p, x| permission(p, x, filter),
        )?,
    )?;
    let principals = non_empty(
        &path.f("principals"),
        each(
            &path.f("principals"),
            &p.principals,
            MAX_RBAC_RULES,
            |p, x| principal(p, x, filter),
        )?,
    )?;
    Ok(Policy {
        name: opt_name(path, key)?,
        permissions,
        principals,
    })
}

/// Envoy's validation: at least one entry.
fn non_empty<T>(path: &Path, v: Vec<T>) -> R<Vec<T>> {
    if v.is_empty() {
        return Err(path.err("at least one entry is required"));
    }
    Ok(v)
}

/// `any` must be `true` (Envoy's validation).
fn any_true(path: &Path, v: bool) -> R<()> {
    if v {
        Ok(())
    } else {
        Err(path.f("any").err("must be true"))
    }
}

const PERMISSIONS: &str = "any, and_rules, or_rules, not_rule, header, url_path, destination_port";
const PRINCIPALS: &str = "any, and_ids, or_ids, not_id, authenticated";

/// `config.rbac.v3.Permission`.
fn permission(path: &Path, p: &PbPermission, filter: Filter) -> R<Permission> {
    let set = |field: &str, rules: &[PbPermission]| -> R<Vec<Permission>> {
        let sp = path.f(field).f("rules");
        let v = each(&sp, rules, MAX_RBAC_RULES, |p, x| permission(p, x, filter))?;
        non_empty(&sp, v)
    };
    let unsupported = |field: &str| {
        Err(path.f(field).err(format!(
            "unsupported permission {field} (rudder-proxy implements {PERMISSIONS})"
        )))
    };
    Ok(match &p.rule {
        Some(Rule::Any(v)) => {
            any_true(path, *v)?;
            Permission::Any
        }
        Some(Rule::AndRules(s)) => Permission::And(set("and_rules", &s.rules)?),
        Some(Rule::OrRules(s)) => Permission::Or(set("or_rules", &s.rules)?),
        Some(Rule::NotRule(n)) => {
            Permission::Not(Box::new(permission(&path.f("not_rule"), n, filter)?))
        }
        Some(Rule::Header(h)) => {
            let hp = path.f("header");
            if filter == Filter::Network {
                return Err(hp.err("header rules are not supported by the RBAC network filter"));
            }
            Permission::Header(header_match(&hp, h)?)
        }
        Some(Rule::UrlPath(m)) => Permission::UrlPath(path_matcher(&path.f("url_path"), m)?),
        Some(Rule::DestinationPort(port)) => Permission::DestinationPort(
            u16::try_from(*port)
                .map_err(|_| path.f("destination_port").err("port out of range"))?,
        ),
        Some(Rule::DestinationIp(_)) => return unsupported("destination_ip"),
        Some(Rule::DestinationPortRange(_)) => return unsupported("destination_port_range"),
        Some(Rule::Metadata(_)) => return unsupported("metadata"),
        Some(Rule::RequestedServerName(_)) => return unsupported("requested_server_name"),
        Some(Rule::Matcher(_)) => return unsupported("matcher"),
        Some(Rule::UriTemplate(_)) => return unsupported("uri_template"),
        Some(Rule::SourcedMetadata(_)) => return unsupported("sourced_metadata"),
        None => return Err(path.err(format!("a permission needs a rule ({PERMISSIONS})"))),
    })
}

/// `config.rbac.v3.Principal`.
fn principal(path: &Path, p: &PbPrincipal, filter: Filter) -> R<Principal> {
    let set = |field: &str, ids: &[PbPrincipal]| -> R<Vec<Principal>> {
        let sp = path.f(field).f("ids");
        let v = each(&sp, ids, MAX_RBAC_RULES, |p, x| principal(p, x, filter))?;
        non_empty(&sp, v)
    };
    let unsupported = |field: &str| {
        Err(path.f(field).err(format!(
            "unsupported principal {field} (rudder-proxy implements {PRINCIPALS})"
        )))
    };
    Ok(match &p.identifier {
        Some(Identifier::Any(v)) => {
            any_true(path, *v)?;
            Principal::Any
        }
        Some(Identifier::AndIds(s)) => Principal::And(set("and_ids", &s.ids)?),
        Some(Identifier::OrIds(s)) => Principal::Or(set("or_ids", &s.ids)?),
        Some(Identifier::NotId(n)) => {
            Principal::Not(Box::new(principal(&path.f("not_id"), n, filter)?))
        }
        Some(Identifier::Authenticated(a)) => {
            let ap = path.f("authenticated").f("principal_name");
            Principal::Authenticated(
                a.principal_name
                    .as_ref()
                    .map(|m| string_matcher(&ap, m))
                    .transpose()?,
            )
        }
        Some(Identifier::Header(_)) if filter == Filter::Network => {
            return Err(path
                .f("header")
                .err("header rules are not supported by the RBAC network filter"));
        }
        Some(Identifier::Header(_)) => return unsupported("header"),
        Some(Identifier::SourceIp(_)) => return unsupported("source_ip"),
        Some(Identifier::DirectRemoteIp(_)) => return unsupported("direct_remote_ip"),
        Some(Identifier::RemoteIp(_)) => return unsupported("remote_ip"),
        Some(Identifier::UrlPath(_)) => return unsupported("url_path"),
        Some(Identifier::Metadata(_)) => return unsupported("metadata"),
        Some(Identifier::FilterState(_)) => return unsupported("filter_state"),
        Some(Identifier::SourcedMetadata(_)) => return unsupported("sourced_metadata"),
        Some(Identifier::Custom(_)) => return unsupported("custom"),
        None => {
            return Err(path.err(format!("a principal needs an identifier ({PRINCIPALS})")));
        }
    })
}

/// `type.matcher.v3.PathMatcher`: its `path` string matcher.
fn path_matcher(path: &Path, m: &PathMatcher) -> R<StringMatch> {
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => string_matcher(&path.f("path"), s),
        None => Err(path.f("path").err("a path matcher needs a path")),
    }
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
