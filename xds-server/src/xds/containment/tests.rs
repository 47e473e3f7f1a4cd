use super::*;
use translator::model::{Egress, Kind};

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::RetryPolicy, "default", name)
}

fn src(name: &str) -> Source {
    Source {
        key: key(name),
        rev: 1,
    }
}

fn view(ns: &str) -> ViewKey {
    ViewKey {
        vhds: false,
        namespace: ns.into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    }
}

/// The identity of the proxies the simulations run.
const ID: &str = "spiffe://cluster.local/ns/default/sa/p";

/// Whether `identity` has a search running in `view`.
fn searching(c: &Containment, identity: &str, v: &ViewKey) -> bool {
    c.identities
        .get(identity)
        .and_then(|views| views.get(v))
        .is_some_and(|e| e.search.is_some())
}

/// A rejection by proxy `by` of `identity`.
fn nack<'a>(by: &'a str, identity: &'a str, suspects: &'a [Source]) -> Nack<'a> {
    Nack {
        by,
        suspects,
        precise: true,
        identity,
        resource: "RDS outbound",
        error: "bad",
    }
}

/// A view with proxies that reject any build including `guilty`; objects in `idle` add
/// nothing to the view's resources. `held` is what the proxies accepted last (None: they
/// just connected). Runs builds until nothing changes; returns what stays excluded.
fn simulate(
    all: &[&str],
    guilty: &str,
    idle: &[&str],
    mut held: Option<Vec<Source>>,
    c: &mut Containment,
) -> Vec<String> {
    let v = view("default");
    let variant = v.variant_for(ID);
    for _ in 0..64 {
        let excluded = c.excluded().remove(&variant).unwrap_or_default();
        let included: Vec<Source> = all
            .iter()
            .filter(|n| !excluded.contains(&key(n)))
            .map(|n| src(n))
            .collect();
        if c.after_build(&variant, |k| {
            included.iter().any(|s| s.key == *k) && !idle.contains(&k.name.as_str())
        }) {
            continue;
        }
        let contributing: Vec<Source> = included
            .iter()
            .filter(|s| !idle.contains(&s.key.name.as_str()))
            .cloned()
            .collect();
        let changed = if contributing.iter().any(|s| s.key.name == guilty) {
            let (suspects, precise) = match &held {
                Some(h) => (
                    contributing
                        .iter()
                        .filter(|s| !h.contains(s))
                        .cloned()
                        .collect(),
                    true,
                ),
                None => (contributing.clone(), false),
            };
            c.on_nack(
                &v,
                &Nack {
                    precise,
                    ..nack("p", ID, &suspects)
                },
            )
        } else {
            held = Some(contributing.clone());
            c.on_ack(&v, ID, "p", &contributing)
        };
        if !changed && !searching(c, ID, &v) {
            break;
        }
    }
    let mut out: Vec<String> = c
        .excluded()
        .remove(&variant)
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.name)
        .collect();
    out.sort();
    out
}

#[test]
fn the_search_finds_the_rejected_object_wherever_it_is() {
    let all = ["a", "b", "c", "d", "e"];
    for guilty in all {
        let mut c = Containment::default();
        assert_eq!(
            simulate(&all, guilty, &[], None, &mut c),
            [guilty],
            "guilty {guilty}, fresh proxies"
        );
        let confirmed: Vec<&ObjectKey> = c
            .suspects()
            .filter(|(_, _, s)| s.confirmed)
            .map(|(_, k, _)| k)
            .collect();
        assert_eq!(confirmed, [&key(guilty)]);
    }
}

#[test]
fn a_precise_single_suspect_is_confirmed_at_once_and_lifted_when_it_changes() {
    let mut c = Containment::default();
    let held = Some(vec![src("a"), src("b")]);
    assert_eq!(
        simulate(&["a", "b", "new"], "new", &[], held, &mut c),
        ["new"]
    );
    assert!(c.retain(|k| Some(if k.name == "new" { 2 } else { 1 })));
    assert!(c.excluded().is_empty());
}

#[test]
fn several_new_objects_are_searched_even_with_a_precise_diff() {
    for guilty in ["x", "y", "z"] {
        let mut c = Containment::default();
        let held = Some(vec![src("a")]);
        assert_eq!(
            simulate(&["a", "x", "y", "z"], guilty, &[], held, &mut c),
            [guilty]
        );
    }
}

#[test]
fn objects_that_add_nothing_are_cleared_and_do_not_stall_the_search() {
    let mut c = Containment::default();
    assert_eq!(
        simulate(&["a", "b", "c", "d"], "d", &["a", "b"], None, &mut c),
        ["d"]
    );
}

