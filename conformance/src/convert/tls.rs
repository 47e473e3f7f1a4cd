//! TLS contexts: the downstream one a filter chain terminates, the upstream one a
//! cluster originates, and the SDS references they name.

use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ConfigSource, api_config_source::ApiType,
    config_source::ConfigSourceSpecifier, grpc_service::TargetSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
    subject_alt_name_matcher::SanType,
};

use super::check::{Path, R, each, enumerated, list, must_be_default, name, opt_name};
use super::limits::MAX_LIST;
use super::matchers::string_matcher;
use crate::config::cluster::UpstreamTls;
use crate::config::listener::{DownstreamTls, SecretRef, SecretSource, StringMatch, Validation};

/// Where SDS secrets and EDS endpoints may come from: ADS, or (SDS only) the agent's
/// SDS server through a bootstrap cluster.
pub(crate) fn config_source(path: &Path, c: &ConfigSource, allow_agent: bool) -> R<SecretSource> {
    must_be_default!(path, c, authorities, initial_fetch_timeout);
    if !matches!(c.resource_api_version, 0 | 2) {
        return Err(path
            .f("resource_api_version")
            .err("only V3 (or AUTO) is accepted"));
    }
    match &c.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => Ok(SecretSource::Ads),
        Some(ConfigSourceSpecifier::ApiConfigSource(api)) if allow_agent => {
            api_source(&path.f("api_config_source"), api)
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(_)) => Err(path
            .f("api_config_source")
            .err("only ADS is accepted here (no other xDS server)")),
        Some(_) => Err(path.err("only ads or api_config_source (gRPC) is accepted")),
        None => Err(path.err("a config source is required")),
    }
}

fn api_source(path: &Path, api: &ApiConfigSource) -> R<SecretSource> {
    must_be_default!(
        path,
        api,
        cluster_names,
        refresh_delay,
        request_timeout,
        rate_limit_settings,
        set_node_on_first_message_only,
        config_validators,
    );
    if enumerated::<ApiType>(&path.f("api_type"), api.api_type)? != ApiType::Grpc {
        return Err(path.f("api_type").err("only GRPC is accepted"));
    }
    if !matches!(api.transport_api_version, 0 | 2) {
        return Err(path.f("transport_api_version").err("only V3 is accepted"));
    }
    let [service] = api.grpc_services.as_slice() else {
        return Err(path
            .f("grpc_services")
            .err("exactly one gRPC service is required"));
    };
    let sp = path.f("grpc_services").i(0);
    must_be_default!(sp, service, timeout, initial_metadata, retry_policy);
    match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(g)) => {
            let gp = sp.f("envoy_grpc");
            must_be_default!(gp, g, authority, retry_policy, max_receive_message_length);
            must_be_default!(gp, g, skip_envoy_headers);
            Ok(SecretSource::AgentCluster(name(
                &gp.f("cluster_name"),
                &g.cluster_name,
            )?))
        }
        Some(TargetSpecifier::GoogleGrpc(_)) => Err(sp.f("google_grpc").unsupported()),
        None => Err(sp.err("envoy_grpc with a cluster name is required")),
    }
}

/// An SDS reference: a name and its source.
pub(crate) fn sds(path: &Path, s: &SdsSecretConfig) -> R<SecretRef> {
    let source = s
        .sds_config
        .as_ref()
        .ok_or_else(|| path.f("sds_config").err("a source is required"))?;
    Ok(SecretRef {
        name: name(&path.f("name"), &s.name)?,
        source: config_source(&path.f("sds_config"), source, true)?,
    })
}

/// What a common TLS context holds: the certificate (at most one), the validation, ALPN.
struct Common {
    certificate: Option<SecretRef>,
    validation: Option<Validation>,
    alpn: Vec<String>,
}

