//! What the translator emits: resources ([`Resource`], its message [`Body`]), and what it
//! had to say about its input ([`Diagnostic`]), together an [`Output`].

use std::fmt;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use xds_types::XdsType;

use crate::model;

/// The message of one emitted resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A Cluster.
    Cluster(Box<Cluster>),
    /// A ClusterLoadAssignment.
    Endpoint(Box<ClusterLoadAssignment>),
    /// A Listener.
    Listener(Box<Listener>),
    /// A RouteConfiguration.
    Route(Box<RouteConfiguration>),
    /// A VirtualHost served apart from its RouteConfiguration (VHDS).
    VirtualHost(Box<envoy_types::pb::envoy::config::route::v3::VirtualHost>),
    /// An SDS Secret.
    Secret(Box<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>),
}

impl Body {
    /// Encodes the message as an `Any`.
    pub fn to_any(&self) -> Any {
        fn pack<T: Message + Name>(m: &T) -> Any {
            Any {
                type_url: T::type_url(),
                value: m.encode_to_vec(),
            }
        }
        match self {
            Body::Cluster(m) => pack(m.as_ref()),
            Body::Endpoint(m) => pack(m.as_ref()),
            Body::Listener(m) => pack(m.as_ref()),
            Body::Route(m) => pack(m.as_ref()),
            Body::VirtualHost(m) => pack(m.as_ref()),
            Body::Secret(m) => pack(m.as_ref()),
        }
    }
}

/// One emitted resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its type.
    pub kind: XdsType,
    /// Its name.
    pub name: String,
    /// Names of the resources (of type `kind.refers_to()`) it points at.
    pub refs: Vec<String>,
    /// The objects it was made from (`Service default/web`, `TrafficSplit ...`), sorted,
    /// so a proxy's rejection can be traced back to them.
    pub sources: Vec<model::ObjectKey>,
    /// The message.
    pub body: Body,
}

/// Something the translator skipped or worked around, naming the object and field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The object, e.g. `Service default/reviews`.
    pub object: String,
    /// The field path.
    pub field: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// Resources plus what the translator had to say about the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Emitted resources.
    pub resources: Vec<Resource>,
    /// Diagnostics, in a stable order.
    pub diagnostics: Vec<Diagnostic>,
}
