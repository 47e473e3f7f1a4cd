//! RBAC on the data path, shared by the HTTP filter (`http::rbac`) and the network
//! filter (`listen::conn`): the connection's peer as RBAC sees it, and a decision of
//! [`Rbac`] counted under Envoy's names (`<prefix>rbac.allowed`, `denied`,
//! `shadow_allowed`, `shadow_denied`; the enforced pair only when there are `rules`,
//! the shadow pair only when there are `shadow_rules`).

use crate::config::rbac::{Peer, Rbac, Subject};
use crate::data::ctx::ConnInfo;
use crate::stats::Stats;

/// The downstream peer of `conn`: TLS (with the verified certificate's URI SANs, none
/// without a certificate) or plain text.
pub(crate) fn peer(conn: &ConnInfo) -> Peer<'_> {
    match &conn.tls_peer {
        Some(p) => Peer::Tls { uri_sans: &p.uris },
        None if conn.tls => Peer::Tls { uri_sans: &[] },
        None => Peer::Plain,
    }
}

/// Envoy's `statPrefixJoin(prefix, "rbac.")`: `prefix.rbac.`, with no second dot after
/// a prefix that ends in one.
pub(crate) fn stat_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        format!("{prefix}rbac.")
    } else {
        format!("{prefix}.rbac.")
    }
}

/// Decides `subject` under `rbac`, counts the outcome under `prefix` (from
/// [`stat_prefix`]), and says whether the request or connection goes on. The shadow
/// rules are decided first, as Envoy does.
pub(crate) fn check(stats: &Stats, prefix: &str, rbac: &Rbac, subject: &Subject<'_>) -> bool {
    let decision = rbac.decide(subject);
    let count = |name: &str| stats.counter(&format!("{prefix}{name}")).inc();
    match decision.shadow {
        Some(true) => count("shadow_allowed"),
        Some(false) => count("shadow_denied"),
        None => {}
    }
    match decision.enforced {
        Some(true) => count("allowed"),
        Some(false) => count("denied"),
        None => {}
    }
    decision.allowed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rbac::{Action, Permission, Policy, Principal, Rules};

    fn rules(action: Action) -> Rules {
        Rules {
            action,
            policies: vec![Policy {
                name: "tls".into(),
                permissions: vec![Permission::Any],
                principals: vec![Principal::Authenticated(None)],
            }],
        }
    }

    #[test]
    fn prefixes_join_as_envoys() {
        assert_eq!(stat_prefix("http.inbound."), "http.inbound.rbac.");
        assert_eq!(stat_prefix("inbound_tcp"), "inbound_tcp.rbac.");
        assert_eq!(stat_prefix(""), "rbac.");
    }

    #[test]
    fn counters_move_for_the_rules_that_are_there() {
        let stats = Stats::default();
        let plain = Subject {
            request: None,
            destination_port: 80,
            peer: Peer::Plain,
        };
        let shadow_only = Rbac {
            rules: None,
            shadow: Some(rules(Action::Allow)),
        };
        assert!(check(&stats, "p.rbac.", &shadow_only, &plain));
        let both = Rbac {
            rules: Some(rules(Action::Allow)),
            shadow: Some(rules(Action::Deny)),
        };
        assert!(!check(&stats, "p.rbac.", &both, &plain));
        let get = |n: &str| stats.counter(&format!("p.rbac.{n}")).get();
        assert_eq!(get("shadow_denied"), 1);
        assert_eq!(get("shadow_allowed"), 1);
        assert_eq!(get("denied"), 1);
        assert_eq!(get("allowed"), 0);
        assert!(check(&stats, "p.rbac.", &Rbac::default(), &plain));
        assert_eq!(get("allowed"), 0, "no rules: nothing counted");
    }
}
