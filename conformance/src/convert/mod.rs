//! xDS protobuf to the proxy's own configuration. Each resource is checked strictly:
//! what Rudder emits is converted, anything else (a field the proxy does not implement,
//! a filter or typed config it does not know, a value out of range, a regex over the
//! limit) is refused with the field path, so the resource is NACKed by name.

use envoy_types::pb::google::protobuf::Any;
use xds_types::XdsType;

use crate::config::cluster::{Cluster, LoadAssignment};
use crate::config::listener::Listener;
use crate::config::route::RouteConfig;
use crate::config::secret::Secret;

/// A converted resource.
#[derive(Clone, Debug)]
pub enum Converted {
    /// LDS.
    Listener(Listener),
    /// RDS.
    Route(RouteConfig),
    /// CDS.
    Cluster(Cluster),
    /// EDS.
    Endpoints(LoadAssignment),
    /// SDS.
    Secret(Secret),
}

/// Why a resource was refused: the resource, the field path inside it, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {path}: {message}")]
pub struct ConvertError {
    /// The resource's name (or its type URL when the name is unknown).
    pub resource: String,
    /// The field path (`filter_chains[0].filters[0].typed_config`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Decodes and converts one resource of type `ty`: (its name, the converted value).
pub fn convert(ty: XdsType, any: &Any) -> Result<(String, Converted), ConvertError> {
    Err(ConvertError {
        resource: any.type_url.clone(),
        path: String::new(),
        message: format!("{ty:?} conversion is not built yet"),
    })
}
