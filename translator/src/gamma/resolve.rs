//! Gateway API routes resolved into the routing IR: parentRefs attached to Service ports,
//! rules of every route on a port merged in precedence order, backends resolved.

use std::collections::{BTreeMap, BTreeSet};

use crds::gateway::ParentReference;
use crds::{ConditionReason, RetryPolicy};

use crate::gamma::backends;
use crate::gamma::view::{self, Rank, RouteView};
use crate::model::{Excluded, Kind, MeshService, Model, NsName, ObjectKey, Protocol, ServicePort};
use crate::routing::ir::{Backend, BackendFacts, Dest, PortRouting, Rule, duration, retry};

/// One rule (one of its matches) attached to a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attached {
    /// The Service port it applies to.
    pub port: u16,
    pub rule: Rule,
    /// Facts about the backends among its destinations, each cluster once.
    pub backends: Vec<BackendFacts>,
}

/// The routes attached to one Service, merged and in precedence order per port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServiceRoutes {
    /// The routes, oldest first.
    pub sources: Vec<ObjectKey>,
    pub rules: Vec<Attached>,
}

impl ServiceRoutes {
    /// The ports routes apply to.
    pub(crate) fn ports(&self) -> BTreeSet<u16> {
        self.rules.iter().map(|a| a.port).collect()
    }
}

/// Producer routes (in their Service's namespace, for every caller) by Service
/// (namespace, name).
pub(crate) type RouteState = BTreeMap<NsName, ServiceRoutes>;

/// Consumer routes (in another namespace than their Service, for the callers in their
/// own) by Service, then by the callers' namespace.
pub(crate) type ConsumerState = BTreeMap<NsName, BTreeMap<String, ServiceRoutes>>;

/// Who the routes of a route attached to a Service apply to: `None` every caller (a
/// producer route), else the callers in that namespace (a consumer route).
pub(crate) type Audience = Option<String>;

/// The audience of a route in `route_ns` attached to Service `svc`.
pub(crate) fn audience(route_ns: &str, svc: &NsName) -> Audience {
    (svc.0 != route_ns).then(|| route_ns.to_string())
}

/// The Service and HTTP ports a Service parentRef of a route in `route_ns` attaches to,
/// or why it does not (reason, message naming the field).
pub(crate) fn attach(
    model: &Model,
    route_ns: &str,
    index: usize,
    p: &ParentReference,
) -> Result<(NsName, Vec<u16>), (ConditionReason, String)> {
    let field = format!("spec.parentRefs[{index}]");
    // A Service in another namespace: a consumer route, for the callers in `route_ns`.
    let ns = p.namespace.as_deref().unwrap_or(route_ns);
    let Some(svc) = model.service(ns, &p.name) else {
        return Err((
            ConditionReason::NoMatchingParent,
            format!("{field}.name: Service {ns}/{} not found", p.name),
        ));
    };
    let chosen: Vec<&ServicePort> = match (p.port, &p.section_name) {
        (Some(n), _) => {
            let Some(sp) = svc.ports.iter().find(|sp| i32::from(sp.port) == n) else {
                return Err((
                    ConditionReason::NoMatchingParent,
                    format!("{field}.port: Service {ns}/{} has no port {n}", p.name),
                ));
            };
            vec![sp]
        }
        (None, Some(section)) => {
            let Some(sp) = svc.ports.iter().find(|sp| sp.name == *section) else {
                return Err((
                    ConditionReason::NoMatchingParent,
                    format!(
                        "{field}.sectionName: Service {ns}/{} has no port named {}",
                        p.name,
                        crds::text::quote(section)
                    ),
                ));
            };
            vec![sp]
        }
        (None, None) => svc.ports.iter().collect(),
    };
    let ports: Vec<u16> = chosen
        .iter()
        .filter(|sp| sp.protocol != Protocol::Tcp)
        .map(|sp| sp.port)
        .collect();
    if ports.is_empty() {
        return Err((
            ConditionReason::NoMatchingParent,
            match chosen.as_slice() {
                [sp] => format!(
                    "{field}: port {} of Service {ns}/{} is TCP; routes apply to HTTP and gRPC ports",
                    sp.port, p.name
                ),
                _ => format!("{field}: Service {ns}/{} has no HTTP or gRPC port", p.name),
            },
        ));
    }
    Ok(((ns.to_string(), p.name.clone()), ports))
}

