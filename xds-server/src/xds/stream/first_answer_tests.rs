//! The first answers and subscriptions that go by the view's own lists and names
//! (`ViewVersion::list`, `Desired::covered_by`): what they send, hold and weigh is what the
//! general path gives, and they are taken when they should be.

use std::time::Instant;

use xds_types::XdsType::{Cluster, Endpoint};

use super::Event;
use super::delta::DeltaStream;
use super::delta_tests::{ack, items};
use super::test_support::*;

/// A first answer that is the view's whole list (a sidecar's endpoints; every cluster, for
/// a proxy with none of its own) is the view's one list, the same for every stream: held
/// as the view holds it, and its policy objects learnt once. A part of it is a list of
/// its own.
#[test]
fn a_first_answer_of_the_whole_view_is_the_views_one_list() {
    use std::sync::Arc;
    use translator::encoded::Source;
    use translator::model::{Kind, ObjectKey};
    let now = Instant::now();
    let src = |kind, name: &str, rev| Source {
        key: ObjectKey::new(kind, "default", name),
        rev,
    };
    let policy = src(Kind::RetryPolicy, "retry", 3);
    let mut clusters: Vec<_> = (0..100)
        .map(|i| cluster(&format!("c{i:03}"), "1"))
        .collect();
    let mut with_policy = (*clusters[7]).clone();
    with_policy.sources = vec![policy.clone(), src(Kind::Service, "web", 1)];
    clusters[7] = Arc::new(with_policy);
    let endpoints: Vec<_> = (0..100).map(|i| cla(&format!("c{i:03}"), "1")).collect();
    let d = snap(&[clusters.clone(), endpoints.clone()].concat());
    // Names in any order, one repeated.
    let mut names: Vec<String> = (0..100).rev().map(|i| format!("c{i:03}")).collect();
    names.push("c050".into());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = DeltaStream::new(d.clone());
        let cds = s
            .on_request(&delta(Cluster, &[], ""), now)
            .responses
            .remove(0);
        let step = ack(&mut s, &cds);
        let Event::Ack { accepted, .. } = &step.events[0] else {
            panic!("an ack")
        };
        assert_eq!(
            accepted,
            std::slice::from_ref(&policy),
            "the policy it was made from"
        );
        let eds = s
            .on_request(&delta(Endpoint, &names, ""), now)
            .responses
            .remove(0);
        assert_eq!(eds.resources.len(), 100);
        assert!(eds.removed_resources.is_empty());
        for (kind, r) in [(Cluster, &cds), (Endpoint, &eds)] {
            let list = d.view.list_made(kind).expect("made by the first answer");
            assert!(Arc::ptr_eq(&list.resources, &r.resources), "{kind}");
        }
        assert!(ack(&mut s, &eds).responses.is_empty(), "nothing more");
        assert_eq!((s.held_overlay(Cluster), s.held_overlay(Endpoint)), (0, 0));
        streams.push(s);
    }
    let cds = d.view.list_made(Cluster).expect("made");
    assert_eq!(cds.policy.get(), Some(&vec![policy]), "learnt once, kept");
    // Held as the view: a change sends just itself.
    let mut next = endpoints.clone();
    next[3] = cla("c003", "2");
    for s in &mut streams {
        let step = s.on_snapshot(snap(&[clusters.clone(), next.clone()].concat()), now);
        assert_eq!(items(&step.responses[0]), ["c003@2"]);
    }
    // Part of the view is a list of its own, answered as before.
    let mut s = DeltaStream::new(d.clone());
    let part: Vec<&str> = names[..99].to_vec();
    let eds = s
        .on_request(&delta(Endpoint, &part, ""), now)
        .responses
        .remove(0);
    assert_eq!(eds.resources.len(), 99);
    let whole = d.view.list_made(Endpoint).expect("made");
    assert!(!Arc::ptr_eq(&whole.resources, &eds.resources));
    assert!(ack(&mut s, &eds).responses.is_empty());
    assert_eq!(s.held_overlay(Endpoint), 1, "the one it does not hold");
}

