//! Listeners: the address, the listener filters (original destination, TLS inspector),
//! filter chains with their match and TLS, and socket addresses (shared with endpoints).

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain as PbChain, FilterChainMatch, Listener as PbListener, ListenerFilter,
    filter_chain_match::ConnectionSourceType, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;

use super::check::{
    Path, R, each, enumerated, list, must_be_default, name, opt_name, shorten, unpack,
};
use super::limits::{MAX_FILTER_CHAINS, MAX_LIST};
use super::{network, tls};
use crate::config::listener::{ChainMatch, Cidr, FilterChain, Listener, SourceType};

/// A host and port: an IP address, or (when `allow_host`) a DNS name.
pub(crate) enum HostPort {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A host name and port.
    Name(String, u16),
}

/// `core.v3.Address`: a TCP socket address only.
pub(crate) fn socket_address(path: &Path, a: &Address, allow_host: bool) -> R<HostPort> {
    let sp = path.f("socket_address");
    let s = match &a.address {
        Some(address::Address::SocketAddress(s)) => s,
        Some(_) => return Err(path.err("only socket_address is accepted")),
        None => return Err(path.err("an address is required")),
    };
    must_be_default!(
        sp,
        s,
        protocol,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath
    );
    let port = match s.port_specifier {
        Some(PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| sp.f("port_value").err("port out of range"))?
        }
        Some(PortSpecifier::NamedPort(_)) => return Err(sp.f("named_port").unsupported()),
        None => return Err(sp.f("port_value").err("a port is required")),
    };
    match s.address.parse::<IpAddr>() {
        Ok(ip) => Ok(HostPort::Ip(SocketAddr::new(ip, port))),
        Err(_) if allow_host => {
            let host = name(&sp.f("address"), &s.address)?;
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            {
                return Err(sp.f("address").err("not a DNS name"));
            }
            Ok(HostPort::Name(host, port))
        }
        Err(_) => Err(sp
            .f("address")
            .err(format!("not an IP address: {:?}", shorten(&s.address)))),
    }
}

/// An IP socket address.
pub(crate) fn ip_address(path: &Path, a: &Address) -> R<SocketAddr> {
    match socket_address(path, a, false)? {
        HostPort::Ip(s) => Ok(s),
        HostPort::Name(..) => Err(path.err("an IP address is required")),
    }
}

/// `Listener`.
pub(crate) fn listener(l: &PbListener) -> R<Listener> {
    let p = Path::root();
    must_be_default!(
        p,
        l,
        additional_addresses,
        stats_matcher,
        fcds_config,
        filter_chain_matcher,
        use_original_dst,
        per_connection_buffer_limit_bytes,
        per_connection_buffer_high_watermark_timeout,
        deprecated_v1,
        listener_filters_timeout,
        transparent,
        freebind,
        socket_options,
        tcp_fast_open_queue_length,
        udp_listener_config,
        api_listener,
        connection_balance_config,
        enable_reuse_port,
        access_log,
        tcp_backlog_size,
        max_connections_to_accept_per_socket_event,
        bind_to_port,
        enable_mptcp,
        tcp_keepalive,
        listener_specifier,
        stat_prefix,
        metadata,
        drain_type,
        continue_on_listener_filters_timeout,
        traffic_direction,
        reuse_port,
        ignore_global_conn_limit,
        bypass_overload_manager,
    );
    let address = l
        .address
        .as_ref()
        .ok_or_else(|| p.f("address").err("an address is required"))?;
    let address = ip_address(&p.f("address"), address)?;
    let (mut original_dst, mut tls_inspector) = (false, false);
    let lp = p.f("listener_filters");
    for (i, f) in l.listener_filters.iter().enumerate() {
        match listener_filter(&lp.i(i), f)? {
            Known::OriginalDst => original_dst = true,
            Known::TlsInspector => tls_inspector = true,
        }
    }
    let chains = each(
        &p.f("filter_chains"),
        &l.filter_chains,
        MAX_FILTER_CHAINS,
        chain,
    )?;
    unique_matches(&p.f("filter_chains"), &chains)?;
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|c| chain(&p.f("default_filter_chain"), c))
        .transpose()?;
    if chains.is_empty() && default_chain.is_none() {
        return Err(p.f("filter_chains").err("a listener needs a filter chain"));
    }
    Ok(Listener {
        name: name(&p.f("name"), &l.name)?,
        address,
        original_dst,
        tls_inspector,
        chains,
        default_chain,
    })
}

/// Envoy refuses two chains with the same match.
fn unique_matches(path: &Path, chains: &[FilterChain]) -> R<()> {
    let mut seen = std::collections::HashMap::new();
    for (i, c) in chains.iter().enumerate() {
        let m = &c.matcher;
        let mut ranges: Vec<(IpAddr, u8)> =
            m.prefix_ranges.iter().map(|r| (r.addr, r.len)).collect();
        ranges.sort();
        let mut alpn = m.application_protocols.clone();
        alpn.sort();
        let key = (
            m.destination_port,
            ranges,
            m.transport_protocol.clone(),
            alpn,
            m.source_type as u8,
        );
        if let Some(first) = seen.insert(key, i) {
            return Err(path.i(i).f("filter_chain_match").err(format!(
                "the same match as filter_chains[{first}] (multiple filter chains with the same matching rules)"
            )));
        }
    }
    Ok(())
}

