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
        namespace: ns.into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
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
    for _ in 0..64 {
        let excluded = c.excluded().remove(&v).unwrap_or_default();
        let included: Vec<Source> = all
            .iter()
            .filter(|n| !excluded.contains(&key(n)))
            .map(|n| src(n))
            .collect();
        if c.after_build(&v, |k| {
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
                    by: "p",
                    suspects: &suspects,
                    precise,
                    proxy: "spiffe://cluster.local/ns/default/sa/p",
                    resource: "RDS outbound",
                    error: "bad",
                },
            )
        } else {
            held = Some(contributing.clone());
            c.on_ack(&v, "p", &contributing)
        };
        if !changed && c.views.get(&v).is_none_or(|x| x.search.is_none()) {
            break;
        }
    }
    let mut out: Vec<String> = c
        .excluded()
        .remove(&v)
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
    assert!(c.on_nack(
        &view("evil"),
        &Nack {
            by: "p",
            suspects: &s,
            precise: true,
            proxy: "spiffe://cluster.local/ns/evil/sa/attacker",
            resource: "RDS outbound",
            error: "no",
        },
    ));
    let excluded = c.excluded();
    assert_eq!(excluded.len(), 1);
    assert!(excluded.contains_key(&view("evil")));
    assert!(!excluded.contains_key(&view("default")));
}

#[test]
fn non_policy_sources_are_never_suspected() {
    let mut c = Containment::default();
    let svc = [Source {
        key: ObjectKey::new(Kind::Service, "default", "web"),
        rev: 1,
    }];
    assert!(!c.on_nack(
        &view("default"),
        &Nack {
            by: "p",
            suspects: &svc,
            precise: true,
            proxy: "p",
            resource: "LDS inbound|80",
            error: "bind",
        },
    ));
    assert!(c.excluded().is_empty());
}

#[test]
fn two_rejected_objects_are_both_found_and_the_rest_cleared() {
    // Proxies reject any build that includes b or d.
    let all = ["a", "b", "c", "d", "e"];
    let mut c = Containment::default();
    let v = view("default");
    let mut held: Option<Vec<Source>> = None;
    for _ in 0..64 {
        let excluded = c.excluded().remove(&v).unwrap_or_default();
        let included: Vec<Source> = all
            .iter()
            .filter(|n| !excluded.contains(&key(n)))
            .map(|n| src(n))
            .collect();
        if c.after_build(&v, |k| included.iter().any(|s| s.key == *k)) {
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
                    by: "p",
                    suspects: &suspects,
                    precise,
                    proxy: "p",
                    resource: "RDS outbound",
                    error: "bad",
                },
            )
        } else {
            held = Some(included.clone());
            c.on_ack(&v, "p", &included)
        };
        if !changed && c.views.get(&v).is_none_or(|x| x.search.is_none()) {
            break;
        }
    }
    let mut out: Vec<String> = c
        .excluded()
        .remove(&v)
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
    let both = [src("a"), src("b")];
    c.on_nack(
        &v,
        &Nack {
            by: "strict",
            suspects: &both,
            precise: true,
            proxy: "strict",
            resource: "RDS outbound",
            error: "too strict",
        },
    );
    // The trial re-admits a; a lenient proxy of the same view accepts it: no verdict.
    assert!(!c.on_ack(&v, "lenient", &[src("a")]));
    assert_eq!(c.excluded()[&v].len(), 1, "b is out while a is tried");
    // The strict proxy rejects it: a is the one.
    c.on_nack(
        &v,
        &Nack {
            by: "strict",
            suspects: &[src("a")],
            precise: false,
            proxy: "strict",
            resource: "RDS outbound",
            error: "too strict",
        },
    );
    // b is tried next and the strict proxy accepts it.
    assert!(c.on_ack(&v, "strict", &[src("b")]));
    let out: Vec<String> = c.excluded()[&v].iter().map(|k| k.name.clone()).collect();
    assert_eq!(out, ["a"]);
}
