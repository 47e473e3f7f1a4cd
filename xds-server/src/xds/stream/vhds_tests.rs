//! Virtual hosts apart (VHDS) on the delta stream: made before and broken before their
//! clusters, kept across a reconnect, left to leave with a table the view lacks, and
//! sent again for a table the proxy takes anew.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use translator::encoded::Encoded;
use xds_types::XdsType;
use xds_types::XdsType::{Cluster, Endpoint, Route};

use super::delta::DeltaStream;
use super::delta_tests::{ack, items, removed_of, strs, subscribe_and_ack};
use super::test_support::*;

#[test]
fn virtual_hosts_apart_are_made_before_and_broken_before_their_clusters() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let vhost = |v: &str, clusters: &[&str]| res(VirtualHost, "outbound-vhds/b:80", v, clusters);
    let mut s = DeltaStream::new(snap(&[cluster("a", "1"), cla("a", "1"), table()]));
    subscribe_and_ack(
        &mut s,
        &[
            (Cluster, &[]),
            (Endpoint, &["a"]),
            (Route, &[APART]),
            (VirtualHost, &[]),
        ],
    );
    // A new Service: its cluster first; its host once the cluster is held, right behind
    // its endpoints.
    let with_b = [
        cluster("a", "1"),
        cla("a", "1"),
        table(),
        cluster("b", "1"),
        cla("b", "1"),
        vhost("1", &["b"]),
    ];
    let step = s.on_snapshot(snap(&with_b), now);
    assert_eq!(step.responses.len(), 1, "the host waits");
    assert_eq!(step.responses[0].type_url, Cluster.type_url());
    let cds = step.responses[0].clone();
    assert!(
        ack(&mut s, &cds).responses.is_empty(),
        "endpoints neither held nor sent yet"
    );
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Endpoint.type_url(), VirtualHost.type_url()]);
    assert_eq!(items(&step.responses[1]), ["outbound-vhds/b:80@1"]);
    ack(&mut s, &step.responses[0]);
    ack(&mut s, &step.responses[1]);
    // The Service goes: its host is removed first, its cluster once that is ACKed.
    let step = s.on_snapshot(snap(&[cluster("a", "1"), cla("a", "1"), table()]), now);
    assert_eq!(
        step.responses.len(),
        1,
        "the cluster stays while the host is held"
    );
    assert_eq!(step.responses[0].type_url, VirtualHost.type_url());
    assert_eq!(
        strs(&step.responses[0].removed_resources),
        ["outbound-vhds/b:80"]
    );
    let step = ack(&mut s, &step.responses[0]);
    assert_eq!(removed_of(&step, Cluster), ["b"]);
}

#[test]
fn a_reconnecting_proxy_keeps_the_hosts_it_holds() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let v = |n: &str, ver: &str| res(VirtualHost, n, ver, &[]);
    let mut s = DeltaStream::new(snap(&[
        table(),
        v("outbound-vhds/a", "1"),
        v("outbound-vhds/b", "2"),
    ]));
    let r = s
        .on_request(&reconnect(Route, &[APART], &[(APART, "1")]), now)
        .responses;
    assert!(r.is_empty(), "the table is held: {r:?}");
    let req = reconnect(
        VirtualHost,
        &["*"],
        &[
            ("outbound-vhds/a", "1"),
            ("outbound-vhds/b", "1"),
            ("outbound-vhds/gone", "1"),
        ],
    );
    let r = s.on_request(&req, now).responses.remove(0);
    assert_eq!(items(&r), ["outbound-vhds/b@2"]);
    assert_eq!(strs(&r.removed_resources), ["outbound-vhds/gone"]);
}

/// The table that asks for hosts apart, at version 1.
fn table() -> Arc<Encoded> {
    res(Route, APART, "1", &[])
}

const APART: &str = xds_types::names::OUTBOUND_ROUTE_APART;

/// A reconnecting proxy's first request for `kind`: `names`, holding `held`.
fn reconnect(kind: XdsType, names: &[&str], held: &[(&str, &str)]) -> DeltaDiscoveryRequest {
    let mut req = delta(kind, names, "");
    req.initial_resource_versions = held
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    req
}

/// Moved back to the whole table (a rollout with `--vhds false`), a proxy still routes
/// by the table apart and its hosts on the connections its old listener drains: the
/// hosts are not removed one by one, they leave with their table.
#[test]
fn hosts_of_a_table_the_view_lacks_are_left_to_leave_with_it() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let whole = res(Route, xds_types::names::OUTBOUND_ROUTE, "1", &[]);
    let mut s = DeltaStream::new(snap(&[whole]));
    let r = s
        .on_request(&reconnect(Route, &[APART], &[(APART, "1")]), now)
        .responses;
    assert_eq!(r.len(), 1);
    assert_eq!(strs(&r[0].removed_resources), [APART], "Envoy ignores this");
    ack(&mut s, &r[0]);
    let req = reconnect(VirtualHost, &["*"], &[("outbound-vhds/a", "1")]);
    let r = s.on_request(&req, now).responses;
    assert!(r.is_empty(), "no host removed: {r:?}");
    // Its own hosts still go when they go (a table named otherwise, from the view).
    let step = s.on_request(&reconnect(Route, &["outbound"], &[]), now);
    assert_eq!(items(&step.responses[0]), ["outbound@1"]);
}

