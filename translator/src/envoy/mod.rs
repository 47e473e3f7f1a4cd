//! The Envoy emitter: the routing IR and the model rendered as the resources an Envoy
//! sidecar takes: Clusters ([`cluster`]), the outbound RouteConfiguration ([`route`]),
//! per-proxy Listeners ([`listener`], with [`intercept`] for pods whose traffic iptables
//! redirects, and the filters they share in [`filters`]), routing by a Service's or a
//! pod's own address ([`address`], with what every proxy holds for pod addresses in
//! [`pod_address`]) and mTLS ([`tls`]).

pub(crate) mod address;
pub(crate) mod cluster;
pub(crate) mod filters;
pub mod intercept;
pub(crate) mod listener;
pub(crate) mod pod_address;
pub(crate) mod profile;
pub(crate) mod route;
pub mod tls;

#[cfg(test)]
mod tests;
