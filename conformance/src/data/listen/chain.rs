//! Filter chain selection as Envoy's filter chain manager does it: the criteria are
//! taken in order (destination port, destination IP by longest prefix, transport
//! protocol, application protocols, source type), and at each step only the most
//! specific matching value's chains go on; a wildcard is taken only when no specific
//! value matches. There is no backtracking: when the chosen subset has no chain
//! matching a later step, the listener's default chain (or none) applies.

use std::net::{IpAddr, SocketAddr};

use crate::config::listener::{FilterChain, Listener, SourceType};

/// What a connection looks like to the chain matcher.
#[derive(Clone, Debug)]
pub struct ConnFacts {
    /// The (original) destination.
    pub destination: SocketAddr,
    /// The peer.
    pub source: SocketAddr,
    /// `tls` or `raw_buffer` (also when no TLS inspector ran, as in Envoy); none matches
    /// only chains without a transport.
    pub transport: Option<&'static str>,
    /// ALPN values the client offered, in its order.
    pub alpn: Vec<String>,
}

/// The chain for `facts`: the best match, else the default chain, else none.
pub fn select<'a>(listener: &'a Listener, facts: &ConnFacts) -> Option<&'a FilterChain> {
    let chains: Vec<&FilterChain> = listener.chains.iter().collect();
    let chains = by_port(chains, facts.destination.port());
    let chains = by_prefix(chains, facts.destination.ip());
    let chains = by_transport(chains, facts.transport);
    let chains = by_alpn(chains, &facts.alpn);
    let chains = by_source(chains, is_local(facts.source.ip(), facts.destination.ip()));
    chains
        .into_iter()
        .next()
        .or(listener.default_chain.as_ref())
}

/// Envoy's `SAME_IP_OR_LOOPBACK`: the source is a loopback address or the
/// destination's own address.
pub fn is_local(source: IpAddr, destination: IpAddr) -> bool {
    source.is_loopback() || source == destination
}

/// The chains with this exact value if any, else those with no value.
fn exact_or_wildcard<T: PartialEq>(
    chains: Vec<&FilterChain>,
    key: impl Fn(&FilterChain) -> Option<T>,
    value: Option<T>,
) -> Vec<&FilterChain> {
    if let Some(v) = value {
        let exact: Vec<_> = chains
            .iter()
            .copied()
            .filter(|c| key(c).as_ref() == Some(&v))
            .collect();
        if !exact.is_empty() {
            return exact;
        }
    }
    chains.into_iter().filter(|c| key(c).is_none()).collect()
}

fn by_port(chains: Vec<&FilterChain>, port: u16) -> Vec<&FilterChain> {
    exact_or_wildcard(chains, |c| c.matcher.destination_port, Some(port))
}

fn by_prefix(chains: Vec<&FilterChain>, ip: IpAddr) -> Vec<&FilterChain> {
    // Specificity of a chain for `ip`: its longest matching prefix; no ranges is the
    // wildcard (as long as a /0); ranges none of which matches exclude it.
    let specificity = |c: &FilterChain| -> Option<i16> {
        if c.matcher.prefix_ranges.is_empty() {
            return Some(-1);
        }
        c.matcher
            .prefix_ranges
            .iter()
            .filter(|r| r.contains(ip))
            .map(|r| i16::from(r.len))
            .max()
    };
    let best = chains.iter().filter_map(|c| specificity(c)).max();
    // An explicit /0 and no ranges are the same entry in Envoy's trie.
    let norm = |s: i16| s.max(0);
    match best {
        None => Vec::new(),
        Some(b) => chains
            .into_iter()
            .filter(|c| specificity(c).map(norm) == Some(norm(b)))
            .collect(),
    }
}

fn by_transport<'a>(
    chains: Vec<&'a FilterChain>,
    transport: Option<&'static str>,
) -> Vec<&'a FilterChain> {
    exact_or_wildcard(
        chains,
        |c| c.matcher.transport_protocol.clone(),
        transport.map(str::to_string),
    )
}

fn by_alpn<'a>(chains: Vec<&'a FilterChain>, offered: &[String]) -> Vec<&'a FilterChain> {
    for p in offered {
        let with: Vec<_> = chains
            .iter()
            .copied()
            .filter(|c| c.matcher.application_protocols.contains(p))
            .collect();
        if !with.is_empty() {
            return with;
        }
    }
    chains
        .into_iter()
        .filter(|c| c.matcher.application_protocols.is_empty())
        .collect()
}

fn by_source(chains: Vec<&FilterChain>, local: bool) -> Vec<&FilterChain> {
    let want = if local {
        SourceType::SameIpOrLoopback
    } else {
        SourceType::External
    };
    exact_or_wildcard(
        chains,
        |c| (c.matcher.source_type != SourceType::Any).then_some(c.matcher.source_type),
        Some(want),
    )
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
