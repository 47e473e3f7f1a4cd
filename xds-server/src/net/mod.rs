//! Every port's way in: the front door that accepts TCP, enforces the connection limits,
//! runs TLS and names the peer by its verified certificate ([`front_door`]); and what the
//! unauthenticated HTTP shells add on top: the fair queue of permits between peers
//! ([`fair_queue`]) and the hardened request path around a handler ([`http_shell`]).

pub(crate) mod fair_queue;
pub mod front_door;
pub(crate) mod http_shell;
