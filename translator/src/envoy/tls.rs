//! Mutual TLS between sidecars: transport sockets that take the workload certificate
//! (`default`) from the proxy's own agent (SDS on a Unix socket in the pod, the
//! bootstrap's [`AGENT_SDS_CLUSTER`]: the key is made in the pod and never crosses the
//! network) and the trust bundle (`ROOTCA`) over SDS on the ADS stream, and the Secret
//! resources themselves. The only plain-text hop is sidecar -> local app.

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::BoolValue;

use crate::mesh::CONTROL_PLANE_NAMESPACE;
pub use crate::mesh::MtlsMode;
use crate::model::Protocol;
use crate::output::{Body, Resource};
use crate::render::protos::{self, tls_socket as socket};
use crate::routing::authz::{Callers, InboundAuthz};
use xds_types::XdsType;

/// SDS name of a proxy's own certificate and key.
pub const CERT_SECRET: &str = "default";
/// SDS name of the trust bundle.
pub const ROOT_SECRET: &str = "ROOTCA";
/// The cluster a sidecar's bootstrap defines for its agent's SDS server, where the
/// workload certificate ([`CERT_SECRET`]) comes from.
pub const AGENT_SDS_CLUSTER: &str = "rudder-agent-sds";

/// The trust bundle, over ADS.
fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(protos::ads()),
    }
}

/// The workload certificate, from the proxy's agent.
fn agent_sds(name: &str) -> SdsSecretConfig {
    use envoy_types::pb::envoy::config::core::v3::{
        ApiConfigSource, ApiVersion, ConfigSource, GrpcService, api_config_source::ApiType,
        config_source::ConfigSourceSpecifier, grpc_service::EnvoyGrpc,
        grpc_service::TargetSpecifier,
    };
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: AGENT_SDS_CLUSTER.into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

fn uri_matcher(pattern: MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn common(sans: Vec<SubjectAltNameMatcher>, alpn: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![agent_sds(CERT_SECRET)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans,
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A plain-text transport socket (for endpoints outside the mesh).
pub(crate) fn plain() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(protos::any(
            &envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer {},
        ))),
    }
}

/// Client side: present our certificate, and accept only the given SPIFFE IDs (or, if
/// none are known, any identity of the trust domain).
pub(crate) fn upstream(
    spiffe_ids: &[String],
    trust_domain: &str,
    sni: &str,
    http2: bool,
) -> TransportSocket {
    let sans = if spiffe_ids.is_empty() {
        vec![uri_matcher(MatchPattern::Prefix(format!(
            "spiffe://{trust_domain}/"
        )))]
    } else {
        spiffe_ids
            .iter()
            .map(|id| uri_matcher(MatchPattern::Exact(id.clone())))
            .collect()
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common(sans, if http2 { &["h2"] } else { &["http/1.1"] })),
        sni: sni.into(),
        ..Default::default()
    };
    socket(protos::any(&ctx))
}

/// Client side to any workload of the trust domain, offering no ALPN: for calls by a
/// pod's own address, whose protocol is the caller's (the server's connection manager
/// then tells HTTP/1.1 from HTTP/2 by the bytes, not by ALPN).
pub(crate) fn upstream_any_workload(trust_domain: &str) -> TransportSocket {
    let sans = vec![uri_matcher(MatchPattern::Prefix(format!(
        "spiffe://{trust_domain}/"
    )))];
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common(sans, &[])),
        ..Default::default()
    };
    socket(protos::any(&ctx))
}

/// Server side: present our certificate and require one from the trust domain.
pub(crate) fn downstream(trust_domain: &str) -> TransportSocket {
    downstream_for(trust_domain, None)
}

/// At most this many SAN matchers in a handshake guard (rudder-proxy takes 100 in a
/// list); past it, one per caller namespace, then none (the RBAC filter alone decides).
const MAX_HANDSHAKE_SANS: usize = 64;

