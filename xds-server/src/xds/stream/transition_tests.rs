//! The xDS spec's subscription transitions ("How the client specifies what resources to
//! return" and "Unsubscribing From Resources"), replayed against both stream machines by a
//! client that keeps what it holds as Envoy does. Each step names the spec's reading and
//! checks what the client holds afterwards, then that a later change reaches it only if
//! it is still subscribed, so a change to either machine cannot regress a transition
//! silently.
//!
//! Resources: Clusters `a` and `b` (a wildcard-capable type), at versions that a change
//! bumps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use xds_types::XdsType::Cluster;

use super::delta::DeltaStream;
use super::sotw::SotwStream;
#[allow(unused_imports)]
use super::test_support::Feed;
use super::test_support::*;

/// Clusters `a` and `b` at `version`.
fn world(version: &str) -> crate::xds::fanout::Desired {
    snap(&[cluster("a", version), cluster("b", version)])
}

/// A delta client: what it holds (name -> version) and what it subscribed to.
struct DeltaClient {
    s: DeltaStream,
    held: BTreeMap<String, String>,
    named: BTreeSet<String>,
    wildcard: bool,
    /// Responses seen, for "was it answered" checks.
    answers: usize,
}

impl DeltaClient {
    fn new() -> Self {
        DeltaClient {
            s: DeltaStream::new(world("1")),
            held: BTreeMap::new(),
            named: BTreeSet::new(),
            wildcard: false,
            answers: 0,
        }
    }

    /// Sends a request subscribing `sub` and unsubscribing `unsub` (the first request of
    /// the stream with both empty is the legacy wildcard).
    fn request(&mut self, sub: &[&str], unsub: &[&str]) {
        let mut req = delta(Cluster, sub, "");
        req.resource_names_unsubscribe = unsub.iter().map(|s| s.to_string()).collect();
        for n in sub {
            match *n {
                "*" => self.wildcard = true,
                n => drop(self.named.insert(n.to_string())),
            }
        }
        if sub.is_empty() && unsub.is_empty() && self.answers == 0 {
            self.wildcard = true;
        }
        for n in unsub {
            match *n {
                // Envoy drops what only the wildcard brought.
                "*" => {
                    self.wildcard = false;
                    let named = &self.named;
                    self.held.retain(|k, _| named.contains(k));
                }
                // Envoy stops using a name it unsubscribed until the server says whether
                // a wildcard still covers it.
                n => {
                    self.named.remove(n);
                    self.held.remove(n);
                }
            }
        }
        let step = self.s.on_request(&req, Instant::now());
        self.apply(step.responses);
    }

    fn change(&mut self, version: &str) {
        let step = self.s.on_snapshot(world(version), Instant::now());
        self.apply(step.responses);
    }

    fn apply(&mut self, mut responses: Vec<crate::xds::wire::frames::DeltaResponse>) {
        while let Some(r) = responses.pop() {
            self.answers += 1;
            for x in r.resources.iter() {
                self.held.insert(x.name.to_string(), x.version.clone());
            }
            for n in &r.removed_resources {
                self.held.remove(&**n);
            }
            let ack = self
                .s
                .on_request(&delta(Cluster, &[], &r.nonce), Instant::now());
            responses.extend(ack.responses);
        }
    }

    fn holds(&self) -> Vec<String> {
        self.held.iter().map(|(n, v)| format!("{n}@{v}")).collect()
    }
}

/// A SotW client: the Clusters it holds (each response is the whole set) and the
/// version and nonce it ACKs with.
struct SotwClient {
    s: SotwStream,
    held: BTreeMap<String, String>,
    names: Vec<String>,
    version: String,
    nonce: String,
}

impl SotwClient {
    fn new() -> Self {
        SotwClient {
            s: SotwStream::new(world("1")),
            held: BTreeMap::new(),
            names: Vec::new(),
            version: String::new(),
            nonce: String::new(),
        }
    }

    /// Sends a request naming exactly `names`.
    fn request(&mut self, names: &[&str]) {
        self.names = names.iter().map(|s| s.to_string()).collect();
        let step = self.s.on_request(&self.req(), Instant::now());
        self.apply(step.responses);
    }

    fn req(&self) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        sotw(Cluster, &names, &self.version, &self.nonce)
    }

    fn change(&mut self, version: &str) {
        let step = self.s.on_snapshot(world(version), Instant::now());
        self.apply(step.responses);
    }

    fn apply(&mut self, mut responses: Vec<crate::xds::wire::frames::SotwResponse>) {
        while let Some(r) = responses.pop() {
            // CDS is a full set: what is not in it is gone.
            self.held = r
                .resources
                .iter()
                .map(|x| (x.name.to_string(), x.version.clone()))
                .collect();
            self.version = r.version_info.clone();
            self.nonce = r.nonce.clone();
            let ack = self.s.on_request(&self.req(), Instant::now());
            responses.extend(ack.responses);
        }
    }

    fn holds(&self) -> Vec<String> {
        self.held.iter().map(|(n, v)| format!("{n}@{v}")).collect()
    }
}

