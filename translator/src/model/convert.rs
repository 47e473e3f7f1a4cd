//! Validation and conversion of Kubernetes objects into model types. Every error names
//! the object and the field path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crds::text::{clip, quote};

use super::names::NameRule;
use super::objects::{Kind, ModelError};
use super::pod::PodObject;
use super::scope::{EGRESS_ANNOTATION, EXPORT_ANNOTATION, Egress, Export};
use super::types::{
    INJECT_ANNOTATION, MeshPod, MeshService, Protocol, ServicePort, Slice, SliceEndpoint,
    TargetPort, UPSTREAM_TLS_ANNOTATION, UpstreamTls,
};
use crds::text::is_dns_label;

/// Pod annotation that overrides the mesh-wide mTLS mode for that workload.
pub(crate) const MTLS_ANNOTATION: &str = "rudder.dev/mtls-mode";

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

struct Ctx {
    object: String,
}

impl Ctx {
    fn new(kind: Kind, meta: &ObjectMeta) -> Self {
        // Names are not validated yet: keep the object's label short whatever they hold.
        let ns = clip(meta.namespace.as_deref().unwrap_or("default"), 63);
        let name = clip(meta.name.as_deref().unwrap_or("<unnamed>"), 253);
        Ctx {
            object: format!("{kind} {ns}/{name}"),
        }
    }

    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ModelError {
        ModelError {
            object: self.object.clone(),
            field: field.into(),
            message: crds::text::bound(message),
            unsupported: false,
        }
    }

    fn field_err(&self, e: crds::FieldError) -> ModelError {
        ModelError {
            unsupported: e.unsupported,
            ..self.err(e.field, e.message)
        }
    }
}

/// A label key (`[prefix/]name`) and value as Kubernetes validates them.
fn check_label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        NameRule::Subdomain
            .check(p)
            .map_err(|m| format!("key prefix: {m}"))?;
    }
    check_qualified_name(name).map_err(|m| format!("key: {m}"))?;
    if !value.is_empty() {
        check_qualified_name(value).map_err(|m| format!("value: {m}"))?;
    }
    Ok(())
}

/// A label name or value: at most 63 characters, alphanumerics, '-', '_' and '.',
/// starting and ending with an alphanumeric.
fn check_qualified_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} may hold only letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            quote(s)
        ))
    }
}

/// Every label of `labels` checked, the field named `field[KEY]`.
fn check_labels(
    ctx: &Ctx,
    field: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), ModelError> {
    for (k, v) in labels.into_iter().flatten() {
        check_label(k, v).map_err(|m| ctx.err(format!("{field}[{}]", quote(k)), m))?;
    }
    Ok(())
}

/// A container port name (IANA service name): at most 15 characters, lowercase
/// alphanumerics and '-', at least one letter, no '--', not starting or ending with '-'.
fn check_port_name(s: &str) -> Result<(), String> {
    if s.len() > 15 {
        return Err(format!(
            "{} is {} characters long; at most 15 are allowed",
            quote(s),
            s.len()
        ));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.contains("--")
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid port name (lowercase letters, digits and '-', with at least one letter)",
            quote(s)
        ))
    }
}

fn meta_names(
    ctx: &Ctx,
    meta: &ObjectMeta,
    rule: NameRule,
) -> Result<(String, String), ModelError> {
    let name = meta.name.clone().unwrap_or_default();
    rule.check(&name).map_err(|m| ctx.err("metadata.name", m))?;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    NameRule::Label
        .check(&namespace)
        .map_err(|m| ctx.err("metadata.namespace", m))?;
    Ok((namespace, name))
}

fn port_number(ctx: &Ctx, field: &str, value: i32) -> Result<u16, ModelError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ctx.err(field, format!("{value} is not a port number (1-65535)")))
}

/// The protocol of a port from `appProtocol`, else the port-name prefix (`http`,
/// `http2`, `h2c`, `grpc`, `tcp`, each alone or followed by `-suffix`). Ports that say
/// nothing are HTTP/1.1; the listener also accepts HTTP/2 from the app. TLS the app
/// speaks itself (`https`, `tls`: the sidecar cannot read it) and well-known non-HTTP
/// protocols are TCP, so an intercepted pod's call to, say, `kubernetes.default:443`
/// is carried as bytes, not fed to an HTTP codec.
pub(crate) fn protocol_of(app_protocol: Option<&str>, name: &str) -> Protocol {
    let from = |s: &str| match s.to_ascii_lowercase().as_str() {
        "http" => Some(Protocol::Http),
        "http2" | "h2c" | "kubernetes.io/h2c" => Some(Protocol::Http2),
        "grpc" | "grpc-web" => Some(Protocol::Grpc),
        "tcp" | "tls" | "https" | "mongo" | "mongodb" | "mysql" | "redis" | "postgres"
        | "postgresql" | "kafka" | "amqp" | "amqps" | "mqtt" | "nats" | "zookeeper"
        | "cassandra" | "memcached" | "ssh" => Some(Protocol::Tcp),
        _ => None,
    };
    app_protocol
        .and_then(from)
        .or_else(|| from(name.split('-').next().unwrap_or("")))
        .unwrap_or(Protocol::Http)
}