#[test]
fn a_rejection_in_one_view_leaves_the_others_alone() {
    let mut c = Containment::default();
    let s = [src("x")];
    let attacker = "spiffe://cluster.local/ns/evil/sa/attacker";
    assert!(c.on_nack(&view("evil"), &nack("p", attacker, &s)));
    let excluded = c.excluded();
    assert_eq!(excluded.len(), 1);
    assert!(excluded.contains_key(&view("evil").variant_for(attacker)));
    assert!(!excluded.contains_key(&view("default").variant_for(attacker)));
}

#[test]
fn non_policy_sources_are_never_suspected() {
    let mut c = Containment::default();
    let svc = [Source {
        key: ObjectKey::new(Kind::Service, "default", "web"),
        rev: 1,
    }];
    assert!(!c.on_nack(&view("default"), &nack("p", ID, &svc)));
    assert!(c.excluded().is_empty());
}

#[test]
fn two_rejected_objects_are_both_found_and_the_rest_cleared() {
    // Proxies reject any build that includes b or d.
    let all = ["a", "b", "c", "d", "e"];
    let mut c = Containment::default();
    let v = view("default");
    let variant = v.variant_for(ID);
    let mut held: Option<Vec<Source>> = None;
    for _ in 0..64 {
        let excluded = c.excluded().remove(&variant).unwrap_or_default();
        let included: Vec<Source> = all
            .iter()
            .filter(|n| !excluded.contains(&key(n)))
            .map(|n| src(n))
            .collect();
        if c.after_build(&variant, |k| included.iter().any(|s| s.key == *k)) {
            continue;
        }
        let bad = included
            .iter()
            .any(|s| s.key.name == "b" || s.key.name == "d");
        let changed = if bad {
            let (suspects, precise) = match &held {
                Some(h) => (
                    included
                        .iter()
                        .filter(|s| !h.contains(s))
                        .cloned()
                        .collect(),
                    true,
                ),
                None => (included.clone(), false),
            };
            c.on_nack(
                &v,
                &Nack {
                    precise,
                    ..nack("p", ID, &suspects)
                },
            )
        } else {
            held = Some(included.clone());
            c.on_ack(&v, ID, "p", &included)
        };
        if !changed && !searching(&c, ID, &v) {
            break;
        }
    }
    let mut out: Vec<String> = c
        .excluded()
        .remove(&variant)
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.name)
        .collect();
    out.sort();
    assert_eq!(out, ["b", "d"]);
}

#[test]
fn only_the_rejecting_proxy_judges_a_trial() {
    let mut c = Containment::default();
    let v = view("default");
    let variant = v.variant_for(ID);
    let both = [src("a"), src("b")];
    c.on_nack(&v, &nack("strict", ID, &both));
    // The trial re-admits a; a lenient proxy of the same identity accepts it: no verdict.
    assert!(!c.on_ack(&variant, ID, "lenient", &[src("a")]));
    assert_eq!(c.excluded()[&variant].len(), 1, "b is out while a is tried");
    // The strict proxy rejects it: a is the one.
    c.on_nack(
        &variant,
        &Nack {
            precise: false,
            ..nack("strict", ID, &[src("a")])
        },
    );
    // b is tried next and the strict proxy accepts it.
    assert!(c.on_ack(&variant, ID, "strict", &[src("b")]));
    let out: Vec<String> = c.excluded()[&variant]
        .iter()
        .map(|k| k.name.clone())
        .collect();
    assert_eq!(out, ["a"]);
}

#[test]
fn a_rejection_leaves_the_object_out_for_the_rejecting_identity_only() {
    // Issue 21, finding 4: a proxy in `evil` rejects an object of `default`.
    let mut c = Containment::default();
    let evil = view("evil");
    let attacker = "spiffe://cluster.local/ns/evil/sa/attacker";
    let neighbour = "spiffe://cluster.local/ns/evil/sa/neighbour";
    let s = [src("retries")];
    assert!(c.on_nack(&evil, &nack("attacker x.evil", attacker, &s)));
    // Its identity's proxies follow a variant that leaves it out; nobody else does.
    assert_eq!(c.follows(&evil, attacker), evil.variant_for(attacker));
    assert_eq!(c.follows(&evil, neighbour), evil);
    assert_eq!(c.follows(&view("default"), attacker), view("default"));
    let excluded = c.excluded();
    assert_eq!(
        excluded.keys().collect::<Vec<_>>(),
        [&evil.variant_for(attacker)]
    );
    assert!(excluded[&evil.variant_for(attacker)].contains(&key("retries")));
    // What status reads: the identity and its namespace, confirmed.
    let suspects: Vec<_> = c.suspects().collect();
    assert_eq!(suspects.len(), 1);
    assert_eq!(suspects[0].0.variant.as_deref(), Some(attacker));
    assert_eq!(suspects[0].0.namespace, "evil");
    assert!(suspects[0].2.confirmed);
    // Another identity rejecting the same object gets a variant of its own: the shared
    // view never leaves it out.
    assert!(c.on_nack(&evil, &nack("neighbour n.evil", neighbour, &s)));
    assert_eq!(c.excluded().len(), 2);
    assert!(!c.excluded().contains_key(&evil));
    assert!(!c.holds(&evil));
}

