//! Serving xDS: the port's front door ([`listener`]), the model store and build loop
//! ([`cache`]), containment of rejected config ([`containment`]), the per-stream state
//! machines ([`stream`]) and the tonic glue ([`grpc`]).

pub mod cache;
pub mod containment;
pub mod grpc;
pub mod listener;
pub mod snapshot;
pub mod stream;
