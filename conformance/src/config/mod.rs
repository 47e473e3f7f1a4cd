//! The proxy's own configuration: plain, validated values converted from xDS resources
//! (by `convert`), held in an immutable [`Snapshot`] that the data path reads. Nothing
//! here knows protobuf, sockets or tokio; every type is what the data path needs and
//! nothing it ignores.
//!
//! A [`Snapshot`] keeps one copy-on-write map per resource type, so a change of one
//! type (endpoints, say) shares every other map with the previous snapshot, and a
//! request that loaded a snapshot keeps using it to the end.
//!
//! Listeners and what they hold compare by value (`PartialEq`; a compiled pattern by its
//! source): the listener manager drains only the connections whose configuration an
//! update actually changed, so a resend of the same resource drains nothing.

pub mod cluster;
pub mod listener;
pub mod matcher;
pub mod rbac;
pub mod route;
pub mod secret;
mod snapshot;

pub use snapshot::{Snapshot, TypeMap};
