//! The bounds every converted resource is checked against (the module docs of
//! `convert` list them).

/// The longest name accepted (resource, cluster, host, header, domain), in bytes.
pub const MAX_NAME: usize = 1024;
/// The longest regex pattern accepted, in characters (RE2's limit in Rudder's checks).
pub const MAX_REGEX_LEN: usize = 1024;
/// The `regex` crate's compiled size limit for one pattern, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Virtual hosts per route configuration. Rudder's outbound table has one per Service,
/// so this is above any mesh the 16 MiB message bound lets through (10,000 was refused
/// at 10,000 Services plus the proxy's own).
pub const MAX_VIRTUAL_HOSTS: usize = 100_000;
/// Routes per virtual host.
pub const MAX_ROUTES: usize = 1_000;
/// Domains per virtual host.
pub const MAX_DOMAINS: usize = 1_000;
/// Endpoints per load assignment (all localities together).
pub const MAX_ENDPOINTS: usize = 10_000;
/// Filter chains per listener.
pub const MAX_FILTER_CHAINS: usize = 1_000;
/// Entries in any other list.
pub const MAX_LIST: usize = 100;
/// Policies in one set of RBAC rules.
pub const MAX_POLICIES: usize = 1_000;
/// Permissions or principals of one RBAC policy, and entries of one of their sets
/// (`and_rules`, `or_rules`, `and_ids`, `or_ids`).
pub const MAX_RBAC_RULES: usize = 1_000;