pub(crate) fn service(svc: &Service) -> Result<MeshService, ModelError> {
    let ctx = Ctx::new(Kind::Service, &svc.metadata);
    let (namespace, name) = meta_names(&ctx, &svc.metadata, NameRule::Label)?;
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| ctx.err("spec", "is required"))?;
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
            ctx.err(
                "spec.clusterIP",
                format!("{} is not an IP address", quote(ip)),
            )
        })?),
    };
    let raw_ports = spec.ports.as_deref().unwrap_or_default();
    let mut ports = Vec::with_capacity(raw_ports.len());
    let mut seen_numbers = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    for (i, p) in raw_ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let transport = p.protocol.as_deref().unwrap_or("TCP");
        if transport != "TCP" {
            // UDP and SCTP are valid Kubernetes but not proxied by the mesh.
            continue;
        }
        let port = port_number(&ctx, &field("port"), p.port)?;
        let pname = p.name.clone().unwrap_or_default();
        if raw_ports.len() > 1 && pname.is_empty() {
            return Err(ctx.err(
                field("name"),
                "is required when a Service has several ports",
            ));
        }
        if !pname.is_empty() {
            NameRule::Label
                .check(&pname)
                .map_err(|m| ctx.err(field("name"), format!("port name: {m}")))?;
        }
        if !seen_numbers.insert(port) {
            return Err(ctx.err(field("port"), format!("port {port} is listed twice")));
        }
        if !pname.is_empty() && !seen_names.insert(pname.clone()) {
            return Err(ctx.err(
                field("name"),
                format!("port name {} is listed twice", quote(&pname)),
            ));
        }
        let target = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(port_number(&ctx, &field("targetPort"), *n)?)
            }
            Some(IntOrString::String(s)) => match s.parse::<i32>() {
                Ok(n) => TargetPort::Number(port_number(&ctx, &field("targetPort"), n)?),
                Err(_) if is_dns_label(s) && s.len() <= 15 => TargetPort::Named(s.clone()),
                Err(_) => {
                    return Err(ctx.err(
                        field("targetPort"),
                        format!(
                            "{} is neither a port number nor a container port name",
                            quote(s)
                        ),
                    ));
                }
            },
        };
        ports.push(ServicePort {
            protocol: protocol_of(p.app_protocol.as_deref(), &pname),
            name: pname,
            port,
            target,
        });
    }
    let export = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_ANNOTATION))
    {
        None => Export::All,
        Some(v) => Export::parse(v, &namespace).map_err(|m| {
            ctx.err(
                format!("metadata.annotations[\"{}\"]", EXPORT_ANNOTATION),
                m,
            )
        })?,
    };
    let external_name = if spec.type_.as_deref() == Some("ExternalName") {
        let n = spec.external_name.as_deref().unwrap_or_default();
        let n = n.strip_suffix('.').unwrap_or(n);
        NameRule::Subdomain
            .check(n)
            .map_err(|m| ctx.err("spec.externalName", m))?;
        Some(n.to_string())
    } else {
        None
    };
    let upstream_tls = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(UPSTREAM_TLS_ANNOTATION))
    {
        None => UpstreamTls::Auto,
        Some(v) => UpstreamTls::parse(v).ok_or_else(|| {
            ctx.err(
                format!("metadata.annotations[\"{}\"]", UPSTREAM_TLS_ANNOTATION),
                format!("{} is not auto, mesh or plain", quote(v)),
            )
        })?,
    };
    Ok(MeshService {
        headless: spec.cluster_ip.as_deref() == Some("None"),
        upstream_tls,
        external_name,
        export,
        namespace,
        name,
        cluster_ip,
        ports,
        selector: {
            check_labels(&ctx, "spec.selector", spec.selector.as_ref())?;
            spec.selector.clone()
        },
    })
}

