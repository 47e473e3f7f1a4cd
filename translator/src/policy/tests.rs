//! Split resolution: the oldest split per apex, nested splits composed down to leaf
//! Services, cycles and nested matches refused with the last good weights kept.

use super::*;
use crate::model::{Kind, Model, ObjectKey, parse_manifest};
use crate::status::policy_status;

fn svc(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n"
    )
}

fn split(name: &str, created: &str, apex: &str, backends: &[(&str, i64)]) -> String {
    let mut s = format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\nspec:\n  service: {apex}\n  backends:\n"
    );
    for (b, w) in backends {
        s.push_str(&format!("    - {{service: {b}, weight: {w}}}\n"));
    }
    s.push_str("---\n");
    s
}

fn model(yaml: &str) -> Model {
    let mut m = Model::new();
    for o in parse_manifest(yaml).expect("parses").objects {
        m.apply(&o).expect("valid object");
    }
    m
}

fn services(names: &[&str]) -> String {
    names.iter().map(|n| svc(n)).collect()
}

type Weights = Vec<(String, u32)>;

fn effective(state: &SplitState, apex: &str) -> Option<(Weights, Vec<String>)> {
    state
        .get(&("shop".to_string(), apex.to_string()))
        .map(|s| (s.backends.clone(), s.nested.clone()))
}

fn condition(m: &Model, name: &str, ty: &str) -> (String, String, String) {
    let key = ObjectKey::new(Kind::TrafficSplit, "shop", name);
    let c = policy_status(m)[&key]
        .conditions
        .iter()
        .find(|c| c.type_ == ty)
        .cloned()
        .expect("condition");
    (c.status, c.reason, c.message)
}

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-02-01T00:00:00Z";

#[test]
fn the_flagger_layout_composes_down_to_leaf_services() {
    let m = model(&format!(
        "{}{}{}",
        services(&["shop", "primary", "canary", "blue", "green"]),
        split("apex", T1, "shop", &[("primary", 80), ("canary", 20)]),
        split("primary", T1, "primary", &[("blue", 1), ("green", 3)]),
    ));
    let s = resolve_splits(&m, &SplitState::new(), &Excluded::new());
    let (backends, nested) = effective(&s, "shop").expect("apex split");
    assert_eq!(
        backends,
        [
            ("blue".to_string(), 200_000_000),
            ("canary".to_string(), 200_000_000),
            ("green".to_string(), 600_000_000)
        ]
    );
    assert_eq!(nested, ["primary"]);
    // The inner split routes calls to `primary` itself as written.
    let (inner, nested) = effective(&s, "primary").expect("inner split");
    assert_eq!(inner, [("blue".to_string(), 1), ("green".to_string(), 3)]);
    assert!(nested.is_empty());
    assert_eq!(condition(&m, "apex", "Accepted").0, "True");
    assert_eq!(condition(&m, "apex", "ResolvedRefs").0, "True");
}

#[test]
fn a_backend_naming_its_own_apex_is_the_service_itself() {
    let m = model(&format!(
        "{}{}",
        services(&["shop", "canary"]),
        split("apex", T1, "shop", &[("shop", 90), ("canary", 10)]),
    ));
    let s = resolve_splits(&m, &SplitState::new(), &Excluded::new());
    let (backends, nested) = effective(&s, "shop").expect("split");
    assert_eq!(
        backends,
        [("shop".to_string(), 90), ("canary".to_string(), 10)]
    );
    assert!(nested.is_empty());
}

#[test]
fn the_oldest_split_on_an_apex_wins_and_the_other_is_conflicted() {
    let base = services(&["shop", "a", "b"]);
    // "zzz" is older than "aaa": age decides, not the name.
    let m = model(&format!(
        "{base}{}{}",
        split("aaa", T2, "shop", &[("a", 1)]),
        split("zzz", T1, "shop", &[("b", 1)]),
    ));
    let s = resolve_splits(&m, &SplitState::new(), &Excluded::new());
    assert_eq!(
        effective(&s, "shop").expect("split").0,
        [("b".to_string(), 1)]
    );
    let (status, reason, message) = condition(&m, "aaa", "Accepted");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Conflicted"));
    assert!(
        message.contains("TrafficSplit shop/zzz already splits Service shop/shop"),
        "{message}"
    );
    assert_eq!(condition(&m, "zzz", "Accepted").0, "True");
    // With the winner gone, the other takes effect.
    let m = model(&format!("{base}{}", split("aaa", T2, "shop", &[("a", 1)])));
    let s = resolve_splits(&m, &s, &Excluded::new());
    assert_eq!(
        effective(&s, "shop").expect("split").0,
        [("a".to_string(), 1)]
    );
}

#[test]
fn a_cycle_is_refused_naming_the_chain_and_the_last_good_weights_stay() {
    let base = services(&["a", "b", "x"]);
    let before = model(&format!(
        "{base}{}",
        split("sa", T1, "a", &[("b", 1), ("x", 1)])
    ));
    let good = resolve_splits(&before, &SplitState::new(), &Excluded::new());
    assert_eq!(
        effective(&good, "a").expect("split").0,
        [("b".to_string(), 1), ("x".to_string(), 1)]
    );
    let m = model(&format!(
        "{base}{}{}",
        split("sa", T1, "a", &[("b", 1), ("x", 1)]),
        split("sb", T2, "b", &[("a", 1)]),
    ));
    let s = resolve_splits(&m, &good, &Excluded::new());
    assert_eq!(effective(&s, "a"), effective(&good, "a"), "last good kept");
    assert_eq!(
        effective(&s, "b"),
        None,
        "nothing good to keep: b routes to itself"
    );
    for (name, chain) in [("sa", "a -> b -> a"), ("sb", "b -> a -> b")] {
        let (status, reason, message) = condition(&m, name, "ResolvedRefs");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "RefCycle"),
            "{name}"
        );
        assert!(message.contains(chain), "{name}: {message}");
    }
    // A drained backend is no edge: no cycle.
    let m = model(&format!(
        "{base}{}{}",
        split("sa", T1, "a", &[("b", 0), ("x", 1)]),
        split("sb", T2, "b", &[("a", 1)]),
    ));
    assert!(
        nesting(&split_winners(&m, &Excluded::new()))
            .values()
            .all(Result::is_ok)
    );
}

#[test]
fn a_nested_split_with_matches_is_refused_by_the_outer_split() {
    let group = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: beta, namespace: shop}\nspec:\n  matches: [{name: beta, headers: {x-beta: \"1\"}}]\n---\n";
    let inner = split("inner", T1, "primary", &[("blue", 1)]).replace(
        "---\n",
        "  matches: [{kind: HTTPRouteGroup, name: beta}]\n---\n",
    );
    let m = model(&format!(
        "{}{group}{inner}{}",
        services(&["shop", "primary", "blue"]),
        split("outer", T1, "shop", &[("primary", 1)]),
    ));
    let s = resolve_splits(&m, &SplitState::new(), &Excluded::new());
    assert_eq!(effective(&s, "shop"), None);
    assert!(
        effective(&s, "primary").is_some(),
        "the inner split itself works"
    );
    let (status, reason, message) = condition(&m, "outer", "Accepted");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unsupported"));
    assert!(
        message.contains("spec.backends[0].service is split by TrafficSplit shop/inner"),
        "{message}"
    );
}