/// [`downstream`], admitting only `callers` when given (the handshake refuses others:
/// see [`crate::routing::authz::InboundAuthz::handshake_callers`]).
pub(crate) fn downstream_for(trust_domain: &str, callers: Option<&[&Callers]>) -> TransportSocket {
    let mut exact: Vec<&str> = Vec::new();
    let mut prefixes: Vec<&str> = Vec::new();
    for c in callers.unwrap_or_default() {
        match c {
            Callers::Identities(ids) => exact.extend(ids.iter().map(String::as_str)),
            Callers::IdentityPrefix(p) => prefixes.push(p),
            Callers::Anyone => {}
        }
    }
    exact.sort_unstable();
    exact.dedup();
    let mut namespaces: Vec<&str> = Vec::new();
    if exact.len() + prefixes.len() > MAX_HANDSHAKE_SANS {
        // `spiffe://TD/ns/NS/sa/SA` -> `spiffe://TD/ns/NS/`.
        namespaces = exact
            .drain(..)
            .map(|id| id.rfind("/sa/").map_or(id, |i| &id[..=i]))
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
    }
    let too_many = namespaces.len() + prefixes.len() > MAX_HANDSHAKE_SANS;
    let sans: Vec<SubjectAltNameMatcher> = if callers.is_none() || too_many {
        vec![uri_matcher(MatchPattern::Prefix(format!(
            "spiffe://{trust_domain}/"
        )))]
    } else {
        exact
            .iter()
            .map(|id| uri_matcher(MatchPattern::Exact((*id).to_string())))
            .chain(
                namespaces
                    .iter()
                    .chain(prefixes.iter())
                    .map(|p| uri_matcher(MatchPattern::Prefix((*p).to_string()))),
            )
            .collect()
    };
    // Never an empty list: that would admit every certificate of the CA.
    let sans = if sans.is_empty() {
        vec![uri_matcher(MatchPattern::Prefix(format!(
            "spiffe://{trust_domain}/ns/{CONTROL_PLANE_NAMESPACE}/"
        )))]
    } else {
        sans
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common(sans, &["h2", "http/1.1"])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    socket(protos::any(&ctx))
}

/// How a port's chains guard the app before it is connected.
pub(crate) struct Guard {
    /// The mTLS chain's transport socket.
    pub(crate) tls: TransportSocket,
    /// Whether plain text (PERMISSIVE) is proxied to the app at all.
    pub(crate) plain_text: bool,
}

/// The guard of a port: Envoy's network RBAC decides on a connection's first bytes
/// while its TCP proxy connects to the app at once, so a server that speaks first
/// would greet a denied caller. A TCP port whose rules decide on the caller alone
/// refuses other certificates in the handshake, and plain text no rule admits is not
/// proxied. HTTP ports decide each request before the app is called.
pub(crate) fn guarded_tls(protocol: Protocol, authz: &InboundAuthz, trust_domain: &str) -> Guard {
    if protocol != Protocol::Tcp {
        return Guard {
            tls: downstream(trust_domain),
            plain_text: true,
        };
    }
    Guard {
        tls: downstream_for(trust_domain, authz.handshake_callers().as_deref()),
        plain_text: authz.admits_plain_text(),
    }
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    }
}

/// The proxy's certificate Secret.
pub fn cert_secret(cert_chain_pem: &str, key_pem: &str) -> Resource {
    let secret = Secret {
        name: CERT_SECRET.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert_chain_pem)),
            private_key: Some(inline(key_pem)),
            ..Default::default()
        })),
    };
    Resource {
        kind: XdsType::Secret,
        name: CERT_SECRET.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Secret(Box::new(secret)),
    }
}

/// The trust-bundle Secret.
pub fn root_secret(bundle_pem: &str) -> Resource {
    let secret = Secret {
        name: ROOT_SECRET.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(bundle_pem)),
                ..Default::default()
            },
        )),
    };
    Resource {
        kind: XdsType::Secret,
        name: ROOT_SECRET.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Secret(Box::new(secret)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(socket: &TransportSocket) -> Vec<String> {
        let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &socket.config_type
        else {
            panic!("typed config");
        };
        let ctx = <DownstreamTlsContext as prost::Message>::decode(any.value.as_slice())
            .expect("a DownstreamTlsContext");
        let Some(ValidationContextType::CombinedValidationContext(v)) = ctx
            .common_tls_context
            .and_then(|c| c.validation_context_type)
        else {
            panic!("combined validation context");
        };
        v.default_validation_context
            .expect("default context")
            .match_typed_subject_alt_names
            .iter()
            .map(|m| {
                format!(
                    "{:?}",
                    m.matcher.as_ref().and_then(|x| x.match_pattern.clone())
                )
            })
            .collect()
    }

    #[test]
    fn a_handshake_guard_stays_within_what_proxies_take() {
        let cp = Callers::IdentityPrefix("spiffe://td/ns/rudder-system/".into());
        let few = Callers::Identities(vec![
            "spiffe://td/ns/a/sa/x".into(),
            "spiffe://td/ns/a/sa/x".into(),
        ]);
        let got = sans(&downstream_for("td", Some(&[&cp, &few, &few])));
        assert_eq!(got.len(), 2, "duplicates folded: {got:?}");
        let many = Callers::Identities(
            (0..200)
                .map(|i| format!("spiffe://td/ns/n{}/sa/s{i}", i % 3))
                .collect(),
        );
        let got = sans(&downstream_for("td", Some(&[&cp, &many])));
        assert_eq!(got.len(), 4, "one prefix per namespace: {got:?}");
        assert!(
            got.iter().any(|s| s.contains("spiffe://td/ns/n1/")),
            "{got:?}"
        );
        let wide = Callers::Identities(
            (0..200)
                .map(|i| format!("spiffe://td/ns/n{i}/sa/s"))
                .collect(),
        );
        let got = sans(&downstream_for("td", Some(&[&cp, &wide])));
        assert_eq!(got.len(), 1, "the trust domain, RBAC decides: {got:?}");
    }
}
