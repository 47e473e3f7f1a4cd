//! The network filters: the terminal `http_connection_manager` (RDS or an inline route
//! configuration; HTTP filters: RBAC filters, then the router; the request path
//! transformations `path_with_escaped_slashes_action`, `normalize_path`,
//! `merge_slashes`) and `tcp_proxy` (one cluster), and the RBAC filter that may come
//! before either.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as PbHttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter as PbHttpFilter,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
    },
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as PbNetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as PbTcpProxy, UpstreamConnectMode, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::Any;

use super::check::{
    Path, R, duration, enumerated, is, list, must_be_default, name, opt_duration, shorten, unpack,
};
use super::{rbac, route, tls};
use crate::config::listener::{
    EscapedSlashes, ForwardClientCert, HttpFilter, HttpManager, NetworkFilter, PathNormalization,
    RouteSource, TcpProxy, Terminal,
};

/// Envoy's default request header limit, in KiB.
const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Envoy's upper bound on `max_request_headers_kb`.
const MAX_REQUEST_HEADERS_KB: u32 = 8192;

/// The typed config of a network filter.
fn typed_config<'a>(path: &Path, f: &'a Filter) -> R<&'a Any> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => Ok(any),
        Some(filter::ConfigType::ConfigDiscovery(_)) => {
            Err(path.f("config_discovery").unsupported())
        }
        None => Err(path.err(format!(
            "unsupported network filter {:?} (no typed config)",
            shorten(&f.name)
        ))),
    }
}

/// A network filter before the chain's terminal one: RBAC.
pub(crate) fn filter_before_terminal(path: &Path, f: &Filter) -> R<NetworkFilter> {
    let any = typed_config(path, f)?;
    let tp = path.f("typed_config");
    if is::<PbNetworkRbac>(any) {
        let m: PbNetworkRbac = unpack(&tp, any)?;
        Ok(NetworkFilter::Rbac(Arc::new(rbac::network_rbac(&tp, &m)?)))
    } else if is::<HttpConnectionManager>(any) || is::<PbTcpProxy>(any) {
        Err(path.err(format!(
            "{:?} is a terminal filter: it must be the chain's last",
            shorten(&f.name)
        )))
    } else {
        Err(unsupported_filter(path, f, any))
    }
}

/// The error for a network filter rudder-proxy does not have.
fn unsupported_filter(path: &Path, f: &Filter, any: &Any) -> super::check::Fail {
    path.err(format!(
        "unsupported network filter {:?} ({})",
        shorten(&f.name),
        shorten(&any.type_url)
    ))
}

/// A chain's terminal (last) network filter.
pub(crate) fn terminal(path: &Path, f: &Filter) -> R<Terminal> {
    let tp = path.f("typed_config");
    let any = typed_config(path, f)?;
    if is::<HttpConnectionManager>(any) {
        let m: HttpConnectionManager = unpack(&tp, any)?;
        Ok(Terminal::Http(Arc::new(http_manager(&tp, &m)?)))
    } else if is::<PbTcpProxy>(any) {
        let t: PbTcpProxy = unpack(&tp, any)?;
        Ok(Terminal::Tcp(tcp_proxy(&tp, &t)?))
    } else if is::<PbNetworkRbac>(any) {
        Err(path.err(format!(
            "{:?} is not a terminal filter: a chain ends with http_connection_manager or tcp_proxy",
            shorten(&f.name)
        )))
    } else {
        Err(unsupported_filter(path, f, any))
    }
}