enum Known {
    OriginalDst,
    TlsInspector,
}

fn listener_filter(path: &Path, f: &ListenerFilter) -> R<Known> {
    must_be_default!(path, f, filter_disabled);
    let any = match &f.config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => any,
        Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(path.f("config_discovery").unsupported());
        }
        None => {
            return Err(path.err(format!(
                "unsupported listener filter {:?} (no typed config)",
                shorten(&f.name)
            )));
        }
    };
    let tp = path.f("typed_config");
    if super::check::is::<OriginalDst>(any) {
        let c: OriginalDst = unpack(&tp, any)?;
        if c != OriginalDst::default() {
            return Err(tp.unsupported());
        }
        Ok(Known::OriginalDst)
    } else if super::check::is::<TlsInspector>(any) {
        let c: TlsInspector = unpack(&tp, any)?;
        must_be_default!(tp, c, enable_ja3_fingerprinting, initial_read_buffer_size);
        Ok(Known::TlsInspector)
    } else {
        Err(path.err(format!(
            "unsupported listener filter {:?} ({})",
            shorten(&f.name),
            shorten(&any.type_url)
        )))
    }
}

/// One filter chain: its match, its TLS, its network filters (RBAC filters, then one
/// terminal filter, last).
fn chain(path: &Path, c: &PbChain) -> R<FilterChain> {
    must_be_default!(
        path,
        c,
        use_proxy_proto,
        metadata,
        transport_socket_connect_timeout
    );
    let matcher = match &c.filter_chain_match {
        Some(m) => chain_match(&path.f("filter_chain_match"), m)?,
        None => ChainMatch::default(),
    };
    let tls = match &c.transport_socket {
        None => None,
        Some(t) => {
            let tp = path.f("transport_socket");
            match &t.config_type {
                Some(SocketConfig::TypedConfig(any)) => {
                    let ctx: DownstreamTlsContext = unpack(&tp.f("typed_config"), any)?;
                    Some(tls::downstream(&tp.f("typed_config"), &ctx)?)
                }
                None => return Err(tp.err("a downstream transport socket needs a TLS context")),
            }
        }
    };
    let fp = path.f("filters");
    let Some((last, before)) = list(&fp, &c.filters)?.split_last() else {
        return Err(fp.err(
            "a filter chain needs a terminal network filter (http_connection_manager or tcp_proxy)",
        ));
    };
    let filters = before
        .iter()
        .enumerate()
        .map(|(i, f)| network::filter_before_terminal(&fp.i(i), f))
        .collect::<R<Vec<_>>>()?;
    Ok(FilterChain {
        name: opt_name(&path.f("name"), &c.name)?,
        matcher,
        tls,
        filters,
        terminal: network::terminal(&fp.i(before.len()), last)?,
    })
}

fn chain_match(path: &Path, m: &FilterChainMatch) -> R<ChainMatch> {
    must_be_default!(
        path,
        m,
        address_suffix,
        suffix_len,
        direct_source_prefix_ranges,
        source_prefix_ranges,
        source_ports,
        server_names,
    );
    let destination_port = m
        .destination_port
        .map(|p| {
            u16::try_from(p.value)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| path.f("destination_port").err("port out of range"))
        })
        .transpose()?;
    let prefix_ranges = each(
        &path.f("prefix_ranges"),
        &m.prefix_ranges,
        MAX_LIST,
        |p, r| {
            let addr: IpAddr = r
                .address_prefix
                .parse()
                .map_err(|_| p.f("address_prefix").err("not an IP address"))?;
            let width = if addr.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.map_or(0, |l| l.value);
            let len = u8::try_from(len)
                .ok()
                .filter(|l| *l <= width)
                .ok_or_else(|| p.f("prefix_len").err(format!("at most {width}")))?;
            Ok(Cidr { addr, len })
        },
    )?;
    let transport_protocol = match m.transport_protocol.as_str() {
        "" => None,
        t @ ("tls" | "raw_buffer") => Some(t.to_string()),
        other => {
            return Err(path
                .f("transport_protocol")
                .err(format!("unknown transport protocol {:?}", shorten(other))));
        }
    };
    let application_protocols = each(
        &path.f("application_protocols"),
        &m.application_protocols,
        MAX_LIST,
        |p, a| name(p, a),
    )?;
    let source_type =
        match enumerated::<ConnectionSourceType>(&path.f("source_type"), m.source_type)? {
            ConnectionSourceType::Any => SourceType::Any,
            ConnectionSourceType::SameIpOrLoopback => SourceType::SameIpOrLoopback,
            ConnectionSourceType::External => SourceType::External,
        };
    Ok(ChainMatch {
        destination_port,
        prefix_ranges,
        transport_protocol,
        application_protocols,
        source_type,
    })
}
