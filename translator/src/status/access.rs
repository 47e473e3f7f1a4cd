//! The status of a TrafficTarget: `Accepted` (the model took it; a dry run says so) and
//! `ResolvedRefs` naming every rule whose HTTPRouteGroup, match name or TCPRoute is
//! missing (such a rule allows nothing), a target over the limits (it allows nothing),
//! and a destination no pod of the model runs as.

use crds::{RULE_HTTP, TrafficTarget};

use super::conditions::{PolicyStatus, accepted, resolved};
use crate::model::Model;

/// What one rule names that the model does not have.
fn missing_refs(model: &Model, t: &TrafficTarget, ns: &str) -> Vec<String> {
    let spec = t.effective();
    let (prefix, rules) = t.field_prefix();
    let mut missing = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let at = format!("{prefix}{rules}[{i}]");
        if r.kind == RULE_HTTP {
            match model.route_group(ns, &r.name) {
                None => missing.push(format!(
                    "{at}: HTTPRouteGroup {ns}/{} does not exist (the rule allows nothing)",
                    r.name
                )),
                Some(g) => {
                    for m in r
                        .matches
                        .iter()
                        .filter(|m| !g.spec.matches.iter().any(|x| x.name == **m))
                    {
                        missing.push(format!(
                            "{at}.matches: HTTPRouteGroup {ns}/{} has no match {}",
                            r.name,
                            crds::text::quote(m)
                        ));
                    }
                }
            }
        } else if model.tcp_route(ns, &r.name).is_none() {
            missing.push(format!(
                "{at}: TCPRoute {ns}/{} does not exist (the rule allows nothing)",
                r.name
            ));
        }
    }
    missing.extend(crate::policy::authz::over_limits(model, t));
    let sa = &spec.destination.name;
    if !model
        .pods_in(ns)
        .any(|p| p.service_account == *sa && !p.finished)
    {
        missing.push(format!(
            "{prefix}destination: no pod runs as service account {ns}/{sa} (yet)"
        ));
    }
    missing
}

/// Conditions of one TrafficTarget the model holds.
pub(crate) fn target_status(model: &Model, t: &TrafficTarget) -> PolicyStatus {
    let ns = t.metadata.namespace.as_deref().unwrap_or("default");
    let mut ok = accepted(Ok(()));
    if t.dry_run() {
        ok.message =
            "accepted as a dry run: proxies record what it would deny and deny nothing for it"
                .into();
    }
    PolicyStatus {
        generation: t.metadata.generation,
        conditions: vec![ok, resolved(missing_refs(model, t, ns))],
        parents: Vec::new(),
    }
}