/// A Service port.
type Target = (NsName, u16);

/// Why a route attaches nowhere although its parents resolve: it would render more than
/// [`MAX_RENDERED_BYTES`](crds::gateway_validate::MAX_RENDERED_BYTES) over the Service
/// ports it attaches to (validation counts parentRefs; a parentRef without a port covers
/// every HTTP port of its Service).
pub(crate) fn too_large(route: &RouteView<'_>, ports: usize) -> Option<String> {
    let total = route.rendered.saturating_mul(ports);
    (total > crds::gateway_validate::MAX_RENDERED_BYTES).then(|| {
        format!(
            "spec.rules: would make about {} KiB of route configuration over the {ports} Service port(s) it attaches to, over the {} KiB limit: name ports in the parentRefs, or use fewer matches or smaller header filters",
            total / 1024,
            crds::gateway_validate::MAX_RENDERED_BYTES / 1024
        )
    })
}

/// A Service port routed for an audience.
pub(crate) type Taken = (Audience, Target);

/// The Service ports each route attaches to, in `routes` order, GRPCRoutes taking their
/// ports from HTTPRoutes of the same audience (a route too large for its ports attaches
/// nowhere); and which GRPCRoute took each port for each audience.
pub(crate) fn attachments(
    model: &Model,
    routes: &[RouteView<'_>],
) -> (Vec<BTreeSet<Target>>, BTreeMap<Taken, ObjectKey>) {
    let mut all: Vec<BTreeSet<(NsName, u16)>> = routes
        .iter()
        .map(|route| {
            let mut set = BTreeSet::new();
            for (i, p) in route.parents.iter().enumerate() {
                if p.is_service()
                    && let Ok((svc, ports)) = attach(model, &route.key.namespace, i, p)
                {
                    set.extend(ports.into_iter().map(|port| (svc.clone(), port)));
                }
            }
            if too_large(route, set.len()).is_some() {
                set.clear();
            }
            set
        })
        .collect();
    let mut grpc_taken: BTreeMap<Taken, ObjectKey> = BTreeMap::new();
    for (route, set) in routes.iter().zip(&all) {
        if route.grpc {
            for a in set {
                let who = audience(&route.key.namespace, &a.0);
                grpc_taken
                    .entry((who, a.clone()))
                    .or_insert(route.key.clone());
            }
        }
    }
    for (route, set) in routes.iter().zip(all.iter_mut()) {
        if !route.grpc {
            set.retain(|a| {
                !grpc_taken.contains_key(&(audience(&route.key.namespace, &a.0), a.clone()))
            });
        }
    }
    (all, grpc_taken)
}

/// The routes attached to every Service, merged and ordered: producer routes, and
/// consumer routes per callers' namespace; routes in `excluded` (left out by
/// containment) count as absent.
pub(crate) fn resolve(model: &Model, excluded: &Excluded) -> (RouteState, ConsumerState) {
    let routes = view::routes(model, excluded);
    let (attached, _) = attachments(model, &routes);
    type Merged = Vec<(ObjectKey, Attached, Rank)>;
    let mut out: BTreeMap<(NsName, Audience), Merged> = BTreeMap::new();
    for (route, targets) in routes.iter().zip(&attached) {
        if targets.is_empty() {
            continue;
        }
        let ns = route.key.namespace.as_str();
        let foreign = route.foreign_parents();
        for (ri, rule) in route.rules.iter().enumerate() {
            let resolved = backends::destination(
                model,
                (ns, &foreign),
                &format!("spec.rules[{ri}]"),
                rule.backends,
                route.grpc,
            );
            let (mirrors, _) = backends::mirrors(
                model,
                (ns, &foreign),
                &format!("spec.rules[{ri}]"),
                rule.filters,
            );
            let extra = Box::new(backends::extra(
                &route.key,
                &format!("spec.rules[{ri}]"),
                rule,
                route.grpc,
                mirrors,
                resolved.backend_headers.clone(),
            ));
            for (m, rank) in &rule.matches {
                for (svc, port) in targets {
                    let who = audience(ns, svc);
                    out.entry((svc.clone(), who)).or_default().push((
                        route.key.clone(),
                        Attached {
                            port: *port,
                            rule: Rule {
                                matches: Some(m.clone()),
                                dest: resolved.dest.clone(),
                                extra: Some(extra.clone()),
                            },
                            backends: resolved.backends.clone(),
                        },
                        *rank,
                    ));
                }
            }
        }
    }
    let mut producers = RouteState::new();
    let mut consumers = ConsumerState::new();
    for ((svc, who), mut rules) in out {
        // Stable: equal ranks keep route (oldest first), rule and match order.
        rules.sort_by_key(|r| std::cmp::Reverse(r.2));
        let mut sources: Vec<ObjectKey> = Vec::new();
        for (k, _, _) in &rules {
            if !sources.contains(k) {
                sources.push(k.clone());
            }
        }
        let rules = rules.into_iter().map(|(_, a, _)| a).collect();
        let merged = ServiceRoutes { sources, rules };
        match who {
            None => {
                producers.insert(svc, merged);
            }
            Some(ns) => {
                consumers.entry(svc).or_default().insert(ns, merged);
            }
        }
    }
    (producers, consumers)
}

/// The routing of one Service port for callers in `client` (None: callers without
/// consumer routes of their own) from its attached routes, or `None` when no route
/// applies to it. The consumer routes of the callers' namespace on the port, if any, take
/// precedence over the producer routes.
pub(crate) fn port_routing(
    (routes, consumers): (&RouteState, &ConsumerState),
    client: Option<&str>,
    svc: &MeshService,
    port: &ServicePort,
    retry_obj: Option<&RetryPolicy>,
) -> Option<PortRouting> {
    if port.protocol == Protocol::Tcp {
        return None;
    }
    let key = (svc.namespace.clone(), svc.name.clone());
    let on_port = |r: &ServiceRoutes| -> Vec<Attached> {
        r.rules
            .iter()
            .filter(|a| a.port == port.port)
            .cloned()
            .collect()
    };
    let own = client
        .and_then(|ns| consumers.get(&key)?.get(ns))
        .map(on_port)
        .filter(|a| !a.is_empty());
    let applies = match own {
        Some(a) => a,
        None => on_port(routes.get(&key)?),
    };
    if applies.is_empty() {
        return None;
    }
    let mut sources = vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)];
    let mut refs = Vec::new();
    let mut backends: Vec<BackendFacts> = Vec::new();
    for a in &applies {
        if let Some(src) = a.rule.extra.as_ref().and_then(|e| e.source.as_ref())
            && !sources.contains(src)
        {
            sources.push(src.clone());
        }
        match &a.rule.dest {
            Dest::Cluster(c) => refs.push(c.clone()),
            // A share that fails has nothing to wait for.
            Dest::Weighted(w) => refs.extend(w.iter().filter_map(|(b, _)| match b {
                Backend::Cluster(c) => Some(c.clone()),
                Backend::Missing => None,
            })),
            Dest::NoBackend | Dest::Status(_) => {}
        }
        if let Some(e) = &a.rule.extra {
            refs.extend(e.mirrors.iter().map(|(c, _)| c.clone()));
        }
        for b in &a.backends {
            if !backends.iter().any(|x| x.cluster == b.cluster) {
                backends.push(b.clone());
            }
        }
    }
    if let Some(p) = retry_obj {
        sources.push(ObjectKey::new(
            Kind::RetryPolicy,
            &svc.namespace,
            p.metadata.name.as_deref().unwrap_or_default(),
        ));
    }
    Some(PortRouting {
        name: format!("{}:{}", svc.fqdn(), port.port),
        protocol: port.protocol,
        rules: applies.into_iter().map(|a| a.rule).collect(),
        retry: retry_obj.map(retry),
        timeout: retry_obj.and_then(|p| duration(p.spec.timeout.as_deref())),
        refs,
        sources,
        backends,
    })
}
