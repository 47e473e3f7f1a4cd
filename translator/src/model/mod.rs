//! The indexed mesh model: the one place every source (manifest directory, later the
//! Kubernetes watch) writes to, and the only thing the translator reads.
//!
//! ```text
//!   Service ──selects──▶ Pod (ip, labels, service account, container ports)
//!      │
//!      └──kubernetes.io/service-name◀── EndpointSlice (ready endpoints, zone)
//! ```
//!
//! Objects enter through [`Model::apply`], which validates them first: an invalid object
//! is refused with an error naming the object and field, and the previous (last good)
//! version of that object stays in the model. [`Model::delete`] removes an object.

mod convert;
mod index;
pub(crate) use convert::NameRule;
mod parse;
mod scope;

pub use crds::{GRPCRoute, HTTPRoute, HTTPRouteGroup, RetryPolicy, TrafficSplit};
pub use parse::{MAX_MANIFEST_BYTES, ManifestError, ParsedManifest, parse_manifest};
pub use scope::{EGRESS_ANNOTATION, EXPORT_ANNOTATION, Egress, Export, ViewKey};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

pub use k8s_openapi::api::core::v1::{Pod, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The Kubernetes kinds the model understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1/Service`
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`
    EndpointSlice,
    /// `v1/Pod`
    Pod,
    /// `split.smi-spec.io/v1alpha4/TrafficSplit`
    TrafficSplit,
    /// `policy.rudder.dev/v1alpha1/RetryPolicy`
    RetryPolicy,
    /// `specs.smi-spec.io/v1alpha4/HTTPRouteGroup`
    HTTPRouteGroup,
    /// `gateway.networking.k8s.io/v1/HTTPRoute`
    HTTPRoute,
    /// `gateway.networking.k8s.io/v1/GRPCRoute`
    GRPCRoute,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::TrafficSplit,
        Kind::RetryPolicy,
        Kind::HTTPRouteGroup,
        Kind::HTTPRoute,
        Kind::GRPCRoute,
    ];

    /// Whether it is a Gateway API route.
    pub fn is_route(self) -> bool {
        matches!(self, Kind::HTTPRoute | Kind::GRPCRoute)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::RetryPolicy => "RetryPolicy",
            Kind::HTTPRouteGroup => "HTTPRouteGroup",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
        })
    }
}

/// Objects left out of translation (ones a proxy rejected config from).
pub type Excluded = BTreeSet<ObjectKey>;

/// Identifies one object: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The object's kind.
    pub kind: Kind,
    /// The object's namespace (`default` when the manifest leaves it out).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `kind` `namespace`/`name`.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Whether the object is a policy whose contribution to a resource can be left out
    /// while the rest still serves: a TrafficSplit (with the HTTPRouteGroups it uses:
    /// its revision covers theirs), a RetryPolicy or a Gateway API route.
    pub fn is_policy(&self) -> bool {
        matches!(
            self.kind,
            Kind::TrafficSplit | Kind::RetryPolicy | Kind::HTTPRoute | Kind::GRPCRoute
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A Kubernetes object as a source hands it to the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A TrafficSplit.
    TrafficSplit(Box<TrafficSplit>),
    /// A RetryPolicy.
    RetryPolicy(Box<RetryPolicy>),
    /// An HTTPRouteGroup.
    HTTPRouteGroup(Box<HTTPRouteGroup>),
    /// An HTTPRoute.
    HTTPRoute(Box<HTTPRoute>),
    /// A GRPCRoute.
    GRPCRoute(Box<GRPCRoute>),
}

impl Object {
    /// The object's key; a missing namespace counts as `default`.
    pub fn key(&self) -> ObjectKey {
        let (kind, meta) = match self {
            Object::Service(o) => (Kind::Service, &o.metadata),
            Object::EndpointSlice(o) => (Kind::EndpointSlice, &o.metadata),
            Object::Pod(o) => (Kind::Pod, &o.metadata),
            Object::TrafficSplit(o) => (Kind::TrafficSplit, &o.metadata),
            Object::RetryPolicy(o) => (Kind::RetryPolicy, &o.metadata),
            Object::HTTPRouteGroup(o) => (Kind::HTTPRouteGroup, &o.metadata),
            Object::HTTPRoute(o) => (Kind::HTTPRoute, &o.metadata),
            Object::GRPCRoute(o) => (Kind::GRPCRoute, &o.metadata),
        };
        ObjectKey {
            kind,
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// An object the model refused, with the field that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct ModelError {
    /// The object, e.g. `Service default/reviews`.
    pub object: String,
    /// The field path, e.g. `spec.ports[1].port`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Whether the field is valid but asks for something Rudder does not implement.
    pub unsupported: bool,
}

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
    /// The Services its proxy needs (`rudder.dev/egress`).
    pub egress: Egress,
    /// Whether it runs a sidecar (false when annotated `rudder.dev/inject: "false"`).
    pub in_mesh: bool,
    /// It has finished (`status.phase` Succeeded or Failed, as completed Jobs and evicted
    /// pods stay until they are collected): it runs nothing, so it vouches for no
    /// identity.
    pub finished: bool,
}

/// (namespace, name).
pub type NsName = (String, String);

/// The indexed model. Ordered maps keep translation output deterministic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    services: BTreeMap<NsName, MeshService>,
    slices: BTreeMap<NsName, Slice>,
    pods: BTreeMap<NsName, MeshPod>,
    splits: BTreeMap<NsName, TrafficSplit>,
    retry_policies: BTreeMap<NsName, RetryPolicy>,
    route_groups: BTreeMap<NsName, HTTPRouteGroup>,
    http_routes: BTreeMap<NsName, HTTPRoute>,
    grpc_routes: BTreeMap<NsName, GRPCRoute>,
    /// Slices by Service, pods by label.
    index: index::Indexes,
    /// Revision of each object: a number that changes whenever its contents do.
    revs: BTreeMap<ObjectKey, u64>,
    last_rev: u64,
    /// Objects whose revision changed or that were deleted since the last
    /// [`Model::take_changes`].
    changed: BTreeSet<ObjectKey>,
}

/// Revision bookkeeping shared by every kind.
struct Revs<'a> {
    revs: &'a mut BTreeMap<ObjectKey, u64>,
    last: &'a mut u64,
    changed: &'a mut BTreeSet<ObjectKey>,
}