#[test]
fn delta_the_specs_incremental_example() {
    let mut c = DeltaClient::new();
    // Subscribe unset: a subscription to "*".
    c.request(&[], &[]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    // "A": the wildcard continues, and A is added.
    c.request(&["a"], &[]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    c.change("2");
    assert_eq!(c.holds(), ["a@2", "b@2"], "still a wildcard");
    // Unsubscribe "*": A continues, and only A.
    c.request(&[], &["*"]);
    assert_eq!(c.holds(), ["a@2"]);
    c.change("3");
    assert_eq!(c.holds(), ["a@3"], "b is no longer sent");
    // Unsubscribe A: nothing is subscribed, and that is not a wildcard.
    c.request(&[], &["a"]);
    assert!(c.holds().is_empty());
    c.change("4");
    assert!(
        c.holds().is_empty(),
        "an empty set after names is no wildcard"
    );
}

#[test]
fn delta_unsubscribing_a_name_the_wildcard_covers_sends_it_again() {
    let mut c = DeltaClient::new();
    c.request(&["*"], &[]);
    c.request(&["a"], &[]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    let before = c.answers;
    c.request(&[], &["a"]);
    assert!(c.answers > before, "the unsubscribe is answered");
    assert_eq!(
        c.holds(),
        ["a@1", "b@1"],
        "a is still covered by the wildcard"
    );
    c.change("2");
    assert_eq!(c.holds(), ["a@2", "b@2"]);
    // Then unsubscribing the wildcard leaves nothing.
    c.request(&[], &["*"]);
    assert!(c.holds().is_empty());
    c.change("3");
    assert!(c.holds().is_empty());
}

#[test]
fn delta_named_only_then_the_wildcard_added() {
    let mut c = DeltaClient::new();
    c.request(&["a"], &[]);
    assert_eq!(
        c.holds(),
        ["a@1"],
        "a named Cluster subscription is not a wildcard"
    );
    c.change("2");
    assert_eq!(c.holds(), ["a@2"]);
    c.request(&["*"], &[]);
    assert_eq!(c.holds(), ["a@2", "b@2"]);
    // Dropping the name keeps it under the wildcard.
    c.request(&[], &["a"]);
    assert_eq!(c.holds(), ["a@2", "b@2"]);
}

#[test]
fn delta_a_name_that_goes_away_while_unsubscribed_under_the_wildcard_is_removed() {
    let mut c = DeltaClient::new();
    c.request(&["*", "b"], &[]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    // b disappears from the mesh, then the client drops its explicit name.
    let step = c.s.on_snapshot(snap(&[cluster("a", "1")]), Instant::now());
    c.apply(step.responses);
    assert_eq!(c.holds(), ["a@1"]);
    c.request(&[], &["b"]);
    assert_eq!(c.holds(), ["a@1"]);
}

#[test]
fn sotw_the_specs_example() {
    let mut c = SotwClient::new();
    // resource_names unset: a subscription to "*".
    c.request(&[]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    // "*" and "A": the wildcard continues, and A is added.
    c.request(&["*", "a"]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    c.change("2");
    assert_eq!(c.holds(), ["a@2", "b@2"]);
    // "A": the wildcard ends, A continues.
    c.request(&["a"]);
    assert_eq!(c.holds(), ["a@2"]);
    c.change("3");
    assert_eq!(c.holds(), ["a@3"]);
    // Unset again: unsubscribed from everything, not a wildcard.
    c.request(&[]);
    assert!(c.holds().is_empty());
    c.change("4");
    assert!(
        c.holds().is_empty(),
        "an empty list after names is no wildcard"
    );
}

#[test]
fn sotw_named_then_wildcard_then_named_dropped() {
    let mut c = SotwClient::new();
    c.request(&["a"]);
    assert_eq!(c.holds(), ["a@1"]);
    c.request(&["a", "*"]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    // Dropping the name keeps it under the wildcard.
    c.request(&["*"]);
    assert_eq!(c.holds(), ["a@1", "b@1"]);
    c.change("2");
    assert_eq!(c.holds(), ["a@2", "b@2"]);
    c.request(&["b"]);
    assert_eq!(c.holds(), ["b@2"]);
}