fn http_manager(path: &Path, m: &HttpConnectionManager) -> R<HttpManager> {
    must_be_default!(
        path,
        m,
        add_user_agent,
        tracing,
        http1_safe_max_connection_duration,
        http_protocol_options,
        http2_protocol_options,
        http3_protocol_options,
        server_name,
        server_header_transformation,
        scheme_header_transformation,
        stream_idle_timeout,
        stream_flush_timeout,
        request_timeout,
        request_headers_timeout,
        drain_timeout,
        drain_timeout_jitter,
        delayed_close_timeout,
        access_log,
        access_log_flush_interval,
        flush_access_log_on_new_request,
        access_log_options,
        use_remote_address,
        xff_num_trusted_hops,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        internal_address_config,
        skip_xff_append,
        via,
        generate_request_id,
        preserve_external_request_id,
        always_set_request_id_in_response,
        forward_client_cert_matcher,
        proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        request_id_extension,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        append_local_overload,
        add_proxy_protocol_connection_state,
        forward_proto_config,
        strip_port_mode,
    );
    if enumerated::<CodecType>(&path.f("codec_type"), m.codec_type)? != CodecType::Auto {
        return Err(path.f("codec_type").err("only AUTO is accepted"));
    }
    let routes = match &m.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            let rp = path.f("rds");
            let source = rds
                .config_source
                .as_ref()
                .ok_or_else(|| rp.f("config_source").err("a config source is required"))?;
            tls::config_source(&rp.f("config_source"), source, false)?;
            RouteSource::Rds(name(&rp.f("route_config_name"), &rds.route_config_name)?)
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            let inline = route::route_config_at(&path.f("route_config"), rc)?;
            RouteSource::Inline(Arc::new(inline))
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => return Err(path.f("scoped_routes").unsupported()),
        None => return Err(path.err("rds or route_config is required")),
    };
    let filters = http_filters(&path.f("http_filters"), &m.http_filters)?;
    let mut connect = false;
    let up = path.f("upgrade_configs");
    for (i, u) in list(&up, &m.upgrade_configs)?.iter().enumerate() {
        let p = up.i(i);
        must_be_default!(p, u, filters);
        if !u.upgrade_type.eq_ignore_ascii_case("CONNECT") {
            return Err(p.f("upgrade_type").err(format!(
                "unsupported upgrade {:?} (only CONNECT)",
                shorten(&u.upgrade_type)
            )));
        }
        connect = u.enabled.is_none_or(|e| e.value);
    }
    let fp = path.f("forward_client_cert_details");
    let forward_client_cert =
        match enumerated::<ForwardClientCertDetails>(&fp, m.forward_client_cert_details)? {
            ForwardClientCertDetails::Sanitize => {
                must_be_default!(path, m, set_current_client_cert_details);
                ForwardClientCert::Sanitize
            }
            ForwardClientCertDetails::SanitizeSet => {
                let uri = match &m.set_current_client_cert_details {
                    Some(s) => {
                        let sp = path.f("set_current_client_cert_details");
                        must_be_default!(sp, s, subject, cert, chain, dns, issuer, format);
                        s.uri
                    }
                    None => false,
                };
                ForwardClientCert::SanitizeSet { uri }
            }
            other => {
                return Err(fp.err(format!(
                    "unsupported value {} (only SANITIZE and SANITIZE_SET)",
                    other.as_str_name()
                )));
            }
        };
    let kb = m
        .max_request_headers_kb
        .map_or(DEFAULT_MAX_REQUEST_HEADERS_KB, |v| v.value);
    if kb == 0 || kb > MAX_REQUEST_HEADERS_KB {
        return Err(path
            .f("max_request_headers_kb")
            .err(format!("must be 1 to {MAX_REQUEST_HEADERS_KB}")));
    }
    let idle_timeout = match &m.common_http_protocol_options {
        Some(o) => protocol_options(&path.f("common_http_protocol_options"), o)?,
        None => None,
    };
    Ok(HttpManager {
        stat_prefix: name(&path.f("stat_prefix"), &m.stat_prefix)?,
        routes,
        connect,
        forward_client_cert,
        filters,
        max_request_headers_bytes: kb as usize * 1024,
        idle_timeout,
        path: path_normalization(path, m)?,
    })
}

/// `path_with_escaped_slashes_action`, `normalize_path` (unset: off, Envoy's runtime
/// default) and `merge_slashes`. `path_normalization_options` stays refused.
fn path_normalization(path: &Path, m: &HttpConnectionManager) -> R<PathNormalization> {
    let ap = path.f("path_with_escaped_slashes_action");
    let escaped_slashes = match enumerated::<PathWithEscapedSlashesAction>(
        &ap,
        m.path_with_escaped_slashes_action,
    )? {
        // Envoy's implementation-specific default is KEEP_UNCHANGED.
        PathWithEscapedSlashesAction::ImplementationSpecificDefault
        | PathWithEscapedSlashesAction::KeepUnchanged => EscapedSlashes::Keep,
        PathWithEscapedSlashesAction::RejectRequest => EscapedSlashes::Reject,
        PathWithEscapedSlashesAction::UnescapeAndRedirect => EscapedSlashes::UnescapeAndRedirect,
        PathWithEscapedSlashesAction::UnescapeAndForward => EscapedSlashes::UnescapeAndForward,
    };
    Ok(PathNormalization {
        escaped_slashes,
        normalize: m.normalize_path.as_ref().is_some_and(|b| b.value),
        merge_slashes: m.merge_slashes,
    })
}