fn common(path: &Path, c: &CommonTlsContext) -> R<Common> {
    must_be_default!(
        path,
        c,
        tls_params,
        tls_certificates,
        tls_certificate_provider_instance,
        custom_tls_certificate_selector,
        tls_certificate_certificate_provider,
        tls_certificate_certificate_provider_instance,
        custom_handshaker,
        key_log,
    );
    let cp = path.f("tls_certificate_sds_secret_configs");
    let certificate = match c.tls_certificate_sds_secret_configs.as_slice() {
        [] => None,
        [one] => Some(sds(&cp.i(0), one)?),
        _ => return Err(cp.err("at most one certificate is accepted")),
    };
    let alpn = each(
        &path.f("alpn_protocols"),
        &c.alpn_protocols,
        MAX_LIST,
        |p, a| {
            if a.is_empty() || a.len() > 255 {
                return Err(p.err("an ALPN value must have 1 to 255 bytes"));
            }
            Ok(a.clone())
        },
    )?;
    let validation = match &c.validation_context_type {
        None => None,
        Some(ValidationContextType::CombinedValidationContext(v)) => {
            let vp = path.f("combined_validation_context");
            must_be_default!(
                vp,
                v,
                validation_context_certificate_provider,
                validation_context_certificate_provider_instance,
            );
            let trust = v
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    vp.f("validation_context_sds_secret_config")
                        .err("the trust bundle's SDS reference is required")
                })?;
            let uri_sans = match &v.default_validation_context {
                Some(d) => sans(&vp.f("default_validation_context"), d)?,
                None => Vec::new(),
            };
            Some(Validation {
                trust: sds(&vp.f("validation_context_sds_secret_config"), trust)?,
                uri_sans,
            })
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => Some(Validation {
            trust: sds(&path.f("validation_context_sds_secret_config"), s)?,
            uri_sans: Vec::new(),
        }),
        Some(ValidationContextType::ValidationContext(_)) => {
            return Err(path.f("validation_context").unsupported());
        }
        Some(ValidationContextType::ValidationContextCertificateProvider(_))
        | Some(ValidationContextType::ValidationContextCertificateProviderInstance(_)) => {
            return Err(path.f("validation_context_type").unsupported());
        }
    };
    Ok(Common {
        certificate,
        validation,
        alpn,
    })
}

/// The default validation context: only URI SAN matchers.
fn sans(path: &Path, v: &CertificateValidationContext) -> R<Vec<StringMatch>> {
    must_be_default!(
        path,
        v,
        trusted_ca,
        ca_certificate_provider_instance,
        system_root_certs,
        watched_directory,
        verify_certificate_spki,
        verify_certificate_hash,
        match_subject_alt_names,
        require_signed_certificate_timestamp,
        crl,
        allow_expired_certificate,
        trust_chain_verification,
        custom_validator_config,
        only_verify_leaf_cert_crl,
        max_verify_depth,
        suppress_client_ca_list,
    );
    let sp = path.f("match_typed_subject_alt_names");
    list(&sp, &v.match_typed_subject_alt_names)?;
    each(&sp, &v.match_typed_subject_alt_names, MAX_LIST, |p, m| {
        must_be_default!(p, m, oid);
        if enumerated::<SanType>(&p.f("san_type"), m.san_type)? != SanType::Uri {
            return Err(p.f("san_type").err("only URI SANs are matched"));
        }
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| p.f("matcher").err("a matcher is required"))?;
        string_matcher(&p.f("matcher"), matcher)
    })
}

/// `DownstreamTlsContext`: one certificate, optional client validation.
pub(crate) fn downstream(path: &Path, d: &DownstreamTlsContext) -> R<DownstreamTls> {
    must_be_default!(
        path,
        d,
        require_sni,
        disable_stateful_session_resumption,
        session_timeout,
        ocsp_staple_policy,
        full_scan_certs_on_sni_mismatch,
        prefer_client_ciphers,
        session_ticket_keys_type,
    );
    let cp = path.f("common_tls_context");
    let c = d
        .common_tls_context
        .as_ref()
        .ok_or_else(|| cp.err("a common TLS context is required"))?;
    let common = common(&cp, c)?;
    let certificate = common.certificate.ok_or_else(|| {
        cp.f("tls_certificate_sds_secret_configs")
            .err("a server certificate is required")
    })?;
    let require_client_certificate = d.require_client_certificate.is_some_and(|b| b.value);
    if require_client_certificate && common.validation.is_none() {
        return Err(path
            .f("require_client_certificate")
            .err("requiring a client certificate needs a validation context"));
    }
    Ok(DownstreamTls {
        certificate,
        validation: common.validation,
        require_client_certificate,
        alpn: common.alpn,
    })
}

/// `UpstreamTlsContext`: an optional client certificate, a required server validation.
pub(crate) fn upstream(path: &Path, u: &UpstreamTlsContext) -> R<UpstreamTls> {
    must_be_default!(
        path,
        u,
        auto_host_sni,
        auto_sni_san_validation,
        allow_renegotiation,
        max_session_keys,
        enforce_rsa_key_usage,
    );
    let cp = path.f("common_tls_context");
    let c = u
        .common_tls_context
        .as_ref()
        .ok_or_else(|| cp.err("a common TLS context is required"))?;
    let common = common(&cp, c)?;
    let validation = common.validation.ok_or_else(|| {
        cp.f("combined_validation_context")
            .err("the server certificate must be validated")
    })?;
    let sni = opt_name(&path.f("sni"), &u.sni)?;
    Ok(UpstreamTls {
        certificate: common.certificate,
        validation,
        sni: (!sni.is_empty()).then_some(sni),
        alpn: common.alpn,
    })
}
