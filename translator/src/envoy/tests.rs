//! The Envoy emitter on small routing IRs: a share with no backend fails with the rule's
//! status, and a TCP port is a CONNECT tunnel to where its last rule goes.

use envoy_types::pb::envoy::config::route::v3::{
    route::Action,
    route_action::{ClusterNotFoundResponseCode, ClusterSpecifier},
};

use crate::envoy::route::vhost_parts;
use crate::model::{Kind, Model, ObjectKey, parse_manifest};
use crate::render::route::NO_BACKEND_CLUSTER;
use crate::routing::ir::{Backend, Dest, PortRouting, Rule, RuleExtra};

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}, {name: db, port: 5432, appProtocol: tcp}]\n";

fn model() -> Model {
    let mut m = Model::new();
    for o in &parse_manifest(WEB).expect("manifest").objects {
        m.apply(o).expect("valid");
    }
    m
}

fn routing(m: &Model, port: usize, rules: Vec<Rule>) -> PortRouting {
    let svc = m.service("shop", "web").expect("web");
    PortRouting {
        name: format!("{}:{}", svc.fqdn(), svc.ports[port].port),
        protocol: svc.ports[port].protocol,
        rules,
        retry: None,
        timeout: None,
        refs: Vec::new(),
        sources: vec![ObjectKey::new(Kind::Service, "shop", "web")],
        backends: Vec::new(),
    }
}

#[test]
fn a_share_with_no_backend_fails_with_the_rules_status() {
    let m = model();
    let svc = m.service("shop", "web").expect("web");
    let rule = Rule {
        matches: None,
        dest: Dest::Weighted(vec![
            (Backend::Cluster("a".into()), 1),
            (Backend::Missing, 1),
        ]),
        extra: Some(Box::new(RuleExtra {
            no_backend_status: 500,
            ..Default::default()
        })),
    };
    let tcp = Rule {
        matches: None,
        dest: Dest::Cluster("db".into()),
        extra: None,
    };
    let parts = vhost_parts(
        &m,
        svc,
        &[routing(&m, 0, vec![rule]), routing(&m, 1, vec![tcp])],
    );
    let Some(Action::Route(a)) = &parts[0].vhost.routes[0].action else {
        panic!("{:?}", parts[0].vhost)
    };
    assert_eq!(
        a.cluster_not_found_response_code,
        ClusterNotFoundResponseCode::InternalServerError as i32
    );
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("{a:?}")
    };
    let names: Vec<&str> = w.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["a", NO_BACKEND_CLUSTER]);
}

#[test]
fn a_tcp_port_tunnels_to_where_its_last_rule_goes() {
    let m = model();
    let svc = m.service("shop", "web").expect("web");
    let http = Rule {
        matches: None,
        dest: Dest::Cluster("web".into()),
        extra: None,
    };
    let rules = vec![
        Rule {
            matches: Some(crate::routing::ir::Match {
                path: crate::routing::ir::PathMatch::Prefix("/x".into()),
                headers: Vec::new(),
                query: Vec::new(),
                methods: Vec::new(),
            }),
            dest: Dest::Cluster("canary".into()),
            extra: None,
        },
        Rule {
            matches: None,
            dest: Dest::Cluster("primary".into()),
            extra: None,
        },
    ];
    let parts = vhost_parts(
        &m,
        svc,
        &[routing(&m, 0, vec![http]), routing(&m, 1, rules)],
    );
    let tunnel = &parts[1].vhost.routes;
    assert_eq!(tunnel.len(), 1);
    let Some(Action::Route(a)) = &tunnel[0].action else {
        panic!("{tunnel:?}")
    };
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster("primary".into()))
    );
    assert!(parts[1].domains.iter().all(|(d, _)| d.ends_with(":5432")));
}
