//! Validation of HTTPRoute and GRPCRoute specs: what the upstream schema and CEL rules
//! enforce (repeated for the manifest directory, which has no API server), the limits of
//! what Rudder emits (Envoy's regex engine, header names Envoy will not modify), and
//! what Rudder does not implement (`FieldError::unsupported`). Errors name the field.

mod checks;
mod filters;
mod paths;
mod route;

pub use checks::{MAX_WEIGHT, duration};
pub use filters::{SUPPORTED_BACKEND_FILTERS, SUPPORTED_FILTERS};
pub use paths::REDIRECT_CODES;
pub use route::{GrpcPath, MAX_ATTEMPTS, MAX_RENDERED_BYTES, METHODS, grpc_method_path};