/// Envoy's VHDS subscription outlives a table: a proxy moved away from hosts apart and
/// back claims, on reconnect, hosts of a table it no longer holds. The watch the new
/// table makes has not seen them: they are sent once the table is taken.
#[test]
fn hosts_claimed_for_a_table_taken_anew_are_sent_after_it() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let host = res(VirtualHost, "outbound-vhds/a", "1", &[]);
    let mut s = DeltaStream::new(snap(&[table(), host]));
    let r = s
        .on_request(&reconnect(Route, &["outbound"], &[("outbound", "9")]), now)
        .responses;
    assert_eq!(strs(&r[0].removed_resources), ["outbound"]);
    ack(&mut s, &r[0]);
    let req = reconnect(VirtualHost, &["*"], &[("outbound-vhds/a", "1")]);
    assert!(s.on_request(&req, now).responses.is_empty(), "claimed");
    // The new listener names the table apart: it is sent, then the hosts.
    let step = s.on_request(&delta(Route, &[APART], ""), now);
    assert_eq!(items(&step.responses[0]), ["outbound-vhds@1"]);
    let step = ack(&mut s, &step.responses[0]);
    assert_eq!(step.responses.len(), 1, "{:?}", step.responses);
    assert_eq!(items(&step.responses[0]), ["outbound-vhds/a@1"]);
    // Sent by this stream, they are not sent again when the table changes.
    ack(&mut s, &step.responses[0]);
    let newer = res(Route, APART, "2", &[]);
    let host = res(VirtualHost, "outbound-vhds/a", "1", &[]);
    let step = s.on_snapshot(snap(&[newer, host]), now);
    assert_eq!(items(&step.responses[0]), ["outbound-vhds@2"]);
    assert!(ack(&mut s, &step.responses[0]).responses.is_empty());
}

/// A host sent before its table is lost (Envoy has no watch for it yet): a fresh proxy's
/// hosts go once it holds the table, and so does a host it claims at another version for
/// a table it does not hold.
#[test]
fn a_host_waits_for_its_table() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let host = |n: &str| res(VirtualHost, n, "1", &[]);
    let (a, b) = ("outbound-vhds/a", "outbound-vhds/b");
    // Fresh: Envoy asks for the hosts as it takes the table, before its ACK.
    let mut s = DeltaStream::new(snap(&[table(), host(a), host(b)]));
    let rds = s.on_request(&delta(Route, &[APART], ""), now).responses;
    assert_eq!(items(&rds[0]), ["outbound-vhds@1"]);
    let r = s.on_request(&delta(VirtualHost, &[], ""), now).responses;
    assert!(r.is_empty(), "the table is not held yet: {r:?}");
    let step = ack(&mut s, &rds[0]);
    assert_eq!(
        items(&step.responses[0]),
        ["outbound-vhds/a@1", "outbound-vhds/b@1"]
    );
    // Reconnecting with a claim at another version, for a table it does not hold.
    let mut s = DeltaStream::new(snap(&[table(), host(a)]));
    let r = s.on_request(&reconnect(VirtualHost, &[], &[(a, "0")]), now);
    assert!(r.responses.is_empty(), "{:?}", r.responses);
    let rds = s.on_request(&delta(Route, &[APART], ""), now).responses;
    let step = ack(&mut s, &rds[0]);
    assert_eq!(items(&step.responses[0]), ["outbound-vhds/a@1"]);
}

/// On reconnect the host request can come before the table's: hosts that waited for the
/// table go once it is claimed, at their current versions.
#[test]
fn hosts_wait_for_a_table_claimed_after_them() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let (a, b) = ("outbound-vhds/a", "outbound-vhds/b");
    let mut s = DeltaStream::new(snap(&[
        table(),
        res(VirtualHost, a, "2", &[]),
        res(VirtualHost, b, "1", &[]),
    ]));
    let r = s.on_request(&reconnect(VirtualHost, &[], &[(a, "1")]), now);
    assert!(
        r.responses.is_empty(),
        "the table is not held: {:?}",
        r.responses
    );
    let r = s.on_request(&reconnect(Route, &[APART], &[(APART, "1")]), now);
    assert_eq!(r.responses.len(), 1, "{:?}", r.responses);
    assert_eq!(
        items(&r.responses[0]),
        ["outbound-vhds/a@2", "outbound-vhds/b@1"]
    );
}

/// A table the proxy refuses makes no watch: its hosts do not go.
#[test]
fn a_refused_table_takes_no_hosts() {
    use xds_types::XdsType::VirtualHost;
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[
        table(),
        res(VirtualHost, "outbound-vhds/a", "1", &[]),
    ]));
    let rds = s.on_request(&delta(Route, &[APART], ""), now).responses;
    assert!(
        s.on_request(&delta(VirtualHost, &[], ""), now)
            .responses
            .is_empty()
    );
    let step = s.on_request(&delta_nack(Route, &rds[0].nonce, "bad table"), now);
    assert!(step.responses.is_empty(), "{:?}", step.responses);
}