/// A first subscription to every name of the view (a sidecar's endpoints, in any order,
/// repeats allowed) is weighed by its distinct names and stored as the view's names, one
/// list for every stream; one that is not (a name more, or one fewer) goes by its names.
#[test]
fn a_first_subscription_to_the_whole_view_is_weighed_and_stored_as_the_views_names() {
    let now = Instant::now();
    let endpoints: Vec<_> = (0..100).map(|i| cla(&format!("e{i:03}"), "1")).collect();
    let d = snap(&endpoints);
    let all: Vec<String> = (0..100).rev().map(|i| format!("e{i:03}")).collect();
    let bytes: usize = all.iter().map(String::len).sum();
    let mut repeated: Vec<&str> = all.iter().map(String::as_str).collect();
    repeated.extend(["e007", "e042"]);
    let mut unknown = repeated.clone();
    unknown.push("e100");
    let fewer: Vec<&str> = repeated[1..].to_vec();
    let mut sets = Vec::new();
    for (names, want_bytes, want_names) in [
        (&repeated, bytes, 100),
        (&repeated, bytes, 100),
        (&unknown, bytes + 4, 101),
        (&fewer, bytes - 4, 99),
    ] {
        let mut s = DeltaStream::new(d.clone());
        let before = interned();
        let r = s
            .on_request(&delta(Endpoint, names, ""), now)
            .responses
            .remove(0);
        // The view's names are taken whole: none interned one by one.
        assert_eq!(
            interned() == before,
            want_names == 100,
            "{want_names} names"
        );
        assert!(s.take_refusal().is_none());
        assert_eq!(s.name_bytes_of(Endpoint), (want_bytes, want_names));
        let names = s.names_of(Endpoint);
        assert_eq!(names.len(), want_names);
        assert!(names.iter().is_sorted(), "in name order");
        assert!(ack(&mut s, &r).responses.is_empty(), "nothing more");
        // A later change reaches the stream by its names.
        let mut next = endpoints.clone();
        next[5] = cla("e005", "2");
        assert_eq!(
            items(&s.on_snapshot(snap(&next), now).responses[0]),
            ["e005@2"]
        );
        sets.push(names);
    }
    assert!(
        sets[0].shares_with(&sets[1]),
        "one list for the view's names"
    );
    assert!(
        sets[0]
            .iter()
            .zip(d.view.maps.endpoints.keys())
            .all(|(a, b)| std::sync::Arc::ptr_eq(a, b)),
        "the view's own names"
    );
    // Over the bound: refused before anything is stored.
    let mut s = DeltaStream::new(d.clone()).with_name_bytes(super::NameBytes::new(bytes - 1, None));
    s.on_request(&delta(Endpoint, &repeated, ""), now);
    assert_eq!(s.take_refusal().expect("over").limit, "subscribed_bytes");
    assert!(s.names_of(Endpoint).is_empty());
}

fn interned() -> usize {
    super::core::INTERNED.with(std::cell::Cell::get)
}

/// A first request that also unsubscribes, or says what a resuming proxy holds, is not a
/// subscription to the whole view: weighed (and stored) by its names as before.
#[test]
fn a_first_request_that_is_more_than_the_whole_view_goes_by_its_names() {
    let now = Instant::now();
    let endpoints: Vec<_> = (0..100).map(|i| cla(&format!("e{i:03}"), "1")).collect();
    let d = snap(&endpoints);
    let all: Vec<String> = endpoints.iter().map(|e| e.name.to_string()).collect();
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    let bytes: usize = all.iter().map(String::len).sum();

    let mut s = DeltaStream::new(d.clone());
    let mut req = delta(Endpoint, &names, "");
    req.resource_names_unsubscribe = vec!["e000".into()];
    s.on_request(&req, now);
    assert_eq!(s.name_bytes_of(Endpoint), (bytes - 4, 99));
    assert_eq!(s.names_of(Endpoint).len(), 99);

    let mut s = DeltaStream::new(d.clone());
    let mut req = delta(Endpoint, &names, "");
    req.initial_resource_versions = (0..64).map(|i| (format!("x{i:02}"), "1".into())).collect();
    s.on_request(&req, now);
    assert_eq!(s.name_bytes_of(Endpoint), (bytes + 64 * 3, 164));
}

/// A small view's whole list is held as the view's map too (the walk that holds a long
/// list beside the map is not taken under 64 resources).
#[test]
fn a_small_views_whole_list_is_held_as_its_map() {
    let now = Instant::now();
    let clusters: Vec<_> = (0..10).map(|i| cluster(&format!("c{i}"), "1")).collect();
    let d = snap(&clusters);
    let mut s = DeltaStream::new(d.clone());
    let r = s
        .on_request(&delta(Cluster, &[], ""), now)
        .responses
        .remove(0);
    let list = d.view.list_made(Cluster).expect("made");
    assert!(std::sync::Arc::ptr_eq(&list.resources, &r.resources));
    assert!(ack(&mut s, &r).responses.is_empty());
    assert_eq!(
        s.held_overlay(Cluster),
        0,
        "the view's map, nothing over it"
    );
    let mut next = clusters.clone();
    next[4] = cluster("c4", "2");
    assert_eq!(
        items(&s.on_snapshot(snap(&next), now).responses[0]),
        ["c4@2"]
    );
}
