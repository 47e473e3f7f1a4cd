//! Clusters: discovery (EDS over ADS, STATIC, one DNS host, ORIGINAL_DST), load
//! balancing, connect timeout, transport (TLS, transport socket matches), the upstream
//! HTTP protocol, the retry budget, the source address (`upstream_bind_config`).

use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster as PbCluster, cluster, cluster::TransportSocketMatch,
};
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, SocketAddress, TransportSocket, socket_address::PortSpecifier,
    transport_socket::ConfigType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
};
use envoy_types::pb::google::protobuf::value::Kind;

use super::check::{
    Path, R, each, enumerated, is, is_default, must_be_default, name, opt_duration, shorten, unpack,
};
use super::endpoint::load_assignment;
use super::limits::{MAX_LIST, MAX_NAME};
use super::tls;
use crate::config::cluster::{
    Cluster, Discovery, LbPolicy, LoadAssignment, RetryBudget, Transport, TransportMatch,
    UpstreamProtocol,
};
use crate::config::listener::SecretSource;

/// Envoy's default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The key of the upstream HTTP protocol options.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A `Cluster` resource.
pub(crate) fn cluster(c: &PbCluster) -> R<Cluster> {
    let p = Path::root();
    must_be_default!(
        p,
        c,
        transport_socket_matcher,
        alt_stat_name,
        stats_matcher,
        per_connection_buffer_limit_bytes,
        per_connection_buffer_high_watermark_timeout,
        health_checks,
        upstream_http_protocol_options,
        common_http_protocol_options,
        http_protocol_options,
        http2_protocol_options,
        dns_refresh_rate,
        dns_jitter,
        dns_failure_refresh_rate,
        respect_dns_ttl,
        dns_resolvers,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        wait_for_warm_on_init,
        outlier_detection,
        cleanup_interval,
        lb_subset_config,
        common_lb_config,
        metadata,
        protocol_selection,
        upstream_connection_options,
        close_connections_on_host_health_failure,
        ignore_health_on_host_removal,
        filters,
        load_balancing_policy,
        lrs_server,
        lrs_report_endpoint_metrics,
        track_timeout_budgets,
        upstream_config,
        track_cluster_stats,
        preconnect_policy,
        connection_pool_per_downstream_connection,
        queuing_policies,
    );
    let name = name(&p.f("name"), &c.name)?;
    let ty = match &c.cluster_discovery_type {
        None => cluster::DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => enumerated(&p.f("type"), *t)?,
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => {
            return Err(p.f("cluster_type").unsupported());
        }
    };
    if ty != cluster::DiscoveryType::Eds {
        must_be_default!(p, c, eds_cluster_config);
    }
    if ty != cluster::DiscoveryType::LogicalDns && ty != cluster::DiscoveryType::StrictDns {
        // The lookup family only matters to DNS clusters.
        must_be_default!(p, c, dns_lookup_family);
    }
    let lp = p.f("load_assignment");
    let discovery = match ty {
        cluster::DiscoveryType::Eds => {
            must_be_default!(p, c, load_assignment);
            let ep = p.f("eds_cluster_config");
            let eds = c.eds_cluster_config.clone().unwrap_or_default();
            let source = eds
                .eds_config
                .as_ref()
                .ok_or_else(|| ep.f("eds_config").err("a config source is required"))?;
            if tls::config_source(&ep.f("eds_config"), source, false)? != SecretSource::Ads {
                return Err(ep.f("eds_config").err("only ADS is accepted"));
            }
            let service_name = if eds.service_name.is_empty() {
                name.clone()
            } else {
                super::check::name(&ep.f("service_name"), &eds.service_name)?
            };
            Discovery::Eds { service_name }
        }
        cluster::DiscoveryType::Static => {
            // None: no endpoints (a black hole).
            Discovery::Static(match &c.load_assignment {
                Some(la) => load_assignment(&lp, la, true)?,
                None => LoadAssignment {
                    name: name.clone(),
                    localities: Vec::new(),
                },
            })
        }
        cluster::DiscoveryType::LogicalDns | cluster::DiscoveryType::StrictDns => {
            let la = c
                .load_assignment
                .as_ref()
                .ok_or_else(|| lp.err("a DNS cluster needs a load assignment"))?;
            let (host, port) = super::endpoint::dns_host(&lp, la)?;
            Discovery::Dns { host, port }
        }
        cluster::DiscoveryType::OriginalDst => {
            must_be_default!(p, c, load_assignment);
            let header = match &c.lb_config {
                Some(cluster::LbConfig::OriginalDstLbConfig(o)) => {
                    let op = p.f("original_dst_lb_config");
                    must_be_default!(op, o, upstream_port_override, metadata_key);
                    if o.use_http_header {
                        let h = if o.http_header_name.is_empty() {
                            "x-envoy-original-dst-host".to_string()
                        } else {
                            super::matchers::match_header_name(
                                &op.f("http_header_name"),
                                &o.http_header_name.to_ascii_lowercase(),
                            )?
                        };
                        Some(h)
                    } else {
                        must_be_default!(op, o, http_header_name);
                        None
                    }
                }
                _ => None,
            };
            Discovery::OriginalDst { header }
        }
    };
    let lb_path = p.f("lb_policy");
    let lb = match enumerated::<cluster::LbPolicy>(&lb_path, c.lb_policy)? {
        cluster::LbPolicy::RoundRobin => LbPolicy::RoundRobin,
        cluster::LbPolicy::LeastRequest => LbPolicy::LeastRequest,
        cluster::LbPolicy::ClusterProvided => LbPolicy::ClusterProvided,
        other => {
            return Err(lb_path.err(format!("unsupported policy {}", other.as_str_name())));
        }
    };
    if (lb == LbPolicy::ClusterProvided) != (ty == cluster::DiscoveryType::OriginalDst) {
        return Err(lb_path.err("CLUSTER_PROVIDED goes with (and only with) ORIGINAL_DST"));
    }
    match &c.lb_config {
        None => {}
        Some(cluster::LbConfig::OriginalDstLbConfig(_))
            if ty == cluster::DiscoveryType::OriginalDst => {}
        Some(_) => return Err(p.f("lb_config").unsupported()),
    }
    let transport = match &c.transport_socket {
        Some(t) => transport(&p.f("transport_socket"), t)?,
        None => Transport::Plain,
    };
    let transport_matches = each(
        &p.f("transport_socket_matches"),
        &c.transport_socket_matches,
        MAX_LIST,
        transport_match,
    )?;
    let protocol = protocol(&p.f("typed_extension_protocol_options"), c)?;
    let retry_budget = match &c.circuit_breakers {
        Some(cb) => retry_budget(&p.f("circuit_breakers"), cb)?,
        None => None,
    };
    let max_requests_per_connection = match c.max_requests_per_connection {
        None => None,
        Some(v) if v.value == 0 => None,
        Some(v) => Some(v.value),
    };
    let source = match &c.upstream_bind_config {
        Some(b) => bind_config(&p.f("upstream_bind_config"), b)?,
        None => Vec::new(),
    };
    Ok(Cluster {
        source,
        name,
        discovery,
        lb,
        connect_timeout: opt_duration(&p.f("connect_timeout"), c.connect_timeout.as_ref())?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        transport,
        transport_matches,
        protocol,
        retry_budget,
        max_requests_per_connection,
    })
}

