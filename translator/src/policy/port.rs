//! The SMI side of a Service port's routing: its TrafficSplit (with HTTPRouteGroups and
//! nested splits) and its RetryPolicy resolved into the routing IR, unless Gateway API
//! routes attached to the port take precedence ([`crate::gamma`]).

use crds::RetryPolicy;

use crate::model::{Kind, MeshService, Model, ObjectKey, ServicePort};
use crate::names;
use crate::policy::context::PolicyContext;
use crate::policy::retry::retry_for;
use crate::policy::split::EffectiveSplit;
use crate::routing::ir::{Backend, BackendFacts, Dest, Match, PortRouting, Rule, duration, retry};

/// The RetryPolicy in effect on a Service port.
pub(crate) fn retry_policy<'a>(
    model: &'a Model,
    policy: &PolicyContext,
    svc: &MeshService,
    port: u16,
) -> Option<&'a RetryPolicy> {
    retry_for(
        model,
        &policy.retry_winners,
        &svc.namespace,
        &svc.name,
        port,
    )
}

/// Where requests go: the split's backends on this port, or the service itself.
pub(crate) fn destination(
    model: &Model,
    svc: &MeshService,
    port: u16,
    split: Option<&EffectiveSplit>,
    refs: &mut Vec<String>,
) -> Dest {
    let weighted: Vec<(Backend, u32)> = split
        .into_iter()
        .flat_map(|s| s.backends.iter())
        .filter_map(|(backend, weight)| {
            let b = model.service(&svc.namespace, backend)?;
            b.ports.iter().any(|p| p.port == port).then(|| {
                let name = names::outbound_cluster(b, port);
                refs.push(name.clone());
                (Backend::Cluster(name), *weight)
            })
        })
        .collect();
    if weighted.is_empty() {
        let name = names::outbound_cluster(svc, port);
        refs.push(name.clone());
        Dest::Cluster(name)
    } else {
        Dest::Weighted(weighted)
    }
}

/// Resolves every port of a Service, in order, for callers without consumer routes.
pub(crate) fn port_routings(
    model: &Model,
    policy: &PolicyContext,
    svc: &MeshService,
) -> Vec<PortRouting> {
    port_routings_for(model, policy, svc, None)
}

/// Resolves every port of a Service, in order, for callers in namespace `client` (their
/// consumer routes take precedence); None: callers without consumer routes.
pub(crate) fn port_routings_for(
    model: &Model,
    policy: &PolicyContext,
    svc: &MeshService,
    client: Option<&str>,
) -> Vec<PortRouting> {
    svc.ports
        .iter()
        .map(|p| port_routing(model, policy, svc, p, client))
        .collect()
}

/// Resolves one Service port for callers in `client`: its Gateway API routes if any
/// are attached (the callers' consumer routes first), else its split.
pub(crate) fn port_routing(
    model: &Model,
    policy: &PolicyContext,
    svc: &MeshService,
    port: &ServicePort,
    client: Option<&str>,
) -> PortRouting {
    let retry_obj = retry_policy(model, policy, svc, port.port);
    if let Some(routed) = crate::gamma::resolve::port_routing(
        (&policy.routes, &policy.consumers),
        client,
        svc,
        port,
        retry_obj,
    ) {
        return routed;
    }
    let split = policy
        .splits
        .get(&(svc.namespace.clone(), svc.name.clone()));
    let mut refs = Vec::new();
    let rules = split_rules(model, svc, port.port, split, &mut refs);
    PortRouting {
        backends: backend_facts(model, svc, port.port, split),
        name: format!("{}:{}", svc.fqdn(), port.port),
        protocol: port.protocol,
        rules,
        retry: retry_obj.map(retry),
        timeout: retry_obj.and_then(|p| duration(p.spec.timeout.as_deref())),
        refs,
        sources: split_sources(svc, split, retry_obj),
    }
}

/// The objects a split-routed port is made from: the Service, its split (with route
/// groups and nested splits) and its RetryPolicy.
fn split_sources(
    svc: &MeshService,
    split: Option<&EffectiveSplit>,
    retry_obj: Option<&RetryPolicy>,
) -> Vec<ObjectKey> {
    let mut sources = vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)];
    if let Some(s) = split {
        sources.push(ObjectKey::new(
            Kind::TrafficSplit,
            &svc.namespace,
            &s.source,
        ));
        sources.extend(
            s.route_groups
                .iter()
                .map(|g| ObjectKey::new(Kind::HTTPRouteGroup, &svc.namespace, g)),
        );
        sources.extend(
            s.nested
                .iter()
                .map(|n| ObjectKey::new(Kind::TrafficSplit, &svc.namespace, n)),
        );
    }
    if let Some(p) = retry_obj {
        sources.push(ObjectKey::new(
            Kind::RetryPolicy,
            &svc.namespace,
            p.metadata.name.as_deref().unwrap_or_default(),
        ));
    }
    sources
}

/// The rules of a split-routed port: one per split match to the split's backends, then
/// every other request to the Service itself; or all requests to the split (or Service).
fn split_rules(
    model: &Model,
    svc: &MeshService,
    port: u16,
    split: Option<&EffectiveSplit>,
    refs: &mut Vec<String>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    match split {
        Some(s) if !s.matches.is_empty() => {
            for m in &s.matches {
                rules.push(Rule {
                    matches: Some(Match::smi(m)),
                    dest: destination(model, svc, port, Some(s), refs),
                    extra: None,
                });
            }
            rules.push(Rule {
                matches: None,
                dest: destination(model, svc, port, None, refs),
                extra: None,
            });
        }
        other => rules.push(Rule {
            matches: None,
            dest: destination(model, svc, port, other, refs),
            extra: None,
        }),
    }
    rules
}

/// Facts about the Service itself and each of its split's backends on `port`.
fn backend_facts(
    model: &Model,
    svc: &MeshService,
    port: u16,
    split: Option<&EffectiveSplit>,
) -> Vec<BackendFacts> {
    let facts = |b: &MeshService| BackendFacts {
        cluster: names::outbound_cluster(b, port),
        http_with_endpoints: b
            .ports
            .iter()
            .any(|p| p.port == port && b.http_with_endpoints(p)),
    };
    let mut out = vec![facts(svc)];
    out.extend(
        split
            .into_iter()
            .flat_map(|s| s.backends.iter())
            .filter_map(|(b, _)| model.service(&svc.namespace, b))
            .map(facts),
    );
    out
}
