//! The gRPC emitter on small routing IRs: failing shares go to the void cluster, backends
//! gRPC clients are not offered leave a split, and what gRPC ignores is reported.

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier,
};

use crate::grpc::cluster::void_name;
use crate::grpc::route::route;
use crate::model::{Kind, ObjectKey, Protocol};
use crate::output::{Body, Resource};
use crate::routing::ir::{Backend, BackendFacts, Dest, PortRouting, Retry, Rule, RuleExtra};

const NAME: &str = "web.shop.svc.cluster.local:80";

fn routing(dest: Dest, extra: Option<RuleExtra>, backends: Vec<BackendFacts>) -> PortRouting {
    PortRouting {
        name: NAME.into(),
        protocol: Protocol::Http,
        rules: vec![Rule {
            matches: None,
            dest,
            extra: extra.map(Box::new),
        }],
        retry: None,
        timeout: None,
        refs: backends.iter().map(|b| b.cluster.clone()).collect(),
        sources: vec![ObjectKey::new(Kind::Service, "shop", "web")],
        backends,
    }
}

fn facts(cluster: &str, http_with_endpoints: bool) -> BackendFacts {
    BackendFacts {
        cluster: cluster.into(),
        http_with_endpoints,
    }
}

fn config(r: &Resource) -> &RouteConfiguration {
    match &r.body {
        Body::Route(c) => c,
        other => panic!("not a route: {other:?}"),
    }
}

/// (cluster, weight) of the first route's destination.
fn shares(r: &Resource) -> Vec<(String, u32)> {
    let route = &config(r).virtual_hosts[0].routes[0];
    let Some(Action::Route(a)) = &route.action else {
        panic!("no route action: {route:?}")
    };
    match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => vec![(c.clone(), 1)],
        Some(ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.map_or(0, |v| v.value)))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_share_of_a_gateway_rule_goes_to_the_void_cluster() {
    let extra = RuleExtra {
        source: Some(ObjectKey::new(Kind::GRPCRoute, "shop", "web")),
        no_backend_status: 503,
        ..Default::default()
    };
    let dest = Dest::Weighted(vec![
        (Backend::Cluster("a".into()), 3),
        (Backend::Missing, 1),
    ]);
    let (r, diagnostics) = route(&routing(dest, Some(extra), vec![facts("a", true)]), "shop");
    let void = void_name(NAME);
    assert_eq!(shares(&r), vec![("a".into(), 3), (void.clone(), 1)]);
    assert_eq!(r.refs, vec!["a".to_string(), void]);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
}

#[test]
fn backends_not_offered_leave_a_split_and_say_so() {
    let dest = Dest::Weighted(vec![
        (Backend::Cluster("a".into()), 1),
        (Backend::Cluster("ext".into()), 1),
    ]);
    let (r, diagnostics) = route(
        &routing(dest, None, vec![facts("a", true), facts("ext", false)]),
        "shop",
    );
    assert_eq!(shares(&r), vec![("a".into(), 1)]);
    assert_eq!(r.refs, vec!["a".to_string()]);
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].field, "spec.backends");
    assert!(diagnostics[0].message.starts_with("ext are not offered"));
}

#[test]
fn retry_conditions_grpc_does_not_know_are_left_out_and_reported() {
    let mut r = routing(Dest::Cluster("a".into()), None, vec![facts("a", true)]);
    r.retry = Some(Retry {
        name: "retry".into(),
        on: vec!["5xx".into(), "unavailable".into()],
        codes: vec![503],
        num_retries: 2,
        per_try_timeout: None,
        backoff: None,
        budget: false,
    });
    let (out, diagnostics) = route(&r, "shop");
    let route = &config(&out).virtual_hosts[0].routes[0];
    let Some(Action::Route(a)) = &route.action else {
        panic!("{route:?}")
    };
    assert_eq!(
        a.retry_policy.as_ref().map(|p| p.retry_on.as_str()),
        Some("unavailable")
    );
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].object, "RetryPolicy shop/retry");
    assert!(diagnostics[0].message.starts_with("5xx, 503 do not apply"));
}
