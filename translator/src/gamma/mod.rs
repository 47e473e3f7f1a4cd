//! Gateway API routes for the mesh (GAMMA): HTTPRoutes and GRPCRoutes whose `parentRefs`
//! name a Service, resolved into the routing model of that Service's ports.
//!
//! - **Attachment.** A parentRef with `group: ""` (or `core`) and `kind: Service` in the
//!   route's own namespace attaches the route to that Service: to the port `port` or
//!   `sectionName` names, else to every HTTP port. Consumer routes (a parentRef to a
//!   Service in another namespace) are not supported; other parents belong to gateway
//!   controllers and are left alone.
//! - **Kinds.** On a port that a GRPCRoute routes, HTTPRoutes do not apply (their parent
//!   is `Conflicted` when that leaves them nothing), as the Gateway API says; the kinds are
//!   never merged.
//! - **Merging.** Every route of one kind attached to a Service port is merged into one
//!   table in the Gateway API's precedence ([`view::Rank`]): HTTPRoute: an exact path,
//!   then a regular expression (longest first), then the longest path prefix; then a
//!   method; then the most header matches; then the most query parameter matches.
//!   GRPCRoute: the longest service, then the longest method, then the most header
//!   matches. Ties go to the oldest route (creation time, then namespace/name), then rule
//!   and match order. A request matching no rule gets 404 (gRPC: UNIMPLEMENTED/UNAVAILABLE).
//! - **Backends** are Service ports in the route's namespace, weighted (default 1). The
//!   share of a backend that is missing, of another kind or namespace, or a TCP port fails
//!   (500; gRPC: UNAVAILABLE) and status says why; so does a rule with no backend of weight
//!   above 0. A backend is its Service's endpoints: the backend's own routes or split do
//!   not apply again.
//! - **Precedence.** A Service port with an attached route is routed by its routes only; a
//!   TrafficSplit on the Service still routes its other ports and is `Conflicted` when the
//!   routes take every HTTP port. A rule's `timeouts` and `retry` override the port's
//!   RetryPolicy for that rule; rules without them keep the RetryPolicy's.

pub(crate) mod backends;
pub(crate) mod resolve;
pub(crate) mod view;

#[cfg(test)]
mod tests;
