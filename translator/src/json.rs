//! proto3 JSON for any xDS message, `Any` payloads expanded. Golden tests and
//! `xdsctl dump` read resources through this.
//!
//! The descriptors come from the FileDescriptorSet that envoy-types ships, trimmed to the
//! packages Rudder emits and committed as [`DESCRIPTOR_FILE`], so the build needs nothing
//! from the cargo cache beyond compiling the crates (`examples/gen_descriptors.rs`
//! regenerates it; a test fails when it drifts from envoy-types).

use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// The committed descriptor set, relative to the translator crate.
pub const DESCRIPTOR_FILE: &str = "descriptors/xds.binpb";

static DESCRIPTORS: &[u8] = include_bytes!("../descriptors/xds.binpb");

/// Packages whose messages Rudder emits, directly or inside an `Any`. Their files and
/// everything those import are kept.
const PACKAGE_PREFIXES: &[&str] = &[
    "envoy.config.cluster.v3",
    "envoy.config.endpoint.v3",
    "envoy.config.listener.v3",
    "envoy.config.route.v3",
    "envoy.config.rbac.v3",
    "envoy.extensions.filters.",
    "envoy.extensions.transport_sockets.",
    "envoy.extensions.upstreams.",
    "envoy.extensions.load_balancing_policies.",
];

/// Trims envoy-types' full descriptor set to [`PACKAGE_PREFIXES`] and their imports.
pub fn trim_descriptors(full: &[u8]) -> Result<Vec<u8>, JsonError> {
    let pool = DescriptorPool::decode(full).map_err(|e| JsonError::Descriptors(e.to_string()))?;
    let mut keep = std::collections::BTreeSet::new();
    let mut todo: Vec<prost_reflect::FileDescriptor> = pool
        .files()
        .filter(|f| {
            PACKAGE_PREFIXES
                .iter()
                .any(|p| f.package_name().starts_with(p))
        })
        .collect();
    while let Some(f) = todo.pop() {
        if keep.insert(f.name().to_string()) {
            todo.extend(f.dependencies());
        }
    }
    let mut trimmed = DescriptorPool::new();
    trimmed
        .add_file_descriptor_protos(
            pool.file_descriptor_protos()
                .filter(|f| keep.contains(f.name()))
                .map(|f| prost_reflect::prost_types::FileDescriptorProto {
                    // Comments and spans are not needed to render JSON.
                    source_code_info: None,
                    ..f.clone()
                }),
        )
        .map_err(|e| JsonError::Descriptors(e.to_string()))?;
    Ok(trimmed.encode_to_vec())
}

/// Why a message could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The descriptor set is unreadable (a build problem).
    #[error("envoy descriptor set: {0}")]
    Descriptors(String),
    /// The type URL names no known message.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The bytes do not decode as that type.
    #[error("cannot decode {type_url}: {message}")]
    Decode {
        /// The type URL.
        type_url: String,
        /// The decoder's message.
        message: String,
    },
}

fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JsonError::Descriptors(e.clone()))
}

/// Renders an `Any` as proto3 JSON (with its `@type`), nested `Any`s expanded.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
    render(any, false)
}

/// [`any_to_json`] with the proto field names (`cluster_name`), as Envoy's admin
/// `/config_dump` writes them.
pub fn any_to_json_proto_names(any: &Any) -> Result<serde_json::Value, JsonError> {
    render(any, true)
}

fn render(any: &Any, proto_names: bool) -> Result<serde_json::Value, JsonError> {
    let pool = pool()?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| JsonError::UnknownType(any.type_url.clone()))?;
    let msg =
        DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| JsonError::Decode {
            type_url: any.type_url.clone(),
            message: e.to_string(),
        })?;
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(
        &mut ser,
        &SerializeOptions::new()
            .stringify_64_bit_integers(false)
            .use_proto_field_name(proto_names),
    )
    .map_err(|e| JsonError::Decode {
        type_url: any.type_url.clone(),
        message: e.to_string(),
    })?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&ser.into_inner()).map_err(|e| JsonError::Decode {
            type_url: any.type_url.clone(),
            message: e.to_string(),
        })?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "@type".into(),
            serde_json::Value::String(any.type_url.clone()),
        );
    }
    Ok(value)
}