/// `common_http_protocol_options`: the idle timeout only (as given: zero disables it).
fn protocol_options(path: &Path, o: &HttpProtocolOptions) -> R<Option<std::time::Duration>> {
    must_be_default!(
        path,
        o,
        max_connection_duration,
        max_connection_duration_jitter,
        max_headers_count,
        max_response_headers_kb,
        max_stream_duration,
        headers_with_underscores_action,
        max_requests_per_connection,
    );
    opt_duration(&path.f("idle_timeout"), o.idle_timeout.as_ref())
}

/// The HTTP filters: RBAC filters, then the router, last; any other filter is refused
/// by name.
fn http_filters(path: &Path, filters: &[PbHttpFilter]) -> R<Vec<HttpFilter>> {
    let mut out = Vec::new();
    let mut router = false;
    for (i, f) in list(path, filters)?.iter().enumerate() {
        let p = path.i(i);
        if router {
            return Err(p.err(format!(
                "{} after the router (the router must be the last HTTP filter)",
                shorten(&f.name)
            )));
        }
        let any = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any))
                if is::<Router>(any) || is::<PbHttpRbac>(any) =>
            {
                any
            }
            _ => {
                return Err(p.err(format!("unsupported filter {}", shorten(&f.name))));
            }
        };
        must_be_default!(p, f, is_optional, disabled);
        let tp = p.f("typed_config");
        if is::<PbHttpRbac>(any) {
            let m: PbHttpRbac = unpack(&tp, any)?;
            out.push(HttpFilter::Rbac(Arc::new(rbac::http_rbac(&tp, &m)?)));
            continue;
        }
        let r: Router = unpack(&tp, any)?;
        must_be_default!(
            tp,
            r,
            dynamic_stats,
            start_child_span,
            upstream_log,
            upstream_log_options,
            suppress_envoy_headers,
            strict_check_headers,
            respect_expected_rq_timeout,
            suppress_grpc_request_failure_code_stats,
            upstream_http_filters,
            reject_connect_request_early_data,
        );
        router = true;
        out.push(HttpFilter::Router);
    }
    if !router {
        return Err(path.err("the router filter is required"));
    }
    Ok(out)
}

fn tcp_proxy(path: &Path, t: &PbTcpProxy) -> R<TcpProxy> {
    must_be_default!(
        path,
        t,
        on_demand,
        metadata_match,
        downstream_idle_timeout,
        upstream_idle_timeout,
        access_log,
        max_connect_attempts,
        backoff_options,
        hash_policy,
        tunneling_config,
        max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage,
        access_log_flush_interval,
        flush_access_log_on_connected,
        access_log_options,
        proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy,
        check_drain_close,
    );
    // rudder-proxy connects the upstream once a downstream TLS handshake is done, which
    // is what ON_DOWNSTREAM_TLS_HANDSHAKE asks (and IMMEDIATE differs from only by when a
    // refused handshake's upstream would have been opened). Waiting for data is not done.
    let mode_path = path.f("upstream_connect_mode");
    match enumerated::<UpstreamConnectMode>(&mode_path, t.upstream_connect_mode)? {
        UpstreamConnectMode::Immediate => {}
        UpstreamConnectMode::OnDownstreamTlsHandshake => {
            if t.max_early_data_bytes.is_none() {
                return Err(path
                    .f("max_early_data_bytes")
                    .err("is required when upstream_connect_mode is not IMMEDIATE"));
            }
        }
        UpstreamConnectMode::OnDownstreamData => return Err(mode_path.unsupported()),
    }
    let cluster = match &t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => name(&path.f("cluster"), c)?,
        Some(ClusterSpecifier::WeightedClusters(_)) => {
            return Err(path.f("weighted_clusters").unsupported());
        }
        None => return Err(path.f("cluster").err("a cluster is required")),
    };
    let idle_timeout = t
        .idle_timeout
        .as_ref()
        .map(|d| duration(&path.f("idle_timeout"), d))
        .transpose()?;
    Ok(TcpProxy {
        stat_prefix: name(&path.f("stat_prefix"), &t.stat_prefix)?,
        cluster,
        idle_timeout,
    })
}
