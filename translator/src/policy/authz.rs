//! SMI TrafficTargets resolved into the authorization of one inbound port
//! ([`inbound`]): what a pod's port allows, from the model, for every emitter and for
//! `xdsctl authz check` ([`check`]).
//!
//! A destination is a service account and a port of its pods. It is *enforced* when at
//! least one TrafficTarget that is not a dry run names it (its service account, and its
//! port if the target's destination names one); then a caller passes only if some
//! target lists it among its sources and one of the target's rules covers the request:
//! - an `HTTPRouteGroup` rule: HTTP requests matching its listed matches (all of the
//!   group's when none are listed); never a TCP port;
//! - a `TCPRoute` rule: every request or connection on its ports (every port when it
//!   lists none); a target with TCPRoute rules covers only their ports, and its
//!   HTTPRouteGroup rules apply on those ports.
//!
//! A rule naming a missing object allows nothing (the target's status says which).
//! A destination no enforced target names follows the default ([`InboundDefault`]: the
//! pod's annotation, else its namespace's, else the mesh's), and the control plane's
//! identities are always allowed. Dry-run targets become shadow rules: what the port
//! would allow with every target enforced.

use crds::{HTTPMatch, RULE_HTTP, RULE_TCP, TrafficTarget};

use crate::mesh::{CONTROL_PLANE_NAMESPACE, InboundDefault, MeshConfig, MtlsMode};
use crate::model::{Kind, MeshPod, Model, ObjectKey, Protocol};
use crate::routing::authz::{
    AllowPolicy, Callers, Decision, InboundAuthz, Ports, Request, RequestMatch, Requests, Rules,
    normalize_path,
};

/// The name of the policy that lets the control plane in.
pub const CONTROL_PLANE_POLICY: &str = "rudder-control-plane";
/// The name of the policy of a default-allow destination (used in answers only).
pub const DEFAULT_ALLOW: &str = "default allow";

/// The SPIFFE ID of `sa` in `ns`.
pub fn spiffe_id(trust_domain: &str, ns: &str, sa: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}")
}

/// One inbound port of a destination.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// Its service account.
    pub service_account: &'a str,
    /// What the pod says about the default, if anything.
    pub pod_default: Option<InboundDefault>,
    /// The port (on the pod).
    pub port: u16,
    /// How it speaks.
    pub protocol: Protocol,
}

impl<'a> Destination<'a> {
    /// Port `port` of `pod`.
    pub fn of(pod: &'a MeshPod, port: u16, protocol: Protocol) -> Self {
        Destination {
            namespace: &pod.namespace,
            service_account: &pod.service_account,
            pod_default: pod.inbound_default,
            port,
            protocol,
        }
    }
}

/// Targets beyond this many naming one destination service account allow nothing (in
/// name order; the destination stays enforced), so that one namespace's objects cannot
/// grow its proxies' listeners without bound.
pub const MAX_TARGETS_PER_DESTINATION: usize = 32;
/// A target whose rules expand to more request matches than this on a port allows
/// nothing there (the status says so).
pub const MAX_MATCHES_PER_TARGET: usize = 128;

/// The targets that name `dest` (its service account, and its port if they say one; on
/// the passthrough, port 0, every target of the service account). All of them decide
/// whether the destination is enforced; only those within the limit allow anything.
fn targets<'m>(model: &'m Model, dest: &Destination<'_>) -> Vec<&'m TrafficTarget> {
    model
        .traffic_targets_in(dest.namespace)
        .filter(|t| t.effective().destination.name == dest.service_account)
        .filter(|t| {
            dest.port == PASSTHROUGH
                || t.effective()
                    .destination
                    .port
                    .as_ref()
                    .is_none_or(|p| crds::port_of(p) == Some(dest.port))
        })
        .collect()
}

/// The names of the targets of `namespace`'s service account `sa` that may allow
/// anything: the first [`MAX_TARGETS_PER_DESTINATION`] in name order.
fn within_limit<'m>(model: &'m Model, namespace: &str, sa: &str) -> Vec<&'m str> {
    model
        .traffic_targets_in(namespace)
        .filter(|t| t.effective().destination.name == sa)
        .take(MAX_TARGETS_PER_DESTINATION)
        .filter_map(|t| t.metadata.name.as_deref())
        .collect()
}