#[test]
fn a_containment_is_lifted_when_the_proxies_that_rejected_leave() {
    let mut c = Containment::default();
    let v = view("evil");
    let id = "spiffe://cluster.local/ns/evil/sa/attacker";
    let s = [src("retries")];
    assert!(c.on_nack(&v, &nack("id p1", id, &s)));
    c.on_nack(&v, &nack("id p2", id, &s));
    // A proxy of the identity that never rejected leaving changes nothing; one of the
    // two that did leaves, the other still stands by its rejection.
    assert!(!c.proxy_gone(id, "id twin"));
    assert!(!c.proxy_gone(id, "id p1"));
    assert_eq!(c.follows(&v, id), v.variant_for(id));
    // The last one leaves: nothing stays out on the word of a gone proxy.
    assert!(c.proxy_gone(id, "id p2"));
    assert!(c.excluded().is_empty());
    assert_eq!(c.follows(&v, id), v);
    assert_eq!(c.size(), (0, 0));
    // It comes back and rejects again: judged again.
    assert!(c.on_nack(&v, &nack("id p1", id, &s)));
    assert_eq!(c.follows(&v, id), v.variant_for(id));
    // A search whose proxy left is lifted with it, not left half done.
    let mut c = Containment::default();
    let both = [src("a"), src("b")];
    assert!(c.on_nack(&v, &nack("id p1", id, &both)));
    assert!(searching(&c, id, &v));
    assert!(c.proxy_gone(id, "id p1"));
    assert!(c.excluded().is_empty());
}

#[test]
fn the_state_one_identity_keeps_is_bounded() {
    let mut c = Containment::default();
    let id = "spiffe://cluster.local/ns/evil/sa/attacker";
    // A rejection naming far more suspects than allowed, with the longest error text.
    let many: Vec<Source> = (0..3 * MAX_SUSPECTS_PER_IDENTITY)
        .map(|i| src(&format!("p{i:05}")))
        .collect();
    let long = "e".repeat(crate::xds::stream::NACK_TEXT_MAX);
    let n = Nack {
        error: &long,
        ..nack("id p", id, &many)
    };
    assert!(c.on_nack(&view("evil"), &n));
    assert_eq!(c.size(), (1, MAX_SUSPECTS_PER_IDENTITY));
    // Other views add nothing once the identity's suspects are used up.
    assert!(!c.on_nack(&view("evil2"), &nack("id p", id, &many)));
    assert_eq!(c.size(), (1, MAX_SUSPECTS_PER_IDENTITY));
    // The error is kept once per rejection, cut.
    let errors: BTreeSet<*const u8> = c.suspects().map(|(_, _, s)| s.error.as_ptr()).collect();
    assert_eq!(errors.len(), 1);
    let (_, _, first) = c.suspects().next().expect("a suspect");
    assert!(first.error.chars().count() <= ERROR_MAX + 3);
    // Views per identity are bounded.
    let mut c = Containment::default();
    for i in 0..2 * MAX_VIEWS_PER_IDENTITY {
        c.on_nack(&view(&format!("ns{i}")), &nack("id p", id, &[src("x")]));
    }
    assert_eq!(c.excluded().len(), MAX_VIEWS_PER_IDENTITY);
    // Rejecting proxies remembered per view are bounded.
    for i in 0..2 * MAX_REJECTERS {
        let by = format!("id p{i}");
        c.on_nack(&view("ns0"), &nack(&by, id, &[src("x")]));
    }
    let rejecters = c.identities[id][&view("ns0")].rejecters.len();
    assert_eq!(rejecters, MAX_REJECTERS);
    // Each identity has its own budget: another one is contained as usual.
    let other = "spiffe://cluster.local/ns/evil/sa/other";
    assert!(c.on_nack(&view("ns9"), &nack("other p", other, &[src("x")])));
    assert_eq!(
        c.follows(&view("ns9"), other),
        view("ns9").variant_for(other)
    );
}