impl Revs<'_> {
    fn bump(&mut self, key: ObjectKey) {
        *self.last += 1;
        self.revs.insert(key.clone(), *self.last);
        self.changed.insert(key);
    }
}

/// Stores `value` under `key`, and gives the object a new revision if it changed.
fn store<T: PartialEq>(
    map: &mut BTreeMap<NsName, T>,
    key: NsName,
    value: T,
    kind: Kind,
    revs: &mut Revs<'_>,
) {
    if map.get(&key) == Some(&value) {
        return;
    }
    revs.bump(ObjectKey::new(kind, &key.0, &key.1));
    map.insert(key, value);
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates `object` and puts it into the model, replacing an older version.
    /// On error the model is unchanged: the last good version keeps serving.
    pub fn apply(&mut self, object: &Object) -> Result<(), ModelError> {
        let mut revs = Revs {
            revs: &mut self.revs,
            last: &mut self.last_rev,
            changed: &mut self.changed,
        };
        let revs = &mut revs;
        match object {
            Object::Service(s) => {
                let svc = convert::service(s)?;
                let key = (svc.namespace.clone(), svc.name.clone());
                store(&mut self.services, key, svc, Kind::Service, revs);
            }
            Object::EndpointSlice(s) => {
                let slice = convert::slice(s)?;
                let key = (slice.namespace.clone(), slice.name.clone());
                if let Some(old) = self.slices.get(&key) {
                    self.index.remove_slice(old);
                }
                self.index.add_slice(&slice);
                store(&mut self.slices, key, slice, Kind::EndpointSlice, revs);
            }
            Object::Pod(p) => {
                let pod = convert::pod(p)?;
                let key = (pod.namespace.clone(), pod.name.clone());
                if let Some(old) = self.pods.get(&key) {
                    self.index.remove_pod(old);
                }
                self.index.add_pod(&pod);
                store(&mut self.pods, key, pod, Kind::Pod, revs);
            }
            Object::TrafficSplit(t) => {
                let key = convert::traffic_split(t)?;
                let value = t.as_ref().clone();
                store(&mut self.splits, key, value, Kind::TrafficSplit, revs);
            }
            Object::RetryPolicy(r) => {
                let key = convert::retry_policy(r)?;
                let value = r.as_ref().clone();
                store(
                    &mut self.retry_policies,
                    key,
                    value,
                    Kind::RetryPolicy,
                    revs,
                );
            }
            Object::HTTPRouteGroup(g) => {
                let key = convert::route_group(g)?;
                let value = g.as_ref().clone();
                let changed = self.route_groups.get(&key) != Some(&value);
                store(
                    &mut self.route_groups,
                    key.clone(),
                    value,
                    Kind::HTTPRouteGroup,
                    revs,
                );
                if changed {
                    self.touch_splits_using(&key);
                }
            }
            Object::HTTPRoute(r) => {
                let key = convert::http_route(r)?;
                let value = r.as_ref().clone();
                store(&mut self.http_routes, key, value, Kind::HTTPRoute, revs);
            }
            Object::GRPCRoute(r) => {
                let key = convert::grpc_route(r)?;
                let value = r.as_ref().clone();
                store(&mut self.grpc_routes, key, value, Kind::GRPCRoute, revs);
            }
        }
        Ok(())
    }

    /// A split's revision covers the HTTPRouteGroups it uses: a change to one is a
    /// change to every split that references it.
    fn touch_splits_using(&mut self, (ns, group): &NsName) {
        let users: Vec<NsName> = self
            .splits
            .iter()
            .filter(|((sns, _), ts)| sns == ns && ts.spec.matches.iter().any(|m| m.name == *group))
            .map(|(k, _)| k.clone())
            .collect();
        for (sns, name) in users {
            self.last_rev += 1;
            self.revs.insert(
                ObjectKey::new(Kind::TrafficSplit, &sns, &name),
                self.last_rev,
            );
        }
    }

    /// The objects that changed (or were deleted) since the last call, for an
    /// incremental build.
    pub fn take_changes(&mut self) -> BTreeSet<ObjectKey> {
        std::mem::take(&mut self.changed)
    }

    /// The object's revision: it changes whenever the object's contents do.
    pub fn rev(&self, key: &ObjectKey) -> Option<u64> {
        self.revs.get(key).copied()
    }

    /// Checks `object` without changing the model.
    pub fn validate(object: &Object) -> Result<(), ModelError> {
        match object {
            Object::Service(s) => convert::service(s).map(drop),
            Object::EndpointSlice(s) => convert::slice(s).map(drop),
            Object::Pod(p) => convert::pod(p).map(drop),
            Object::TrafficSplit(t) => convert::traffic_split(t).map(drop),
            Object::RetryPolicy(r) => convert::retry_policy(r).map(drop),
            Object::HTTPRouteGroup(g) => convert::route_group(g).map(drop),
            Object::HTTPRoute(r) => convert::http_route(r).map(drop),
            Object::GRPCRoute(r) => convert::grpc_route(r).map(drop),
        }
    }

    /// Removes an object; returns whether it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> bool {
        if self.revs.remove(key).is_some() {
            self.changed.insert(key.clone());
        }
        let k = (key.namespace.clone(), key.name.clone());
        if key.kind == Kind::HTTPRouteGroup && self.route_groups.contains_key(&k) {
            self.touch_splits_using(&k);
        }
        match key.kind {
            Kind::Service => self.services.remove(&k).is_some(),
            Kind::EndpointSlice => self
                .slices
                .remove(&k)
                .inspect(|old| self.index.remove_slice(old))
                .is_some(),
            Kind::Pod => self
                .pods
                .remove(&k)
                .inspect(|old| self.index.remove_pod(old))
                .is_some(),
            Kind::TrafficSplit => self.splits.remove(&k).is_some(),
            Kind::RetryPolicy => self.retry_policies.remove(&k).is_some(),
            Kind::HTTPRouteGroup => self.route_groups.remove(&k).is_some(),
            Kind::HTTPRoute => self.http_routes.remove(&k).is_some(),
            Kind::GRPCRoute => self.grpc_routes.remove(&k).is_some(),
        }
    }

    /// Keys of every object of `kind`, ordered.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        let key = |(ns, name): &NsName| ObjectKey {
            kind,
            namespace: ns.clone(),
            name: name.clone(),
        };
        match kind {
            Kind::Service => self.services.keys().map(key).collect(),
            Kind::EndpointSlice => self.slices.keys().map(key).collect(),
            Kind::Pod => self.pods.keys().map(key).collect(),
            Kind::TrafficSplit => self.splits.keys().map(key).collect(),
            Kind::RetryPolicy => self.retry_policies.keys().map(key).collect(),
            Kind::HTTPRouteGroup => self.route_groups.keys().map(key).collect(),
            Kind::HTTPRoute => self.http_routes.keys().map(key).collect(),
            Kind::GRPCRoute => self.grpc_routes.keys().map(key).collect(),
        }
    }

    /// One service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&MeshService> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every TrafficSplit, ordered by namespace and name.
    pub fn traffic_splits(&self) -> impl Iterator<Item = &TrafficSplit> {
        self.splits.values()
    }

    /// One HTTPRouteGroup.
    pub fn route_group(&self, namespace: &str, name: &str) -> Option<&HTTPRouteGroup> {
        self.route_groups
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every HTTPRoute, ordered by namespace and name.
    pub fn http_routes(&self) -> impl Iterator<Item = &HTTPRoute> {
        self.http_routes.values()
    }

    /// Every GRPCRoute, ordered by namespace and name.
    pub fn grpc_routes(&self) -> impl Iterator<Item = &GRPCRoute> {
        self.grpc_routes.values()
    }

    /// One RetryPolicy.
    pub fn retry_policy(&self, namespace: &str, name: &str) -> Option<&RetryPolicy> {
        self.retry_policies
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every RetryPolicy, ordered by namespace and name.
    pub fn retry_policies(&self) -> impl Iterator<Item = &RetryPolicy> {
        self.retry_policies.values()
    }

    /// Every service, ordered by namespace and name.
    pub fn services(&self) -> impl Iterator<Item = &MeshService> {
        self.services.values()
    }

    /// The services of one namespace, ordered by name.
    pub fn services_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a MeshService> {
        self.services
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, s)| s)
    }

    /// Every pod, ordered by namespace and name.
    pub fn pods(&self) -> impl Iterator<Item = &MeshPod> {
        self.pods.values()
    }

    /// The pods of one namespace, ordered by name.
    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a MeshPod> {
        self.pods
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, p)| p)
    }

    /// Every EndpointSlice, ordered by namespace and name.
    pub fn slices(&self) -> impl Iterator<Item = &Slice> {
        self.slices.values()
    }

    /// The Service an EndpointSlice belongs to.
    pub fn slice_service(&self, namespace: &str, name: &str) -> Option<String> {
        self.slices
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.service.clone())
    }

    /// One pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&MeshPod> {
        self.pods.get(&(namespace.to_string(), name.to_string()))
    }

    /// The slices of one service, ordered by slice name.
    pub fn slices_of<'a>(&'a self, svc: &'a MeshService) -> impl Iterator<Item = &'a Slice> {
        self.index
            .slices_of(&svc.namespace, &svc.name)
            .into_iter()
            .flatten()
            .filter_map(move |name| self.slices.get(&(svc.namespace.clone(), name.clone())))
    }

    /// The pods `svc` selects, ordered by name (none without a selector or with an empty
    /// one).
    pub fn pods_selected_by<'a>(
        &'a self,
        svc: &'a MeshService,
    ) -> impl Iterator<Item = &'a MeshPod> {
        self.index
            .candidates(svc)
            .into_iter()
            .flatten()
            .filter_map(move |name| self.pods.get(&(svc.namespace.clone(), name.clone())))
            .filter(move |p| {
                svc.selector
                    .as_ref()
                    .is_some_and(|sel| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            })
    }

    /// Whether connections to `ep` (an endpoint of a slice in `namespace`) get mesh
    /// mTLS under [`UpstreamTls::Auto`]: yes for a pod with a sidecar, and for a pod the
    /// slice names that is not known yet (fail closed); no for an address that is no
    /// known pod's, or a pod without a sidecar.
    pub fn endpoint_in_mesh(&self, namespace: &str, ep: &SliceEndpoint) -> bool {
        match &ep.pod {
            Some(name) => self.pod(namespace, name).is_none_or(|p| p.in_mesh),
            None => self
                .index
                .pods_at(ep.ip)
                .any(|(ns, name)| self.pod(ns, name).is_some_and(|p| p.in_mesh)),
        }
    }

    /// The pod behind `ep` (an endpoint of a slice in `namespace`): the one it names, or
    /// the one at its address.
    pub fn endpoint_pod(&self, namespace: &str, ep: &SliceEndpoint) -> Option<&MeshPod> {
        match &ep.pod {
            Some(name) => self.pod(namespace, name),
            None => self
                .index
                .pods_at(ep.ip)
                .find_map(|(ns, name)| self.pod(ns, name)),
        }
    }

    /// The Services with an endpoint that is `namespace/pod` by name or by `ip`: their
    /// endpoints' mTLS choice depends on the pod.
    pub fn services_with_endpoint(
        &self,
        namespace: &str,
        pod: &str,
        ip: Option<IpAddr>,
    ) -> BTreeSet<NsName> {
        self.index
            .slices_naming(namespace, pod, ip)
            .filter_map(|(ns, slice)| {
                self.slices
                    .get(&(ns.to_string(), slice.to_string()))
                    .map(|s| (s.namespace.clone(), s.service.clone()))
            })
            .collect()
    }

    /// The services whose selector matches `pod`.
    pub fn services_selecting<'a>(
        &'a self,
        pod: &'a MeshPod,
    ) -> impl Iterator<Item = &'a MeshService> {
        self.services_in(&pod.namespace).filter(move |s| {
            s.namespace == pod.namespace
                && s.selector.as_ref().is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                })
        })
    }
}

#[cfg(test)]
mod tests;
