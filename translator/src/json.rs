//! proto3 JSON for any xDS message, `Any` payloads expanded, using the descriptor set that
//! envoy-types ships. Golden tests and `xdsctl dump` read resources through this.

use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

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
        &SerializeOptions::new().stringify_64_bit_integers(false),
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