/// `upstream_bind_config`: the source addresses (`source_address`, then
/// `extra_source_addresses`), one per IP family, any port.
fn bind_config(path: &Path, b: &BindConfig) -> R<Vec<IpAddr>> {
    must_be_default!(
        path,
        b,
        freebind,
        socket_options,
        additional_source_addresses,
        local_address_selector
    );
    let sp = path.f("source_address");
    let first = b
        .source_address
        .as_ref()
        .ok_or_else(|| sp.err("a source address is required"))?;
    let mut out = vec![source_ip(&sp, first)?];
    let ep = path.f("extra_source_addresses");
    if b.extra_source_addresses.len() > 1 {
        return Err(ep.err("at most one (the other IP family)"));
    }
    for (i, e) in b.extra_source_addresses.iter().enumerate() {
        let ep = ep.i(i);
        must_be_default!(ep, e, socket_options);
        let a = e
            .address
            .as_ref()
            .ok_or_else(|| ep.f("address").err("an address is required"))?;
        let ip = source_ip(&ep.f("address"), a)?;
        if out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            return Err(ep.err("one source address per IP family"));
        }
        out.push(ip);
    }
    Ok(out)
}

/// A source address: an IP address, port 0 (any).
fn source_ip(path: &Path, s: &SocketAddress) -> R<IpAddr> {
    must_be_default!(
        path,
        s,
        protocol,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath
    );
    match s.port_specifier {
        None | Some(PortSpecifier::PortValue(0)) => {}
        Some(_) => return Err(path.f("port_value").err("only port 0 (any) is accepted")),
    }
    s.address.parse().map_err(|_| {
        path.f("address")
            .err(format!("not an IP address: {:?}", shorten(&s.address)))
    })
}

/// A transport socket: TLS (`UpstreamTlsContext`) or plain (`raw_buffer`).
fn transport(path: &Path, t: &TransportSocket) -> R<Transport> {
    let tp = path.f("typed_config");
    match &t.config_type {
        Some(ConfigType::TypedConfig(any)) if is::<RawBuffer>(any) => {
            let _: RawBuffer = unpack(&tp, any)?;
            Ok(Transport::Plain)
        }
        Some(ConfigType::TypedConfig(any)) => {
            let u: UpstreamTlsContext = unpack(&tp, any)?;
            Ok(Transport::Tls(tls::upstream(&tp, &u)?))
        }
        None => Err(path.err(format!(
            "unsupported transport socket {:?} (no typed config)",
            shorten(&t.name)
        ))),
    }
}

