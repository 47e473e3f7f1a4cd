//! The proxy-neutral routing IR of a Service port ([`ir`]): what its requests do, resolved
//! once by [`crate::policy`] and [`crate::gamma`], rendered by each emitter; and the
//! authorization of an inbound port ([`authz`]).

pub mod authz;
pub(crate) mod ir;
