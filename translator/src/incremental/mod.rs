//! Incremental translation: a model change recomputes only the resources that depend on
//! the objects that changed, and says per view what was added, changed and removed.
//!
//! ```text
//!   changed objects ──▶ dirty Services (clusters, endpoints, virtual hosts)
//!                  └──▶ dirty Pods (the listeners of proxies beside them)
//!   dirty Services ──▶ each view that sees them: cluster/endpoint updates, and its route
//!                      table re-assembled from cached virtual hosts if one changed
//! ```
//!
//! What depends on what:
//! - a Service's Cluster: the Service, the pods it selects (their SPIFFE IDs), the retry
//!   budget of its winning RetryPolicy;
//! - its ClusterLoadAssignment: the Service and its EndpointSlices;
//! - its virtual hosts: the Service, its TrafficSplit (with the HTTPRouteGroups and the
//!   backend Services it names) and its RetryPolicies;
//! - a view's route table: the virtual hosts of the Services it sees (for a Service with
//!   consumer routes from the view's namespace, that namespace's own virtual hosts);
//! - a proxy's own listeners and inbound clusters: its pod and the Services selecting it.
//!
//! Policy objects are resolved into a [`PolicyContext`](crate::policy::context::PolicyContext) on every build (it is small); every
//! Service a policy touches, before or after, is rebuilt, and an unchanged result keeps
//! its previous `Arc`, so nothing is sent for it.
//!
//! Views ([`ViewKey`](crate::model::ViewKey): client namespace and declared egress) group proxies that are sent
//! the same clusters, endpoints and routes; only listeners and inbound clusters are per
//! proxy.
//!
//! Each view may leave out its own set of policy objects (ones its proxies rejected, see
//! the server's containment): the Services those objects touch get view-local clusters
//! and virtual hosts, built with the view's own [`PolicyContext`](crate::policy::context::PolicyContext); every other part is
//! shared with the other views. The server leaves objects out only of a view's variants
//! ([`ViewKey::variant`](crate::model::ViewKey::variant), one per rejecting identity): a variant starts as a copy of its
//! view, so it costs one more view's update per build, and the proxies that did not
//! reject stay on the shared view with no extra work.

mod builder;
mod changes;
mod select;
mod state;
mod update;
mod view;

pub use changes::{BuildOutput, Changes, Own, Update, ViewMaps};
pub use state::Builder;