fn transport_match(path: &Path, m: &TransportSocketMatch) -> R<TransportMatch> {
    let mut when = Vec::new();
    if let Some(s) = &m.r#match {
        let mp = path.f("match");
        if s.fields.len() > MAX_LIST {
            return Err(mp.err(format!("at most {MAX_LIST} keys")));
        }
        for (k, v) in &s.fields {
            let value = match &v.kind {
                Some(Kind::StringValue(s)) if s.len() <= MAX_NAME => s.clone(),
                _ => {
                    return Err(mp
                        .key(k)
                        .err("only string values (up to 1 KiB) are matched"));
                }
            };
            when.push((name(&mp.key(k), k)?, value));
        }
        when.sort();
    }
    let t = m.transport_socket.as_ref().ok_or_else(|| {
        path.f("transport_socket")
            .err("a transport socket is required")
    })?;
    Ok(TransportMatch {
        name: name(&path.f("name"), &m.name)?,
        when,
        transport: transport(&path.f("transport_socket"), t)?,
    })
}

/// The upstream HTTP protocol (`typed_extension_protocol_options`), HTTP/1.1 by default.
fn protocol(path: &Path, c: &PbCluster) -> R<UpstreamProtocol> {
    let mut protocol = UpstreamProtocol::Http1;
    for (key, any) in &c.typed_extension_protocol_options {
        let kp = path.key(key);
        if key != HTTP_OPTIONS {
            return Err(kp.err(format!("unsupported protocol options {}", shorten(key))));
        }
        let o: HttpProtocolOptions = unpack(&kp, any)?;
        must_be_default!(
            kp,
            o,
            common_http_protocol_options,
            upstream_http_protocol_options,
            http_filters,
            header_validation_config,
            outlier_detection,
            request_mirror_policies,
            hash_policy,
            retry_policy,
        );
        protocol = match &o.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
                let ep = kp.f("explicit_http_config");
                match &e.protocol_config {
                    Some(ProtocolConfig::HttpProtocolOptions(h)) => {
                        empty(&ep.f("http_protocol_options"), Some(h))?;
                        UpstreamProtocol::Http1
                    }
                    Some(ProtocolConfig::Http2ProtocolOptions(h)) => {
                        empty(&ep.f("http2_protocol_options"), Some(h))?;
                        UpstreamProtocol::Http2
                    }
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(ep.f("http3_protocol_options").unsupported());
                    }
                    None => UpstreamProtocol::Http1,
                }
            }
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
                let dp = kp.f("use_downstream_protocol_config");
                must_be_default!(dp, d, http3_protocol_options);
                empty(
                    &dp.f("http_protocol_options"),
                    d.http_protocol_options.as_ref(),
                )?;
                empty(
                    &dp.f("http2_protocol_options"),
                    d.http2_protocol_options.as_ref(),
                )?;
                UpstreamProtocol::Downstream
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                return Err(kp.f("auto_config").unsupported());
            }
            None => UpstreamProtocol::Http1,
        };
    }
    Ok(protocol)
}

/// Protocol options the proxy takes only as they come by default (`{}`).
fn empty<T: Default + PartialEq>(path: &Path, options: Option<&T>) -> R<()> {
    if options.is_some_and(|o| !is_default(o)) {
        return Err(path.unsupported());
    }
    Ok(())
}

/// `circuit_breakers`: one DEFAULT threshold with a retry budget, nothing else.
fn retry_budget(
    path: &Path,
    cb: &envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers,
) -> R<Option<RetryBudget>> {
    must_be_default!(path, cb, per_host_thresholds);
    let mut budget = None;
    let tp = path.f("thresholds");
    for (i, t) in super::check::list(&tp, &cb.thresholds)?.iter().enumerate() {
        let p = tp.i(i);
        must_be_default!(
            p,
            t,
            priority,
            max_connections,
            max_pending_requests,
            max_requests,
            max_retries,
            track_remaining,
            max_connection_pools,
        );
        if let Some(b) = &t.retry_budget {
            let bp = p.f("retry_budget");
            must_be_default!(bp, b, budget_interval);
            let percent = b.budget_percent.map_or(20.0, |v| v.value);
            if !(0.0..=100.0).contains(&percent) {
                return Err(bp.f("budget_percent").err("must be 0 to 100"));
            }
            budget = Some(RetryBudget {
                percent,
                min_concurrency: b.min_retry_concurrency.map_or(3, |v| v.value),
            });
        }
    }
    Ok(budget)
}
