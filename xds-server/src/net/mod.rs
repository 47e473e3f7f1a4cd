//! What the unauthenticated HTTP shells share: the fair queue of permits between peers
//! ([`fair_queue`]) and the hardened request path around a handler ([`http_shell`]). The
//! connection front door itself is [`crate::xds::listener`].

pub(crate) mod fair_queue;
pub(crate) mod http_shell;
