//! One version of a bound listener: its configuration and a [`Drain`] per filter chain,
//! and what an update keeps and drains, as Envoy's listener manager decides it.
//!
//! An update equal to the running configuration (a state-of-the-world resend, say) is
//! no update: nothing drains. When only the filter chains changed (the listener's own
//! settings are equal), it is Envoy's in-place filter chain update: a chain equal to one
//! of the previous version keeps that chain's drain, so its connections go on; the
//! connections of the chains that changed or went away drain. When the listener's own
//! settings changed (its filters, its address), every chain of the previous version
//! drains. "Equal" is the converted configuration's equality: a change Rudder does not
//! act on (an ignored field) drains nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::listener::{FilterChain, Listener};

use crate::data::drain::Drain;

/// A listener's configuration as connections are accepted under it, with its chains'
/// drains.
#[derive(Debug)]
pub(crate) struct Version {
    pub(crate) listener: Arc<Listener>,
    /// One per chain of `listener.chains`, then the default chain's (if any).
    drains: Vec<Drain>,
}

/// What an update did.
#[derive(Debug)]
pub(crate) struct Updated {
    /// The version to accept new connections under.
    pub(crate) version: Version,
    /// The previous version's drains to start: its chains that changed or went away.
    pub(crate) retired: Vec<Drain>,
    /// Only filter chains changed (Envoy's `listener_in_place_updated`).
    pub(crate) in_place: bool,
}

/// The chains of `l` in drain order: `chains`, then the default chain.
fn slots(l: &Listener) -> impl Iterator<Item = &FilterChain> {
    l.chains.iter().chain(&l.default_chain)
}

/// Whether `a` and `b` differ only in their filter chains.
fn same_but_chains(a: &Listener, b: &Listener) -> bool {
    // Exhaustive on purpose: a new listener field must be considered here.
    let Listener {
        name,
        address,
        original_dst,
        tls_inspector,
        chains: _,
        default_chain: _,
    } = a;
    *name == b.name
        && *address == b.address
        && *original_dst == b.original_dst
        && *tls_inspector == b.tls_inspector
}

impl Version {
    /// The first version of a newly bound listener: nothing drains.
    pub(crate) fn new(listener: Arc<Listener>) -> Version {
        let drains = slots(&listener).map(|_| Drain::default()).collect();
        Version { listener, drains }
    }

    /// The drain of `chain`, one of this version's chains (as `select` returned it).
    pub(crate) fn drain_of(&self, chain: &FilterChain) -> Drain {
        slots(&self.listener)
            .position(|c| std::ptr::eq(c, chain))
            .and_then(|i| self.drains.get(i))
            .cloned()
            // Not one of ours (cannot happen): a drain of its own, never started.
            .unwrap_or_default()
    }

    /// Every chain's drain (the listener goes away).
    pub(crate) fn drains(&self) -> &[Drain] {
        &self.drains
    }

