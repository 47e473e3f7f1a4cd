//! What a stream reports: what happened ([`Event`]), a proxy's rejection ([`Rejection`]),
//! why a stream must end ([`Refusal`]) and one resource as CSDS and `xdsctl` see it
//! ([`ResourceView`]).

use std::sync::Arc;

use translator::encoded::{Encoded, Source};
use xds_types::XdsType;

/// A proxy rejected a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The type.
    pub kind: XdsType,
    /// The version it rejected (SotW) or a hash of what the response carried (delta).
    pub version: String,
    /// The resources in the rejected response.
    pub resources: Vec<String>,
    /// The proxy's error text (cut to [`crate::xds::stream::limits::NACK_TEXT_MAX`]).
    pub error: String,
    /// The objects the rejected resources were made from.
    pub sources: Vec<String>,
    /// Policy objects (at their revisions) that could have caused the rejection: see
    /// [`crate::xds::stream::blame::suspects`].
    pub suspects: Vec<Source>,
    /// Whether `suspects` is an exact diff against versions the proxy accepted.
    pub precise: bool,
}

/// What a stream saw, for logs, metrics and containment.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A response was sent.
    Sent {
        /// The type.
        kind: XdsType,
        /// Resources it carried.
        resources: usize,
        /// Names it removed.
        removed: usize,
        /// Encoded bytes of the resources.
        bytes: usize,
    },
    /// A response was accepted.
    Ack {
        /// The type.
        kind: XdsType,
        /// The accepted version.
        version: String,
        /// The policy objects (at their revisions) the accepted resources were made from.
        accepted: Vec<Source>,
    },
    /// A response was rejected.
    Nack(Rejection),
    /// A request was ignored (unknown type, stale nonce).
    Ignored {
        /// The request's type URL.
        type_url: String,
        /// Why.
        reason: String,
    },
}

/// Why a stream must end: the limit a request broke (as `rudder_xds_refusals_total`
/// labels it) and what was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `subscribed_names`, `subscribed_bytes`, `name_size`, `identity_memory`, ...
    pub limit: &'static str,
    /// What was refused, naming the flag that sets the limit.
    pub reason: String,
}

/// One resource as a stream sees it, for CSDS and `xdsctl`.
#[derive(Clone, Debug)]
pub struct ResourceView {
    /// Its name.
    pub name: Arc<str>,
    /// What the proxy should hold (None: it holds something it should drop).
    pub want: Option<Arc<Encoded>>,
    /// The version the proxy holds, if any.
    pub held: Option<String>,
    /// Whether a response carrying it awaits an answer.
    pub inflight: bool,
    /// The proxy's error, if it rejected the version it should hold.
    pub rejected: Option<Arc<str>>,
}
