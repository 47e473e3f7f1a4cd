//! Serving xDS: the model store and build loop ([`store`]), what it publishes and how
//! streams read it ([`fanout`]), containment of rejected config ([`containment`]), the
//! admission of first syncs under storms ([`first_sync`]), the
//! per-stream state machines ([`stream`]) and their tonic glue ([`ads`]), the HTTP/2
//! and gRPC framing with the memory budget ([`wire`]), and the port's start-up
//! ([`serve`]). The connection front door is [`crate::net::front_door`].

pub mod ads;
pub mod containment;
pub mod fanout;
pub(crate) mod first_sync;
pub mod serve;
pub mod store;
pub mod stream;
pub mod wire;
