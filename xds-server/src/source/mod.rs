//! Sources feed the one model: the manifest directory here, the Kubernetes watch in
//! [`crate::k8s::watch`]; both write through the store.

pub mod manifest;
