//! Listeners: where the proxy accepts connections and what it does with them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use super::matcher::StringMatch;
use super::rbac::{NetworkRbac, Rbac};
use super::route::RouteConfig;

/// A listener (LDS): an address and the filter chains connections are matched to.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Its name (`outbound`, `inbound|8080`, `virtualOutbound`, ...).
    pub name: String,
    /// Where it binds.
    pub address: SocketAddr,
    /// Connections take their original destination (`SO_ORIGINAL_DST`) as the address
    /// that chains match on (the `original_dst` listener filter): an intercepting
    /// listener. Otherwise the local address is used.
    pub original_dst: bool,
    /// The first bytes are inspected for TLS and ALPN (`tls_inspector`) before a chain
    /// is chosen.
    pub tls_inspector: bool,
    /// Chains in order; the most specific match wins as in Envoy
    /// (destination port, then destination prefix, then transport protocol, then
    /// application protocols, then source type).
    pub chains: Vec<FilterChain>,
    /// The chain for a connection no chain matches; none closes it.
    pub default_chain: Option<FilterChain>,
}

/// One filter chain: what it matches, its TLS, the network filters before the
/// terminal one, and the terminal filter.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterChain {
    /// Its name (may be empty).
    pub name: String,
    /// What a connection must look like to take this chain.
    pub matcher: ChainMatch,
    /// TLS terminated here (`DownstreamTlsContext`); none: plain text.
    pub tls: Option<DownstreamTls>,
    /// The network filters before the terminal one, in order (RBAC only).
    pub filters: Vec<NetworkFilter>,
    /// What handles the connection.
    pub terminal: Terminal,
}

/// A network filter before the terminal one.
#[derive(Clone, Debug, PartialEq)]
pub enum NetworkFilter {
    /// `envoy.filters.network.rbac`: decided when the connection is accepted (after
    /// TLS, before the terminal filter connects anywhere); denied, it is closed.
    Rbac(Arc<NetworkRbac>),
}

/// `filter_chain_match`: every set field must match; an empty one matches anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChainMatch {
    /// The (original) destination port.
    pub destination_port: Option<u16>,
    /// The (original) destination address is in one of these.
    pub prefix_ranges: Vec<Cidr>,
    /// `tls` or `raw_buffer`, as seen by the TLS inspector.
    pub transport_protocol: Option<String>,
    /// ALPN values offered by the client (any of).
    pub application_protocols: Vec<String>,
    /// The connection's source must be local (`SAME_IP_OR_LOOPBACK`) or external.
    pub source_type: SourceType,
}

/// `filter_chain_match.source_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceType {
    /// Any source.
    #[default]
    Any,
    /// The source is this machine (loopback or a local address).
    SameIpOrLoopback,
    /// The source is not this machine.
    External,
}

/// An address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` is in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        }
        let ((net, width), (ip, ip_width)) = (bits(self.addr), bits(ip));
        if width != ip_width || self.len > width {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        let shift = u32::from(width - self.len);
        (net >> shift) == (ip >> shift)
    }
}

/// TLS terminated on a chain (`DownstreamTlsContext`).
#[derive(Clone, Debug, PartialEq)]
pub struct DownstreamTls {
    /// The SDS name of the certificate presented (the workload's `default`).
    pub certificate: SecretRef,
    /// How the client certificate is checked; none: not requested.
    pub validation: Option<Validation>,
    /// A client certificate is required (`require_client_certificate`).
    pub require_client_certificate: bool,
    /// ALPN offered, in order of preference.
    pub alpn: Vec<String>,
}

/// A secret named by SDS and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The secret's name (`default`, `ROOTCA`).
    pub name: String,
    /// Where it is fetched.
    pub source: SecretSource,
}

/// Where an SDS secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Over the ADS stream.
    Ads,
    /// From the agent's SDS server, through the bootstrap's static cluster of this name
    /// (`rudder-agent-sds`, a Unix socket).
    AgentCluster(String),
}

/// How a peer certificate is checked: chains to the trust bundle, and one URI SAN
/// matches one of the matchers (any matcher; none: any SAN).
#[derive(Clone, Debug, PartialEq)]
pub struct Validation {
    /// The SDS name of the trust bundle (`ROOTCA`).
    pub trust: SecretRef,
    /// URI SAN matchers (`match_typed_subject_alt_names` with `san_type: URI`).
    pub uri_sans: Vec<StringMatch>,
}

