//! The mesh's view of the Kubernetes objects it serves: [`MeshService`] with its
//! [`ServicePort`]s ([`Protocol`], [`TargetPort`]) and [`UpstreamTls`] choice,
//! [`Slice`] with its [`SliceEndpoint`]s, [`MeshPod`], the annotations that only they
//! read, and which Services a view or a proxy's egress takes in.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::scope::{Egress, Export, ViewKey};

/// How traffic on a port is spoken, from `appProtocol` or the port-name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (also the default for ports that say nothing).
    Http,
    /// HTTP/2 in clear text (`http2`, `h2c`, `kubernetes.io/h2c`).
    Http2,
    /// gRPC: HTTP/2 with streams that may outlive any route timeout.
    Grpc,
    /// Opaque TCP (`tcp`, `tcp-*`).
    Tcp,
}

impl Protocol {
    /// Whether the upstream connection must speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// The port a Service port forwards to on its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// The name of a container port.
    Named(String),
}

/// One port of a mesh service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (empty when the Service has a single unnamed port).
    pub name: String,
    /// The port clients call.
    pub port: u16,
    /// The port on the pods.
    pub target: TargetPort,
    /// How the port speaks.
    pub protocol: Protocol,
}

/// A Service as the mesh sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshService {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The cluster IP, if it has one.
    pub cluster_ip: Option<IpAddr>,
    /// Ports, in manifest order.
    pub ports: Vec<ServicePort>,
    /// The pod selector; `None` for a Service without a selector.
    pub selector: Option<BTreeMap<String, String>>,
    /// The client namespaces that may reach it (`rudder.dev/export-to`).
    pub export: Export,
    /// For `type: ExternalName`: the DNS name it stands for (outside the mesh: reached by
    /// DNS, without mesh mTLS).
    pub external_name: Option<String>,
    /// `spec.clusterIP: None`: clients may also call each pod by its own address.
    pub headless: bool,
    /// Whether connections to its endpoints use mesh mTLS (`rudder.dev/upstream-tls`).
    pub upstream_tls: UpstreamTls,
}

/// Service annotation that chooses mTLS for connections to its endpoints.
pub const UPSTREAM_TLS_ANNOTATION: &str = "rudder.dev/upstream-tls";

/// Pod annotation; `"false"` says the pod runs without a sidecar (outside the mesh).
pub const INJECT_ANNOTATION: &str = "rudder.dev/inject";

/// How a sidecar connects to a Service's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamTls {
    /// Per endpoint: mesh mTLS to pods with a sidecar (and to endpoints whose pod is not
    /// known yet), plain connections to everything else, e.g. a database VM listed in a
    /// hand-made EndpointSlice.
    #[default]
    Auto,
    /// Mesh mTLS to every endpoint.
    Mesh,
    /// Plain connections to every endpoint.
    Plain,
}

impl UpstreamTls {
    /// Parses `auto` / `mesh` / `plain`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(UpstreamTls::Auto),
            "mesh" => Some(UpstreamTls::Mesh),
            "plain" => Some(UpstreamTls::Plain),
            _ => None,
        }
    }
}

impl MeshService {
    /// `NAME.NS.svc.cluster.local`
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// The port a request without `:PORT` goes to: 80 when the Service has it, else its
    /// first port.
    pub fn default_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.port == 80)
            .or(self.ports.first())
            .map(|p| p.port)
    }

    /// Whether `port` is an HTTP port of a Service with endpoints: not an ExternalName
    /// Service (resolved by DNS) and not a TCP port. Clients that take endpoints over EDS
    /// and speak HTTP only (proxyless gRPC) can call nothing else.
    pub fn http_with_endpoints(&self, port: &ServicePort) -> bool {
        self.external_name.is_none() && port.protocol != Protocol::Tcp
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// `conditions.ready` (unset counts as ready).
    pub ready: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The zone, if known.
    pub zone: Option<String>,
    /// The pod behind the endpoint, if the slice says.
    pub pod: Option<String>,
    /// `hostname` (StatefulSet pods behind a headless Service): the pod is also called
    /// `HOSTNAME.SERVICE.NS.svc.cluster.local`.
    pub hostname: Option<String>,
}

/// An EndpointSlice as the mesh sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The Service the slice belongs to (`kubernetes.io/service-name`).
    pub service: String,
    /// The slice's ports: (name, port number).
    pub ports: Vec<(String, u16)>,
    /// Its endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// A Pod as the mesh sees it: its identity and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.podIP`, once assigned.
    pub ip: Option<IpAddr>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The workload identity (`default` when unset).
    pub service_account: String,
    /// Named container ports.
    pub container_ports: BTreeMap<String, u16>,
    /// Per-workload mTLS override (`rudder.dev/mtls-mode` annotation).
    pub mtls_mode: Option<crate::mesh::MtlsMode>,
    /// What its ports allow without a TrafficTarget, if the pod says
    /// (`rudder.dev/default-inbound-policy`).
    pub inbound_default: Option<crate::mesh::InboundDefault>,
    /// The Services its proxy needs (`rudder.dev/egress`).
    pub egress: Egress,
    /// Whether it runs a sidecar (false when annotated `rudder.dev/inject: "false"`).
    pub in_mesh: bool,
    /// It has finished (`status.phase` Succeeded or Failed, as completed Jobs and evicted
    /// pods stay until they are collected): it runs nothing, so it vouches for no
    /// identity.
    pub finished: bool,
}

impl Egress {
    /// Whether the proxy needs `svc`.
    pub fn wants(&self, svc: &MeshService) -> bool {
        match self {
            Egress::All => true,
            Egress::Only(rules) => rules.iter().any(|(ns, name)| {
                (ns == "*" || *ns == svc.namespace) && (name == "*" || *name == svc.name)
            }),
        }
    }
}

impl ViewKey {
    /// Whether proxies of this view are sent `svc`.
    pub fn sees(&self, svc: &MeshService) -> bool {
        svc.export.allows(&self.namespace) && self.egress.wants(svc)
    }
}