/// At most this many ports no Service serves get chains of their own on a pod.
pub const MAX_NAMED_PORTS: usize = 64;

/// The ports the TrafficTargets of `namespace`'s service account `sa` name (their
/// `destination.port`, and their TCPRoutes' ports), sorted, at most
/// [`MAX_NAMED_PORTS`]: an intercepted pod guards those it does not serve with their own
/// chains.
fn named_ports(model: &Model, namespace: &str, sa: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for t in model
        .traffic_targets_in(namespace)
        .filter(|t| t.effective().destination.name == sa)
    {
        let spec = t.effective();
        ports.extend(spec.destination.port.as_ref().and_then(crds::port_of));
        if let Some(Ports::Only(ps)) = tcp_ports(model, t, namespace) {
            ports.extend(ps);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports.truncate(MAX_NAMED_PORTS);
    ports
}

/// An intercepted pod's authorization beyond the ports it serves (`served`): the ports
/// TrafficTargets name, each under its own rules (those with something enforced, which
/// get chains of their own), and the passthrough's for every other port, without the
/// policies that only cover those named ports (never reached there).
pub fn unserved(
    model: &Model,
    mesh: &MeshConfig,
    pod: &MeshPod,
    served: &[u16],
) -> (Vec<(u16, InboundAuthz)>, InboundAuthz) {
    let named: Vec<(u16, InboundAuthz)> = named_ports(model, &pod.namespace, &pod.service_account)
        .into_iter()
        .filter(|p| !served.contains(p))
        .map(|p| {
            (
                p,
                inbound(model, mesh, &Destination::of(pod, p, Protocol::Tcp)),
            )
        })
        .filter(|(_, a)| a.enforced.is_some())
        .collect();
    let mut rest = inbound(
        model,
        mesh,
        &Destination::of(pod, PASSTHROUGH, Protocol::Tcp),
    );
    if let Some(rules) = rest.enforced.as_mut() {
        rules.policies.retain(|p| match &p.ports {
            Ports::Only(ps) => !ps.iter().all(|x| named.iter().any(|(n, _)| n == x)),
            _ => true,
        });
    }
    (named, rest)
}

/// The port of an intercepted pod's passthrough: every port no Service names.
pub const PASSTHROUGH: u16 = 0;

/// The HTTP request matches of `group`'s matches named in `names` (all when empty),
/// added to `out` unless already there.
fn group_matches(matches: &[HTTPMatch], names: &[String], out: &mut Vec<RequestMatch>) {
    for m in matches
        .iter()
        .filter(|m| names.is_empty() || names.contains(&m.name))
    {
        let m = RequestMatch {
            methods: if m.methods.iter().any(|x| x == "*") {
                Vec::new()
            } else {
                m.methods.clone()
            },
            path_regex: m.path_regex.clone(),
            headers: m
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
}

/// The ports `t`'s TCPRoute rules open (None: it has none, so it is not limited to
/// some ports).
fn tcp_ports(model: &Model, t: &TrafficTarget, ns: &str) -> Option<Ports> {
    let mut ports = Vec::new();
    let mut any = false;
    for r in t.effective().rules.iter().filter(|r| r.kind == RULE_TCP) {
        any = true;
        if let Some(ps) = model
            .tcp_route(ns, &r.name)
            .and_then(|x| x.spec.ports().ok())
        {
            if ps.is_empty() {
                return Some(Ports::All);
            }
            ports.extend(ps);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    any.then_some(Ports::Only(ports))
}

/// `a` and `b` both.
fn both(a: Ports, b: Option<u16>) -> Ports {
    match (a, b) {
        (a, None) => a,
        (Ports::All, Some(p)) => Ports::Only(vec![p]),
        (Ports::Only(ps), Some(p)) => Ports::Only(ps.into_iter().filter(|x| *x == p).collect()),
        (Ports::Except(ps), Some(p)) => {
            Ports::Only((!ps.contains(&p)).then_some(p).into_iter().collect())
        }
    }
}

/// What `t` allows on `dest`'s port, and on which of its ports (the passthrough serves
/// several): None when it covers nothing there.
fn requests_of(
    model: &Model,
    t: &TrafficTarget,
    dest: &Destination<'_>,
) -> Option<(Ports, Requests)> {
    let spec = t.effective();
    if spec.rules.is_empty() {
        // A target closed for being invalid (see `Model::apply`): it allows nothing.
        return None;
    }
    let ns = dest.namespace;
    let tcp = tcp_ports(model, t, ns);
    let ports = if dest.port == PASSTHROUGH {
        let named = spec.destination.port.as_ref().and_then(crds::port_of);
        both(tcp.clone().unwrap_or_default(), named)
    } else if tcp.as_ref().is_none_or(|ps| ps.covers(dest.port)) {
        Ports::All
    } else {
        return None;
    };
    if matches!(&ports, Ports::Only(ps) if ps.is_empty()) {
        return None;
    }
    let http: Vec<_> = spec.rules.iter().filter(|r| r.kind == RULE_HTTP).collect();
    if http.is_empty() {
        // TCPRoute rules only: everything on their ports.
        return Some((ports, Requests::Any));
    }
    if dest.protocol == Protocol::Tcp {
        // HTTP rules cover no TCP port; a TCPRoute rule naming it does.
        return tcp.is_some().then_some((ports, Requests::Any));
    }
    let mut matches = Vec::new();
    for r in &http {
        if let Some(g) = model.route_group(ns, &r.name) {
            group_matches(&g.spec.matches, &r.matches, &mut matches);
        }
    }
    if matches.is_empty() || matches.len() > MAX_MATCHES_PER_TARGET {
        return None;
    }
    Some((ports, Requests::Http(matches)))
}

/// The allow policy of one target on `dest`, if it covers anything there.
fn policy_of(
    model: &Model,
    mesh: &MeshConfig,
    t: &TrafficTarget,
    dest: &Destination<'_>,
) -> Option<AllowPolicy> {
    let (ports, requests) = requests_of(model, t, dest)?;
    let ns = dest.namespace;
    let name = t.metadata.name.clone().unwrap_or_default();
    let mut ids: Vec<String> = t
        .effective()
        .sources
        .iter()
        .map(|s| {
            let sns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(ns);
            spiffe_id(&mesh.trust_domain, sns, &s.name)
        })
        .collect();
    ids.sort();
    ids.dedup();
    Some(AllowPolicy {
        name: format!("TrafficTarget {ns}/{name}"),
        source: Some(ObjectKey::new(Kind::TrafficTarget, ns, &name)),
        callers: Callers::Identities(ids),
        ports,
        requests,
    })
}

/// The policy that always lets the control plane's identities in.
fn control_plane(mesh: &MeshConfig) -> AllowPolicy {
    AllowPolicy {
        name: CONTROL_PLANE_POLICY.into(),
        source: None,
        callers: Callers::IdentityPrefix(format!(
            "spiffe://{}/ns/{CONTROL_PLANE_NAMESPACE}/",
            mesh.trust_domain
        )),
        ports: Ports::All,
        requests: Requests::Any,
    }
}

/// The ports `targets` enforce on the passthrough: all of them, unless every target
/// names its port.
fn enforced_ports(targets: &[&TrafficTarget]) -> Ports {
    let mut ports = Vec::new();
    for t in targets {
        match t
            .effective()
            .destination
            .port
            .as_ref()
            .and_then(crds::port_of)
        {
            Some(p) => ports.push(p),
            None => return Ports::All,
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ports::Only(ports)
}

/// Allow rules from `targets` (plus the control plane, and on the passthrough under a
/// default allow, everyone on the ports no target names).
fn rules(
    model: &Model,
    mesh: &MeshConfig,
    targets: &[&TrafficTarget],
    dest: &Destination<'_>,
) -> Rules {
    let mut policies = vec![control_plane(mesh)];
    let kept = within_limit(model, dest.namespace, dest.service_account);
    policies.extend(
        targets
            .iter()
            .filter(|t| {
                t.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| kept.contains(&n))
            })
            .filter_map(|t| policy_of(model, mesh, t, dest)),
    );
    let default = mesh.inbound_default_for(dest.namespace, dest.pod_default);
    if dest.port == PASSTHROUGH
        && default == InboundDefault::Allow
        && let Ports::Only(named) = enforced_ports(targets)
    {
        policies.push(AllowPolicy {
            name: DEFAULT_ALLOW.into(),
            source: None,
            callers: Callers::Anyone,
            ports: Ports::Except(named),
            requests: Requests::Any,
        });
    }
    Rules { policies }
}

/// The authorization of `dest`'s port.
pub fn inbound(model: &Model, mesh: &MeshConfig, dest: &Destination<'_>) -> InboundAuthz {
    let all = targets(model, dest);
    let enforced: Vec<&TrafficTarget> = all.iter().copied().filter(|t| !t.dry_run()).collect();
    let default = mesh.inbound_default_for(dest.namespace, dest.pod_default);
    let enforced_rules = if !enforced.is_empty() {
        Some(rules(model, mesh, &enforced, dest))
    } else if default == InboundDefault::Deny {
        Some(Rules {
            policies: vec![control_plane(mesh)],
        })
    } else {
        None
    };
    let shadow = (enforced.len() != all.len()).then(|| rules(model, mesh, &all, dest));
    InboundAuthz {
        enforced: enforced_rules,
        shadow,
    }
}

/// Why `t` allows nothing on some port although its references resolve: its rules
/// expand to too many request matches, or too many targets name its destination.
pub fn over_limits(model: &Model, t: &TrafficTarget) -> Option<String> {
    let spec = t.effective();
    let ns = t.metadata.namespace.as_deref().unwrap_or("default");
    let mut matches = Vec::new();
    for r in spec.rules.iter().filter(|r| r.kind == RULE_HTTP) {
        if let Some(g) = model.route_group(ns, &r.name) {
            group_matches(&g.spec.matches, &r.matches, &mut matches);
        }
    }
    if matches.len() > MAX_MATCHES_PER_TARGET {
        return Some(format!(
            "its rules expand to {} request matches, more than {MAX_MATCHES_PER_TARGET}: it allows nothing",
            matches.len()
        ));
    }
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let kept = within_limit(model, ns, &spec.destination.name).contains(&name);
    (!kept).then(|| {
        format!(
            "more than {MAX_TARGETS_PER_DESTINATION} TrafficTargets name service account {ns}/{}: this one (after them in name order) allows nothing",
            spec.destination.name
        )
    })
}

/// `xdsctl authz check`'s answer for `req` to `dest`: the enforced decision (the
/// default allow named when nothing is enforced), and the dry-run decision if any.
pub fn check(
    model: &Model,
    mesh: &MeshConfig,
    dest: &Destination<'_>,
    req: &Request<'_>,
) -> (Decision, Option<Decision>) {
    let authz = inbound(model, mesh, dest);
    let enforced = match &authz.enforced {
        Some(r) => r.decide(req),
        None => Decision {
            allowed: true,
            by: vec![DEFAULT_ALLOW.into()],
        },
    };
    (enforced, authz.shadow.as_ref().map(|r| r.decide(req)))
}

/// `xdsctl authz check`'s question, as the control plane's `rudder.authz.v1.Authz/Check`
/// carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// The caller's namespace.
    #[prost(string, tag = "1")]
    pub from_namespace: String,
    /// The caller's service account (empty: a plain-text caller).
    #[prost(string, tag = "2")]
    pub from_service_account: String,
    /// The Service called: its namespace.
    #[prost(string, tag = "3")]
    pub to_namespace: String,
    /// Its name.
    #[prost(string, tag = "4")]
    pub to_service: String,
    /// Its port (0: its default port).
    #[prost(uint32, tag = "5")]
    pub port: u32,
    /// The HTTP method (empty: GET on an HTTP port).
    #[prost(string, tag = "6")]
    pub method: String,
    /// The HTTP path (empty: `/`).
    #[prost(string, tag = "7")]
    pub path: String,
    /// Request headers, each `NAME:VALUE`.
    #[prost(string, repeated, tag = "8")]
    pub headers: Vec<String>,
}

/// One answer: for the pods of one service account behind the Service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckAnswer {
    /// The destination service account.
    #[prost(string, tag = "1")]
    pub service_account: String,
    /// The port on its pods.
    #[prost(uint32, tag = "2")]
    pub pod_port: u32,
    /// `http` or `tcp`: what was asked.
    #[prost(string, tag = "3")]
    pub protocol: String,
    /// Whether the request passes.
    #[prost(bool, tag = "4")]
    pub allowed: bool,
    /// What decided: the policies that allow it, or why it is denied.
    #[prost(string, repeated, tag = "5")]
    pub by: Vec<String>,
    /// With dry-run targets: whether it would pass with them enforced.
    #[prost(bool, optional, tag = "6")]
    pub dry_run_allowed: Option<bool>,
}

/// The answers, one per destination service account and port.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    /// The answers.
    #[prost(message, repeated, tag = "1")]
    pub answers: Vec<CheckAnswer>,
}

/// Why a denied request was denied, naming what decided.
fn denial(model: &Model, dest: &Destination<'_>) -> Vec<String> {
    let targets = targets(model, dest);
    let enforced: Vec<String> = targets
        .iter()
        .filter(|t| !t.dry_run())
        .map(|t| {
            format!(
                "TrafficTarget {}/{}",
                dest.namespace,
                t.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if enforced.is_empty() {
        vec![format!(
            "no TrafficTarget names {}/{}: the default is deny",
            dest.namespace, dest.service_account
        )]
    } else {
        vec![format!("not allowed by {}", enforced.join(", "))]
    }
}

/// Answers `req` from the model: for each service account behind the Service, whether
/// the request passes and what decided. Errors name what is missing.
pub fn check_service(
    model: &Model,
    mesh: &MeshConfig,
    req: &CheckRequest,
) -> Result<CheckResponse, String> {
    let svc = model
        .service(&req.to_namespace, &req.to_service)
        .ok_or_else(|| format!("no Service {}/{}", req.to_namespace, req.to_service))?;
    let port = if req.port == 0 {
        svc.default_port()
            .ok_or_else(|| format!("Service {}/{} has no ports", svc.namespace, svc.name))?
    } else {
        u16::try_from(req.port).map_err(|_| format!("{} is not a port", req.port))?
    };
    let sp = svc
        .ports
        .iter()
        .find(|p| p.port == port)
        .ok_or_else(|| format!("Service {}/{} has no port {port}", svc.namespace, svc.name))?;
    let caller = (!req.from_service_account.is_empty()).then(|| {
        spiffe_id(
            &mesh.trust_domain,
            &req.from_namespace,
            &req.from_service_account,
        )
    });
    let method = if req.method.is_empty() {
        "GET"
    } else {
        &req.method
    };
    let path = if req.path.is_empty() { "/" } else { &req.path };
    // As a proxy deciding on paths normalizes them first (see InboundAuthz::matches_paths).
    let path = normalize_path(path).ok_or_else(|| format!("{path:?} is not a request path"))?;
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .ok_or_else(|| format!("header {h:?} is not NAME:VALUE"))
        })
        .collect::<Result<_, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    let mut answers = Vec::new();
    for pod in model
        .pods_selected_by(svc)
        .filter(|p| p.in_mesh && !p.finished)
    {
        let target = match &sp.target {
            crate::model::TargetPort::Number(n) => *n,
            crate::model::TargetPort::Named(n) => match pod.container_ports.get(n) {
                Some(p) => *p,
                None => continue,
            },
        };
        if !seen.insert((pod.service_account.clone(), target, pod.inbound_default)) {
            continue;
        }
        let dest = Destination::of(pod, target, sp.protocol);
        let http = (sp.protocol != Protocol::Tcp).then_some((method, path.as_str()));
        let request = Request {
            caller: caller.as_deref(),
            http,
            headers: &headers,
            port: target,
        };
        let (now, dry) = check(model, mesh, &dest, &request);
        let strict = pod.mtls_mode.unwrap_or(mesh.mtls) == MtlsMode::Strict;
        let (allowed, by) = if caller.is_none() && strict {
            (
                false,
                vec!["STRICT mTLS: plain text is refused before authorization".into()],
            )
        } else if now.allowed {
            (true, now.by)
        } else {
            (false, denial(model, &dest))
        };
        answers.push(CheckAnswer {
            service_account: pod.service_account.clone(),
            pod_port: u32::from(target),
            protocol: if http.is_some() { "http" } else { "tcp" }.into(),
            allowed,
            by,
            dry_run_allowed: dry.map(|d| d.allowed),
        });
    }
    if answers.is_empty() {
        return Err(format!(
            "Service {}/{} selects no pod in the mesh",
            svc.namespace, svc.name
        ));
    }
    Ok(CheckResponse { answers })
}
