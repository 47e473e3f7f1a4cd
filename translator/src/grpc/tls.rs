//! The mesh mTLS of proxyless gRPC: the bootstrap's certificate provider ([`CERT_PROVIDER`],
//! gRPC has no SDS) for the certificate and for the CA that checks the peer.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};

/// The bootstrap's `certificate_providers` key that clusters and server listeners name.
pub const CERT_PROVIDER: &str = "rudder";

fn provider() -> Option<CertificateProviderPluginInstance> {
    Some(CertificateProviderPluginInstance {
        instance_name: CERT_PROVIDER.into(),
        certificate_name: String::new(),
    })
}

/// The provider's certificate, and its CA checking the peer, with SAN matchers.
/// gRPC checks SANs only through the deprecated `match_subject_alt_names` (A29).
#[allow(deprecated)]
pub(crate) fn common(sans: Vec<StringMatcher>) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_provider_instance: provider(),
        validation_context_type: Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                ca_certificate_provider_instance: provider(),
                match_subject_alt_names: sans,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

pub(crate) fn matcher(pattern: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}