    /// The version for `next`, or none when `next` equals this configuration.
    pub(crate) fn update(&self, next: Arc<Listener>) -> Option<Updated> {
        if *next == *self.listener {
            return None;
        }
        if !same_but_chains(&self.listener, &next) {
            return Some(Updated {
                version: Version::new(next),
                retired: self.drains.clone(),
                in_place: false,
            });
        }
        // Equal chains have equal names: look among the same-named ones only.
        let mut unclaimed: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in slots(&self.listener).enumerate() {
            unclaimed.entry(c.name.as_str()).or_default().push(i);
        }
        let old: Vec<&FilterChain> = slots(&self.listener).collect();
        let mut kept = vec![false; old.len()];
        let drains = slots(&next)
            .map(|c| {
                let candidates = unclaimed.get_mut(c.name.as_str());
                let found = candidates.and_then(|list| {
                    let at = list.iter().position(|&i| old.get(i) == Some(&c))?;
                    Some(list.remove(at))
                });
                match found.and_then(|i| Some((i, self.drains.get(i)?))) {
                    Some((i, d)) => {
                        kept[i] = true;
                        d.clone()
                    }
                    None => Drain::default(),
                }
            })
            .collect();
        let retired = self
            .drains
            .iter()
            .zip(&kept)
            .filter(|(_, k)| !**k)
            .map(|(d, _)| d.clone())
            .collect();
        Some(Updated {
            version: Version {
                listener: next,
                drains,
            },
            retired,
            in_place: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::listener::{ChainMatch, TcpProxy, Terminal};

    fn chain(name: &str, cluster: &str) -> FilterChain {
        FilterChain {
            name: name.into(),
            matcher: ChainMatch::default(),
            tls: None,
            filters: Vec::new(),
            terminal: Terminal::Tcp(TcpProxy {
                stat_prefix: name.into(),
                cluster: cluster.into(),
                idle_timeout: None,
            }),
        }
    }

    fn listener(chains: Vec<FilterChain>, default_chain: Option<FilterChain>) -> Arc<Listener> {
        Arc::new(Listener {
            name: "inbound".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 15006)),
            original_dst: false,
            tls_inspector: false,
            chains,
            default_chain,
        })
    }

    #[test]
    fn an_equal_resend_is_no_update() {
        let v = Version::new(listener(vec![chain("a", "x")], None));
        let again = listener(vec![chain("a", "x")], None);
        assert!(!Arc::ptr_eq(&v.listener, &again));
        assert!(v.update(again).is_none());
    }

    #[test]
    fn only_changed_or_removed_chains_drain_and_equal_ones_keep_their_drain() {
        let v = Version::new(listener(
            vec![chain("a", "x"), chain("b", "x"), chain("c", "x")],
            Some(chain("d", "x")),
        ));
        let (a, b, c, d) = (
            v.drains[0].clone(),
            v.drains[1].clone(),
            v.drains[2].clone(),
            v.drains[3].clone(),
        );
        // `b` changes, `c` goes, `a` moves behind a new `e`, the default is unchanged.
        let next = listener(
            vec![chain("e", "x"), chain("a", "x"), chain("b", "y")],
            Some(chain("d", "x")),
        );
        let up = v.update(next).expect("changed");
        assert!(up.in_place);
        let n = &up.version;
        let of = |i: usize| n.drain_of(n.listener.chains.get(i).expect("chain"));
        assert!(of(1).same(&a), "a is unchanged");
        assert!(!of(0).same(&a) && !of(0).same(&b), "e is new");
        assert!(!of(2).same(&b), "b changed");
        let default = n.drain_of(n.listener.default_chain.as_ref().expect("default"));
        assert!(default.same(&d));
        assert_eq!(up.retired.len(), 2);
        assert!(up.retired.iter().any(|r| r.same(&b)));
        assert!(up.retired.iter().any(|r| r.same(&c)));
    }

    #[test]
    fn patterns_compare_by_source() {
        use crate::config::listener::{
            DownstreamTls, SecretRef, SecretSource, StringMatch, Validation,
        };
        let ads = |name: &str| SecretRef {
            name: name.into(),
            source: SecretSource::Ads,
        };
        let with_san = |p: &str| {
            let mut c = chain("a", "x");
            c.tls = Some(DownstreamTls {
                certificate: ads("default"),
                validation: Some(Validation {
                    trust: ads("ROOTCA"),
                    uri_sans: vec![StringMatch::Regex(Arc::new(
                        regex::Regex::new(p).expect("pattern"),
                    ))],
                }),
                require_client_certificate: true,
                alpn: vec![],
            });
            listener(vec![c], None)
        };
        let v = Version::new(with_san("^spiffe://td/.*$"));
        assert!(v.update(with_san("^spiffe://td/.*$")).is_none());
        assert!(v.update(with_san("^spiffe://other/.*$")).is_some());
    }

    #[test]
    fn a_change_outside_the_chains_drains_every_chain() {
        let v = Version::new(listener(vec![chain("a", "x")], Some(chain("d", "x"))));
        let mut next = (*listener(vec![chain("a", "x")], Some(chain("d", "x")))).clone();
        next.tls_inspector = true;
        let up = v.update(Arc::new(next)).expect("changed");
        assert!(!up.in_place);
        assert_eq!(up.retired.len(), 2);
        let n = &up.version;
        assert!(!n.drain_of(&n.listener.chains[0]).same(&v.drains[0]));
    }
}
