//! The proxy-neutral routing IR of a Service port ([`ir`]): what its requests do, resolved
//! once by [`crate::policy`] and [`crate::gamma`], rendered by each emitter.

pub(crate) mod ir;
