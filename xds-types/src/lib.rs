//! Rudder's xDS vocabulary, shared by the translator, the server, `xdsctl` and the
//! conformance proxy: the resource types Rudder serves ([`XdsType`]), one table of facts
//! about each ([`TypeFacts`]), storage with one slot per type ([`PerType`]), and the
//! names Rudder gives the resources every sidecar shares ([`names`]), and the node
//! metadata keys Rudder's CSDS answers carry ([`csds`]).
//!
//! Nothing here knows protobuf, tokio or the mesh model: a type fact is stated once, in
//! [`FACTS`], and everything else reads it.
//!
//! Adding an xDS type: add the variant (its place in the enum is its push order), its
//! row in [`FACTS`] and raise the array lengths; the compiler then names every `match`
//! that must learn it, and `facts_agree_with_the_enum` fails until the row is right.
//!
//! Modules: `kind` (the types and their facts), `per_type` (a map over them), [`names`].
//! This file only names them.

pub mod csds;
mod kind;
pub mod names;
mod per_type;

pub use kind::{FACTS, TypeFacts, XdsType};
pub use per_type::PerType;
