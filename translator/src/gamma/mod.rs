//! Gateway API routes for the mesh (GAMMA): HTTPRoutes and GRPCRoutes whose `parentRefs`
//! name a Service, resolved into the routing model of that Service's ports.
//!
//! - **Attachment.** A parentRef with `group: ""` (or `core`) and `kind: Service`
//!   attaches the route to that Service: to the port `port` or `sectionName` names, else
//!   to every HTTP port. Other parents belong to gateway controllers and are left alone.
//! - **Producer and consumer routes.** A route in the Service's own namespace (a producer
//!   route) applies to every caller. A route in another namespace (a consumer route)
//!   applies only to the callers in its own namespace, and for them, on the ports it
//!   attaches to, takes the place of the producer routes. So a view's route table depends
//!   on its namespace only for the Services that namespace has consumer routes of; every
//!   other Service's virtual hosts stay shared. A consumer route's backendRefs may name
//!   the Service it is attached to (in the producer's namespace); other Services in
//!   other namespaces need ReferenceGrants, which Rudder does not support.
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
//! - **Redirects and rewrites.** A `RequestRedirect` rule answers with a redirect (its
//!   `Location` port: the filter's, else the scheme's well-known one when it sets a
//!   scheme, else the Service port); a `URLRewrite` rule forwards with a new host and
//!   path. `ReplacePrefixMatch` replaces the whole segments the rule's `PathPrefix`
//!   matched. Proxyless gRPC clients are sent neither (gRPC fails calls on a redirect and
//!   ignores rewrites): a redirect rule's calls fail with UNAVAILABLE, a rewrite rule's go
//!   to its backends unchanged, and a diagnostic names the filter.
//! - **Precedence.** A Service port with an attached route is routed by its routes only; a
//!   TrafficSplit on the Service still routes its other ports and is `Conflicted` when the
//!   routes take every HTTP port. A rule's `timeouts` and `retry` override the port's
//!   RetryPolicy for that rule; rules without them keep the RetryPolicy's.

pub(crate) mod backends;
pub(crate) mod resolve;
pub(crate) mod view;

#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod tests;
