//! Serving xDS: the port's front door ([`listener`]), the model store and build loop
//! ([`store`]), what it publishes and how streams read it ([`fanout`]), containment of
//! rejected config ([`containment`]), the per-stream state machines ([`stream`]) and
//! their tonic glue ([`ads`]).

pub mod ads;
pub mod containment;
pub mod fanout;
pub mod listener;
pub mod store;
pub mod stream;
pub mod wire;