pub(crate) fn slice(es: &EndpointSlice) -> Result<Slice, ModelError> {
    let ctx = Ctx::new(Kind::EndpointSlice, &es.metadata);
    let (namespace, name) = meta_names(&ctx, &es.metadata, NameRule::Subdomain)?;
    let service = es
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or_else(|| {
            ctx.err(
                format!("metadata.labels[\"{SERVICE_NAME_LABEL}\"]"),
                "is required: it names the Service this slice belongs to",
            )
        })?;
    NameRule::Label
        .check(&service)
        .map_err(|m| ctx.err(format!("metadata.labels[\"{SERVICE_NAME_LABEL}\"]"), m))?;
    let mut ports = Vec::new();
    for (i, p) in es.ports.iter().flatten().enumerate() {
        if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
            continue;
        }
        let Some(n) = p.port else { continue };
        ports.push((
            p.name.clone().unwrap_or_default(),
            port_number(&ctx, &format!("ports[{i}].port"), n)?,
        ));
    }
    let mut endpoints = Vec::new();
    if es.address_type == "IPv4" || es.address_type == "IPv6" {
        for (i, ep) in es.endpoints.iter().flatten().enumerate() {
            let addr = ep.addresses.first().ok_or_else(|| {
                ctx.err(
                    format!("endpoints[{i}].addresses"),
                    "needs at least one address",
                )
            })?;
            let ip: IpAddr = addr.parse().map_err(|_| {
                ctx.err(
                    format!("endpoints[{i}].addresses[0]"),
                    format!(
                        "{} is not an {} address",
                        quote(addr),
                        quote(&es.address_type)
                    ),
                )
            })?;
            let cond = ep.conditions.as_ref();
            endpoints.push(SliceEndpoint {
                ip,
                ready: cond.and_then(|c| c.ready).unwrap_or(true),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                zone: ep.zone.clone(),
                pod: ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone()),
                hostname: match &ep.hostname {
                    None => None,
                    Some(h) => {
                        NameRule::Label
                            .check(h)
                            .map_err(|m| ctx.err(format!("endpoints[{i}].hostname"), m))?;
                        Some(h.clone())
                    }
                },
            });
        }
    } else if es.address_type != "FQDN" {
        return Err(ctx.err(
            "addressType",
            format!("{} is not one of IPv4, IPv6, FQDN", quote(&es.address_type)),
        ));
    }
    Ok(Slice {
        namespace,
        name,
        service,
        ports,
        endpoints,
    })
}

pub(crate) fn traffic_split(ts: &crds::TrafficSplit) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::TrafficSplit, &ts.metadata);
    let names = meta_names(&ctx, &ts.metadata, NameRule::Subdomain)?;
    ts.spec
        .validate()
        .map_err(|e| ctx.err(e.field, e.message))?;
    Ok(names)
}

pub(crate) fn route_group(g: &crds::HTTPRouteGroup) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::HTTPRouteGroup, &g.metadata);
    let names = meta_names(&ctx, &g.metadata, NameRule::Subdomain)?;
    g.spec.validate().map_err(|e| ctx.err(e.field, e.message))?;
    Ok(names)
}

pub(crate) fn http_route(r: &crds::HTTPRoute) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::HTTPRoute, &r.metadata);
    let names = meta_names(&ctx, &r.metadata, NameRule::Subdomain)?;
    r.spec.validate().map_err(|e| ctx.field_err(e))?;
    Ok(names)
}

pub(crate) fn grpc_route(r: &crds::GRPCRoute) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::GRPCRoute, &r.metadata);
    let names = meta_names(&ctx, &r.metadata, NameRule::Subdomain)?;
    r.spec.validate().map_err(|e| ctx.field_err(e))?;
    Ok(names)
}

pub(crate) fn traffic_target(t: &crds::TrafficTarget) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::TrafficTarget, &t.metadata);
    let names = meta_names(&ctx, &t.metadata, NameRule::Subdomain)?;
    t.validate().map_err(|e| ctx.field_err(e))?;
    // A target protects its own namespace's service accounts: one namespace cannot
    // open or close another's.
    let (prefix, _) = t.field_prefix();
    if let Some(ns) = t
        .effective()
        .destination
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty() && *ns != names.0)
    {
        return Err(ctx.err(
            format!("{prefix}destination.namespace"),
            format!(
                "{} is not the TrafficTarget's own namespace {}",
                quote(ns),
                quote(&names.0)
            ),
        ));
    }
    Ok(names)
}

/// What an invalid TrafficTarget still means on first sight (no good version to keep):
/// its destination is closed, allowing nothing through it, so an invalid target fails
/// closed rather than open (after a restart, say). None when even the destination cannot
/// be read as one of the target's own namespace's service accounts.
pub(crate) fn closed_target(
    t: &crds::TrafficTarget,
) -> Option<((String, String), crds::TrafficTarget)> {
    let ctx = Ctx::new(Kind::TrafficTarget, &t.metadata);
    let names = meta_names(&ctx, &t.metadata, NameRule::Subdomain).ok()?;
    let d = t.effective().destination.clone();
    let own = d
        .namespace
        .as_deref()
        .is_none_or(|ns| ns.is_empty() || *ns == names.0);
    if !own || !crds::text::is_dns_subdomain(&d.name) {
        return None;
    }
    let mut metadata = t.metadata.clone();
    // A dry run stays one (it closes nothing); an annotation that is not exactly
    // "true" may be what was invalid, and does not make it one.
    if let Some(a) = metadata.annotations.as_mut()
        && a.get(crds::DRY_RUN_ANNOTATION).is_some_and(|v| v != "true")
    {
        a.remove(crds::DRY_RUN_ANNOTATION);
    }
    let closed = crds::TrafficTarget {
        metadata,
        spec: Some(crds::TrafficTargetSpec {
            destination: crds::IdentitySubject {
                kind: crds::SERVICE_ACCOUNT.into(),
                name: d.name,
                namespace: None,
                // A port that cannot be read closes every port.
                port: d.port.filter(|p| crds::port_of(p).is_some()),
            },
            rules: Vec::new(),
            sources: Vec::new(),
        }),
        ..Default::default()
    };
    Some((names, closed))
}

