use std::net::SocketAddr;

use crate::config::listener::{
    ChainMatch, Cidr, FilterChain, Listener, SourceType, TcpProxy, Terminal,
};

use super::*;

fn chain(name: &str, m: ChainMatch) -> FilterChain {
    FilterChain {
        name: name.into(),
        matcher: m,
        tls: None,
        filters: Vec::new(),
        terminal: Terminal::Tcp(TcpProxy {
            stat_prefix: name.into(),
            cluster: name.into(),
            idle_timeout: None,
        }),
    }
}

fn cidr(s: &str) -> Cidr {
    let (a, l) = s.split_once('/').unwrap();
    Cidr {
        addr: a.parse().unwrap(),
        len: l.parse().unwrap(),
    }
}

fn listener(chains: Vec<FilterChain>, default: bool) -> Listener {
    Listener {
        name: "l".into(),
        address: "0.0.0.0:15001".parse().unwrap(),
        original_dst: true,
        tls_inspector: true,
        chains,
        default_chain: default.then(|| chain("default", ChainMatch::default())),
    }
}

fn facts(dst: &str, src: &str, transport: Option<&'static str>, alpn: &[&str]) -> ConnFacts {
    ConnFacts {
        destination: dst.parse::<SocketAddr>().unwrap(),
        source: src.parse::<SocketAddr>().unwrap(),
        transport,
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
    }
}

fn pick(l: &Listener, f: &ConnFacts) -> Option<String> {
    select(l, f).map(|c| c.name.clone())
}

#[test]
fn port_beats_prefix_and_there_is_no_backtracking() {
    let l = listener(
        vec![
            chain(
                "port80",
                ChainMatch {
                    destination_port: Some(80),
                    prefix_ranges: vec![cidr("10.96.0.10/32")],
                    ..Default::default()
                },
            ),
            chain(
                "pod",
                ChainMatch {
                    prefix_ranges: vec![cidr("10.1.3.1/32")],
                    ..Default::default()
                },
            ),
        ],
        true,
    );
    let ext = "10.1.9.9:5555";
    assert_eq!(
        pick(&l, &facts("10.96.0.10:80", ext, None, &[])).as_deref(),
        Some("port80")
    );
    assert_eq!(
        pick(&l, &facts("10.1.3.1:9999", ext, None, &[])).as_deref(),
        Some("pod")
    );
    // Port 80 has a chain, so only port-80 chains are considered: 10.1.3.1:80 does
    // not fall back to the port-less `pod` chain but to the default.
    assert_eq!(
        pick(&l, &facts("10.1.3.1:80", ext, None, &[])).as_deref(),
        Some("default")
    );
    let no_default = listener(l.chains.clone(), false);
    assert_eq!(
        pick(&no_default, &facts("10.9.9.9:1", ext, None, &[])),
        None
    );
}

#[test]
fn the_longest_prefix_wins_and_a_slash_zero_equals_no_range() {
    let l = listener(
        vec![
            chain(
                "wide",
                ChainMatch {
                    prefix_ranges: vec![cidr("10.0.0.0/8")],
                    ..Default::default()
                },
            ),
            chain(
                "narrow",
                ChainMatch {
                    prefix_ranges: vec![cidr("10.1.0.0/16"), cidr("192.168.0.0/16")],
                    ..Default::default()
                },
            ),
            chain("any", ChainMatch::default()),
        ],
        false,
    );
    let src = "10.2.2.2:1";
    assert_eq!(
        pick(&l, &facts("10.1.2.3:80", src, None, &[])).as_deref(),
        Some("narrow")
    );
    assert_eq!(
        pick(&l, &facts("10.2.2.3:80", src, None, &[])).as_deref(),
        Some("wide")
    );
    assert_eq!(
        pick(&l, &facts("172.16.0.1:80", src, None, &[])).as_deref(),
        Some("any")
    );
    assert_eq!(
        pick(&l, &facts("[fd00::1]:80", "[fd00::2]:1", None, &[])).as_deref(),
        Some("any")
    );
}

#[test]
fn transport_then_alpn_then_source_type() {
    let tls = |name: &str, alpn: &[&str]| {
        chain(
            name,
            ChainMatch {
                transport_protocol: Some("tls".into()),
                application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
    };
    let l = listener(
        vec![
            tls("tls-h2", &["h2"]),
            tls("tls-any", &[]),
            chain(
                "raw",
                ChainMatch {
                    transport_protocol: Some("raw_buffer".into()),
                    ..Default::default()
                },
            ),
        ],
        false,
    );
    let src = "10.0.0.2:1";
    let dst = "10.0.0.1:8080";
    assert_eq!(
        pick(&l, &facts(dst, src, Some("tls"), &["h2", "http/1.1"])).as_deref(),
        Some("tls-h2")
    );
    assert_eq!(
        pick(&l, &facts(dst, src, Some("tls"), &["http/1.1", "h2"])).as_deref(),
        Some("tls-h2")
    );
    assert_eq!(
        pick(&l, &facts(dst, src, Some("tls"), &["http/1.1"])).as_deref(),
        Some("tls-any")
    );
    assert_eq!(
        pick(&l, &facts(dst, src, Some("raw_buffer"), &[])).as_deref(),
        Some("raw")
    );
    // Only transport-less chains match an unknown transport.
    assert_eq!(pick(&l, &facts(dst, src, None, &[])), None);

    let s = listener(
        vec![
            chain(
                "local",
                ChainMatch {
                    destination_port: Some(15001),
                    source_type: SourceType::SameIpOrLoopback,
                    ..Default::default()
                },
            ),
            chain(
                "external",
                ChainMatch {
                    destination_port: Some(15001),
                    source_type: SourceType::External,
                    ..Default::default()
                },
            ),
        ],
        false,
    );
    assert_eq!(
        pick(&s, &facts("10.0.0.1:15001", "127.0.0.1:9", None, &[])).as_deref(),
        Some("local")
    );
    assert_eq!(
        pick(&s, &facts("10.0.0.1:15001", "10.0.0.1:9", None, &[])).as_deref(),
        Some("local")
    );
    assert_eq!(
        pick(&s, &facts("10.0.0.1:15001", "10.0.0.7:9", None, &[])).as_deref(),
        Some("external")
    );
}

#[test]
fn cidr_contains_by_family_and_length() {
    assert!(cidr("10.1.3.1/32").contains("10.1.3.1".parse().unwrap()));
    assert!(!cidr("10.1.3.1/32").contains("10.1.3.2".parse().unwrap()));
    assert!(cidr("10.0.0.0/8").contains("10.255.0.1".parse().unwrap()));
    assert!(cidr("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
    assert!(!cidr("0.0.0.0/0").contains("::1".parse().unwrap()));
    assert!(cidr("fd00::/8").contains("fd12::1".parse().unwrap()));
    assert!(!cidr("10.0.0.0/40").contains("10.0.0.1".parse().unwrap()));
}
