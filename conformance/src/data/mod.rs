//! The data path: listeners and their filter chains (`listen`), TLS from SDS secrets
//! (`tls`), the HTTP connection manager and router (`http`), clusters, load balancing and
//! upstream connections (`upstream`); what they all share (`ctx`); RBAC decisions
//! counted under Envoy's names (`rbac`, for the HTTP and the network filter). Every
//! connection and request reads one [`Snapshot`](crate::config::Snapshot) from
//! [`Live`](crate::live::Live) and keeps it to the end.

mod ctx;
pub mod drain;
pub mod http;
pub mod listen;
mod rbac;
pub mod tls;
pub mod upstream;

pub use ctx::{ConnInfo, Ctx};