pub(crate) fn tcp_route(r: &crds::TCPRoute) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::TCPRoute, &r.metadata);
    let names = meta_names(&ctx, &r.metadata, NameRule::Subdomain)?;
    r.spec.ports().map_err(|e| ctx.field_err(e))?;
    Ok(names)
}

pub(crate) fn retry_policy(rp: &crds::RetryPolicy) -> Result<(String, String), ModelError> {
    let ctx = Ctx::new(Kind::RetryPolicy, &rp.metadata);
    let names = meta_names(&ctx, &rp.metadata, NameRule::Subdomain)?;
    rp.spec
        .validate()
        .map_err(|e| ctx.err(e.field, e.message))?;
    Ok(names)
}

pub(crate) fn pod(pod: &PodObject) -> Result<MeshPod, ModelError> {
    let ctx = Ctx::new(Kind::Pod, &pod.metadata);
    let (namespace, name) = meta_names(&ctx, &pod.metadata, NameRule::Subdomain)?;
    let ip = match pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) {
        None | Some("") => None,
        Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
            ctx.err(
                "status.podIP",
                format!("{} is not an IP address", quote(ip)),
            )
        })?),
    };
    let spec = pod.spec.as_ref();
    let mut container_ports = BTreeMap::new();
    for (ci, c) in spec
        .and_then(|s| s.containers.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let field = format!("spec.containers[{ci}].ports[{pi}].containerPort");
            let n = port_number(&ctx, &field, p.container_port.unwrap_or_default())?;
            if let Some(pname) = &p.name {
                check_port_name(pname)
                    .map_err(|m| ctx.err(format!("spec.containers[{ci}].ports[{pi}].name"), m))?;
                container_ports.insert(pname.clone(), n);
            }
        }
    }
    let mtls_mode = match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MTLS_ANNOTATION))
    {
        None => None,
        Some(v) => Some(crate::mesh::MtlsMode::parse(v).ok_or_else(|| {
            ctx.err(
                format!("metadata.annotations[\"{MTLS_ANNOTATION}\"]"),
                format!("{} is not STRICT or PERMISSIVE", quote(v)),
            )
        })?),
    };
    let inbound_default = match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::mesh::DEFAULT_INBOUND_ANNOTATION))
    {
        None => None,
        Some(v) => Some(crate::mesh::InboundDefault::parse(v).ok_or_else(|| {
            ctx.err(
                format!(
                    "metadata.annotations[\"{}\"]",
                    crate::mesh::DEFAULT_INBOUND_ANNOTATION
                ),
                format!("{} is not allow or deny", quote(v)),
            )
        })?),
    };
    check_labels(&ctx, "metadata.labels", pod.metadata.labels.as_ref())?;
    let service_account = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    NameRule::Subdomain
        .check(&service_account)
        .map_err(|m| ctx.err("spec.serviceAccountName", m))?;
    let egress = match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EGRESS_ANNOTATION))
    {
        None => Egress::All,
        Some(v) => Egress::parse(v, &namespace).map_err(|m| {
            ctx.err(
                format!("metadata.annotations[\"{}\"]", EGRESS_ANNOTATION),
                m,
            )
        })?,
    };
    // Opted out by annotation or label (the injector honours both), or on the host's
    // network (never injected): no sidecar.
    let opt = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT_ANNOTATION))
        .or_else(|| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECT_ANNOTATION))
        })
        .map(String::as_str);
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let in_mesh = !host_network
        && match opt {
            None | Some("true") | Some("enabled") => true,
            Some("false") | Some("disabled") => false,
            Some(v) => {
                return Err(ctx.err(
                    format!("metadata.annotations[\"{}\"]", INJECT_ANNOTATION),
                    format!("{} is not \"true\" or \"false\"", quote(v)),
                ));
            }
        };
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    Ok(MeshPod {
        in_mesh,
        finished,
        egress,
        mtls_mode,
        inbound_default,
        namespace,
        name,
        ip,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        service_account,
        container_ports,
    })
}