/// What handles a connection once its chain is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Terminal {
    /// `http_connection_manager` with the router filter.
    Http(Arc<HttpManager>),
    /// `tcp_proxy` to one cluster.
    Tcp(TcpProxy),
}

/// `http_connection_manager`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpManager {
    /// Its stat prefix.
    pub stat_prefix: String,
    /// Where routes come from.
    pub routes: RouteSource,
    /// HTTP CONNECT is accepted (`upgrade_configs: CONNECT`) and tunnelled to the
    /// route's cluster.
    pub connect: bool,
    /// What is done with `x-forwarded-client-cert`.
    pub forward_client_cert: ForwardClientCert,
    /// The HTTP filters in order: RBAC filters, then the router (anything else is
    /// refused at conversion; the router is implied when the list is empty).
    pub filters: Vec<HttpFilter>,
    /// The request header block limit (`max_request_headers_kb`), in bytes.
    pub max_request_headers_bytes: usize,
    /// Idle timeout of a downstream connection (`common_http_protocol_options`), if set.
    pub idle_timeout: Option<std::time::Duration>,
    /// What is done to the request path before the HTTP filters and routing.
    pub path: PathNormalization,
}

/// The request path transformations of a connection manager, applied in Envoy's order
/// before any HTTP filter (RBAC included) and routing, the upstream request taking the
/// result: escaped slashes, then RFC 3986 normalization, then merged slashes; the
/// query is never touched. The default changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathNormalization {
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
    /// `normalize_path`: dot segments (`.`, `..`, `%2e` and `%2E` ones too) removed,
    /// backslashes turned into slashes and percent-encoded unreserved characters
    /// decoded, as Envoy's Chromium-based canonicalizer does; a path it cannot
    /// canonicalize (an encoded or literal NUL) is answered 400.
    pub normalize: bool,
    /// `merge_slashes`: runs of `/` in the path collapsed to one.
    pub merge_slashes: bool,
}

/// `path_with_escaped_slashes_action`: what is done with a path holding `%2F`, `%2f`,
/// `%5C` or `%5c`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Left as they are (`KEEP_UNCHANGED`, and Envoy's
    /// `IMPLEMENTATION_SPECIFIC_DEFAULT`).
    #[default]
    Keep,
    /// The request is answered 400 (`REJECT_REQUEST`).
    Reject,
    /// Unescaped (`%2F` to `/`, `%5C` to `\`) and the request is answered 307 with
    /// the transformed path as `Location` (`UNESCAPE_AND_REDIRECT`; a gRPC request 400).
    UnescapeAndRedirect,
    /// Unescaped, and the request goes on (`UNESCAPE_AND_FORWARD`).
    UnescapeAndForward,
}

/// An HTTP filter of a connection manager.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilter {
    /// `envoy.filters.http.rbac`: decided before routing; denied, the request gets a
    /// local 403 `RBAC: access denied` (gRPC: `grpc-status: 7`).
    Rbac(Arc<Rbac>),
    /// The router (always last).
    Router,
}

/// `rds` or an inline `route_config`.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteSource {
    /// By name over ADS.
    Rds(String),
    /// Inline.
    Inline(Arc<RouteConfig>),
}

/// `forward_client_cert_details` with `set_current_client_cert_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// Remove any incoming header (Envoy's default, `SANITIZE`).
    #[default]
    Sanitize,
    /// Remove any incoming header and set one from this connection's peer certificate
    /// (`SANITIZE_SET`); `uri`: add `URI=` of the peer's SPIFFE ID. Envoy also adds
    /// `By=` (this proxy's own URI SAN) and `Hash=` (the peer certificate's SHA-256).
    SanitizeSet {
        /// `set_current_client_cert_details.uri`.
        uri: bool,
    },
}

/// `tcp_proxy`.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpProxy {
    /// Its stat prefix.
    pub stat_prefix: String,
    /// The cluster connections go to.
    pub cluster: String,
    /// Idle timeout, if set (Envoy's default is one hour).
    pub idle_timeout: Option<std::time::Duration>,
}
