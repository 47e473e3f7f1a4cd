//! Clusters and their endpoints.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::listener::{SecretRef, Validation};

/// A cluster (CDS).
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// How its endpoints are found.
    pub discovery: Discovery,
    /// How an endpoint is picked.
    pub lb: LbPolicy,
    /// Connect timeout (`connect_timeout`, Envoy's default 5 s).
    pub connect_timeout: Duration,
    /// The transport to every endpoint unless a match below says otherwise.
    pub transport: Transport,
    /// `transport_socket_matches`: an endpoint whose metadata
    /// (`envoy.transport_socket_match`) has every key of a match's `match` takes that
    /// match's transport; first match wins.
    pub transport_matches: Vec<TransportMatch>,
    /// The upstream HTTP protocol.
    pub protocol: UpstreamProtocol,
    /// Retry budget (`circuit_breakers.thresholds[DEFAULT].retry_budget`), if set.
    pub retry_budget: Option<RetryBudget>,
    /// Requests per connection before it is closed, if limited.
    pub max_requests_per_connection: Option<u32>,
    /// `upstream_bind_config`: the addresses connections are made from (at most one per
    /// IP family; the upstream address's family picks, else the first). Empty: the
    /// kernel's choice.
    pub source: Vec<IpAddr>,
}

impl Cluster {
    /// The address to connect to `upstream` from, if the cluster names one (Envoy's
    /// default local address selector).
    pub fn source_for(&self, upstream: IpAddr) -> Option<IpAddr> {
        self.source
            .iter()
            .find(|s| s.is_ipv4() == upstream.is_ipv4())
            .or(self.source.first())
            .copied()
    }
}

/// How a cluster's endpoints are found.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// EDS under this service name, over ADS.
    Eds {
        /// The `ClusterLoadAssignment` name.
        service_name: String,
    },
    /// `STATIC` with its inline endpoints.
    Static(LoadAssignment),
    /// `LOGICAL_DNS` / `STRICT_DNS`: one host name resolved at connect time.
    Dns {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// `ORIGINAL_DST`: the connection's original destination, or with `header`, the
    /// address in that request header (`:authority` for Rudder's `pod-address`).
    OriginalDst {
        /// `original_dst_lb_config.http_header_name` when `use_http_header`.
        header: Option<String>,
    },
}

/// `lb_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LbPolicy {
    /// Round robin (weighted by endpoint weight).
    #[default]
    RoundRobin,
    /// Least request, power of two choices.
    LeastRequest,
    /// `CLUSTER_PROVIDED` (original destination).
    ClusterProvided,
}

/// The transport to an endpoint.
#[derive(Clone, Debug, Default)]
pub enum Transport {
    /// Plain text.
    #[default]
    Plain,
    /// TLS (`UpstreamTlsContext`).
    Tls(UpstreamTls),
}

/// `UpstreamTlsContext`.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// The client certificate presented (`default` from the agent).
    pub certificate: Option<SecretRef>,
    /// How the server's certificate is checked.
    pub validation: Validation,
    /// SNI sent, if any.
    pub sni: Option<String>,
    /// ALPN offered.
    pub alpn: Vec<String>,
}

/// One `transport_socket_matches` entry.
#[derive(Clone, Debug)]
pub struct TransportMatch {
    /// Its name.
    pub name: String,
    /// The metadata an endpoint must carry (key, string value).
    pub when: Vec<(String, String)>,
    /// The transport it then takes.
    pub transport: Transport,
}

/// The upstream HTTP protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (Envoy's default).
    #[default]
    Http1,
    /// HTTP/2 (`explicit_http_config.http2_protocol_options`).
    Http2,
    /// The downstream request's protocol (`use_downstream_protocol_config`).
    Downstream,
}

/// Envoy's retry budget: retries may be at most `percent` of the cluster's active
/// requests, but at least `min_concurrency` retries may be active.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// `budget_percent` (Envoy's default 20).
    pub percent: f64,
    /// `min_retry_concurrency` (Envoy's default 3).
    pub min_concurrency: u32,
}

/// A cluster's endpoints (EDS `ClusterLoadAssignment` or a static load assignment),
/// grouped by locality and priority.
#[derive(Clone, Debug, Default)]
pub struct LoadAssignment {
    /// The cluster (service) name.
    pub name: String,
    /// Localities; the lowest priority that has healthy endpoints takes the traffic.
    pub localities: Vec<Locality>,
}

impl LoadAssignment {
    /// Every endpoint, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.localities.iter().flat_map(|l| l.endpoints.iter())
    }
}

/// Endpoints of one locality and priority.
#[derive(Clone, Debug, Default)]
pub struct Locality {
    /// `locality.region`.
    pub region: String,
    /// `locality.zone`.
    pub zone: String,
    /// `priority` (0 is first).
    pub priority: u32,
    /// `load_balancing_weight` (1 when unset).
    pub weight: u32,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Its address.
    pub address: SocketAddr,
    /// Healthy (`UNKNOWN` and `HEALTHY`); others are not picked.
    pub healthy: bool,
    /// `load_balancing_weight` (1 when unset).
    pub weight: u32,
    /// `metadata.filter_metadata["envoy.transport_socket_match"]` string values.
    pub transport_match: Vec<(String, String)>,
}
