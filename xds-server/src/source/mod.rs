//! Sources feed the one model. Today: the manifest directory. The Kubernetes watch
//! will write through the same [`crate::cache::Cache::update`].

pub mod kube;
pub mod manifest;
