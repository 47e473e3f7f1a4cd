//! The objects a source hands the model and how they are named: [`Kind`], [`ObjectKey`],
//! [`Object`], the (namespace, name) pair [`NsName`], and [`ModelError`], the refusal
//! of an invalid object.

use std::collections::BTreeSet;
use std::fmt;

use crds::{
    GRPCRoute, HTTPRoute, HTTPRouteGroup, RetryPolicy, TCPRoute, TrafficSplit, TrafficTarget,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::pod::PodObject;

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
    /// `access.smi-spec.io/v1alpha3/TrafficTarget`
    TrafficTarget,
    /// `specs.smi-spec.io/v1alpha4/TCPRoute`
    TCPRoute,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 10] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::TrafficSplit,
        Kind::RetryPolicy,
        Kind::HTTPRouteGroup,
        Kind::HTTPRoute,
        Kind::GRPCRoute,
        Kind::TrafficTarget,
        Kind::TCPRoute,
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
            Kind::TrafficTarget => "TrafficTarget",
            Kind::TCPRoute => "TCPRoute",
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
    /// its revision covers theirs), a RetryPolicy or a Gateway API route. Never a
    /// TrafficTarget: leaving one out would open what it closes.
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
    /// A Pod: what the model reads of it.
    Pod(Box<PodObject>),
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
    /// A TrafficTarget.
    TrafficTarget(Box<TrafficTarget>),
    /// A TCPRoute.
    TCPRoute(Box<TCPRoute>),
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
            Object::TrafficTarget(o) => (Kind::TrafficTarget, &o.metadata),
            Object::TCPRoute(o) => (Kind::TCPRoute, &o.metadata),
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

/// (namespace, name).
pub type NsName = (String, String);
