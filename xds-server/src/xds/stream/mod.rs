//! The ADS protocol, one pure state machine per stream: [`core::Stream`], the skeleton
//! both variants share, run by a [`core::Protocol`]: [`sotw::Sotw`] for
//! `StreamAggregatedResources` and [`delta::Delta`] for `DeltaAggregatedResources`. A
//! stream takes requests, new view and own versions ([`crate::xds::fanout`]) and clock
//! ticks, and returns the responses to send plus what happened ([`Event`]: ACKs, NACKs).
//! No sockets: the tonic glue in [`crate::xds::ads`] only moves messages.
//!
//! Per-stream state is subscriptions and what the proxy holds (pointers to the shared
//! encoded resources, or versions it reported), never copies of the config. A change
//! reaches a stream as the names it touched, so its work is O(changed names).
//!
//! Shared rules, both variants (kept in [`core`]):
//! - one response in flight per type; the next waits for its ACK or NACK;
//! - make-before-break ([`order`]): Listeners and Routes wait until the Clusters they
//!   point at are held by the proxy and those Clusters' endpoints are held or sent ahead
//!   of them on the stream, which delivers in order (bounded by
//!   [`ORDER_WAIT`](order::ORDER_WAIT), so one rejected Cluster cannot stall every
//!   route), and a Cluster stays while a held route still points at it;
//! - a NACKed version is remembered and never re-sent; the proxy keeps its last good
//!   config and gets the next different version;
//! - a changed Cluster is followed by its endpoints again (Envoy re-warms it);
//! - a request over a limit ([`limits`], [`names::NameBytes`]) ends the stream
//!   ([`Refusal`]).
//!
//! What differs lives in the variants: how a request is read (SotW: a version, the whole
//! name list and a nonce; delta: subscribes, unsubscribes and initial versions) and how a
//! response is built (SotW: the whole set for LDS and CDS, changed named resources for
//! the others; delta: added resources and removed names).

mod apart;
mod blame;
pub(crate) mod core;
pub(crate) mod delta;
mod event;
pub(crate) mod held;
pub(crate) mod limits;
pub(crate) mod names;
pub(crate) mod order;
pub(crate) mod sotw;

pub use event::{Event, Refusal, Rejection, ResourceView};

/// The hasher of the stream machines' sets and maps of names: SipHash (std's
/// `RandomState`), on purpose. The names come from peers, and a set driven into
/// collisions would stall the worker it runs on, with every other stream on it. foldhash
/// cut about 7% of a first sync's CPU, but calls itself only minimally DoS-resistant.
pub(crate) type NameHasher = std::hash::RandomState;
/// A hash set keyed by names, with [`NameHasher`].
pub(crate) type HashSet<T> = std::collections::HashSet<T, NameHasher>;
/// A hash map keyed by names, with [`NameHasher`].
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, NameHasher>;
#[cfg(test)]
pub(crate) use limits::NACK_TEXT_MAX;
#[cfg(test)]
pub(crate) use names::NameBytes;
#[cfg(test)]
pub(crate) use order::ORDER_WAIT;

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod first_answer_tests;
#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod sotw_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod transition_tests;
#[cfg(test)]
mod vhds_tests;
