//! A change to one Service reaches a view as that Service's parts alone:
//! - a view whose Envoys take virtual hosts apart (VHDS): a canary step, a new Service and
//!   a removed one change that Service's virtual host and nothing of the outbound table,
//!   while the view with the whole table re-sends the table each time; views of one
//!   namespace share one encoding of each host, and a step encodes only the changed one;
//! - a gRPC view: a new Service adds its client Listeners to the view's shared map, and
//!   no gRPC proxy's own set is rebuilt.

mod common;

use std::collections::BTreeMap;

use common::{apply, slice_yaml, svc_yaml};
use translator::MeshConfig;
use translator::incremental::{Builder, Changes, Update};
use translator::model::{Egress, Model, ViewKey};

fn view(vhds: bool) -> ViewKey {
    ViewKey {
        namespace: "shop".into(),
        egress: Egress::All,
        grpc: false,
        vhds,
        variant: None,
    }
}

fn split(a: u32, b: u32) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: canary, namespace: shop}}\nspec:\n  service: s0\n  backends:\n    - {{service: s1, weight: {a}}}\n    - {{service: s2, weight: {b}}}\n"
    )
}

/// (puts, removes) of one type, by name.
fn names(updates: &[Update]) -> (Vec<String>, Vec<String>) {
    let mut out = (Vec::new(), Vec::new());
    for u in updates {
        match u {
            Update::Put(r) => out.0.push(r.name.to_string()),
            Update::Remove(n) => out.1.push(n.to_string()),
        }
    }
    out
}

fn changes_of(out: &translator::incremental::BuildOutput, key: &ViewKey) -> Changes {
    out.views
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, c, _)| c.clone())
        .unwrap_or_default()
}

#[test]
fn a_change_to_one_service_sends_its_virtual_host_alone() {
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let none = BTreeMap::new();
    let mut yaml = String::new();
    for i in 0..50 {
        yaml.push_str(&svc_yaml("shop", &format!("s{i}"), ""));
        yaml.push_str("---\n");
        yaml.push_str(&slice_yaml("shop", &format!("s{i}"), &["10.0.0.1"]));
        yaml.push_str("---\n");
    }
    yaml.push_str(&split(90, 10));
    let keys = apply(&mut model, &yaml);
    builder.update(&model, &keys, &none);
    let (apart, whole) = (view(true), view(false));
    let maps = builder.view(&model, &apart);
    assert_eq!(maps.vhosts.len(), 50, "one virtual host per Service port");
    assert!(builder.view(&model, &whole).vhosts.is_empty());
    let s0 = "outbound-vhds/s0.shop.svc.cluster.local:80".to_string();

    // A canary step.
    let keys = apply(&mut model, &split(50, 50));
    let out = builder.update(&model, &keys, &none);
    let c = changes_of(&out, &apart);
    assert_eq!(names(&c.vhosts), (vec![s0.clone()], vec![]), "{c:?}");
    assert!(c.routes.is_empty() && c.clusters.is_empty(), "{c:?}");
    assert_eq!(names(&changes_of(&out, &whole).routes).0, ["outbound"]);

    // A new Service: its cluster, endpoints and host.
    let keys = apply(
        &mut model,
        &format!(
            "{}---\n{}",
            svc_yaml("shop", "new", ""),
            slice_yaml("shop", "new", &["10.0.0.9"])
        ),
    );
    let out = builder.update(&model, &keys, &none);
    let c = changes_of(&out, &apart);
    let new = "outbound-vhds/new.shop.svc.cluster.local:80".to_string();
    assert_eq!(names(&c.vhosts), (vec![new.clone()], vec![]), "{c:?}");
    assert_eq!(
        names(&c.clusters).0,
        ["outbound|80||new.shop.svc.cluster.local"]
    );
    assert!(c.routes.is_empty(), "{c:?}");

    // Gone again: its host is removed.
    let key = keys
        .iter()
        .find(|k| k.name == "new" && k.kind == translator::model::Kind::Service)
        .expect("the Service")
        .clone();
    model.delete(&key);
    let out = builder.update(&model, &[key].into_iter().collect(), &none);
    let c = changes_of(&out, &apart);
    assert_eq!(names(&c.vhosts), (vec![], vec![new]), "{c:?}");
    assert!(c.routes.is_empty(), "{c:?}");
}

#[test]
fn a_new_service_adds_its_client_listeners_to_the_grpc_view_alone() {
    use translator::identity::{ProxyIdentity, ProxyKind};
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let none = BTreeMap::new();
    let mut yaml = String::new();
    for i in 0..20 {
        yaml.push_str(&svc_yaml("shop", &format!("s{i}"), ""));
        yaml.push_str("---\n");
    }
    let keys = apply(&mut model, &yaml);
    builder.update(&model, &keys, &none);
    let (grpc, remote) = (
        ViewKey {
            grpc: true,
            ..view(false)
        },
        ViewKey {
            grpc: true,
            namespace: "web".into(),
            ..view(false)
        },
    );
    let before = builder.view(&model, &grpc).listeners.len();
    let remote_before = builder.view(&model, &remote).listeners.len();
    assert!(
        remote_before < before,
        "short names are for the Service's own namespace"
    );
    for p in 0..5 {
        builder.proxy(
            &model,
            &ProxyIdentity {
                node_id: format!("grpc-{p}"),
                kind: ProxyKind::Grpc,
                namespace: "shop".into(),
                pod: format!("client-{p}"),
                service_account: "client".into(),
                pod_ip: None,
                outbound_port: 15001,
                app_address: "127.0.0.1".parse().expect("ip"),
                intercepted: false,
                inbound_port: 15006,
                vhds: false,
            },
        );
    }
    let keys = apply(&mut model, &svc_yaml("shop", "new", ""));
    let out = builder.update(&model, &keys, &none);
    assert!(out.proxies.is_empty(), "no gRPC proxy is rebuilt");
    let c = changes_of(&out, &grpc);
    let (puts, removes) = names(&c.listeners);
    assert!(removes.is_empty() && !puts.is_empty(), "{c:?}");
    assert!(puts.iter().all(|n| n.starts_with("new")), "{puts:?}");
    assert!(
        puts.contains(&"new".to_string()),
        "the short name, in its namespace"
    );
    let (remote_puts, _) = names(&changes_of(&out, &remote).listeners);
    assert!(!remote_puts.contains(&"new".to_string()), "{remote_puts:?}");
    assert_eq!(
        builder.view(&model, &grpc).listeners.len(),
        before + puts.len()
    );
}

/// Two views of one namespace that take hosts apart (one limited by egress to what it
/// calls) hold one encoding of each host they share, built once: a canary step encodes
/// the changed host once for both, and the hosts it did not touch keep their `Arc`s.
#[test]
fn views_apart_share_each_host_and_a_step_encodes_only_the_changed_one() {
    use std::sync::Arc;
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let none = BTreeMap::new();
    let mut yaml = String::new();
    for i in 0..10 {
        yaml.push_str(&svc_yaml("shop", &format!("s{i}"), ""));
        yaml.push_str("---\n");
    }
    yaml.push_str(&split(90, 10));
    let keys = apply(&mut model, &yaml);
    builder.update(&model, &keys, &none);
    let all = view(true);
    let some = ViewKey {
        egress: Egress::parse("shop/s0,shop/s1,shop/s2,shop/s3", "shop").expect("egress"),
        ..view(true)
    };
    let hosts = |b: &mut Builder, m: &Model, k: &ViewKey| b.view(m, k).vhosts.clone();
    let (a, s) = (
        hosts(&mut builder, &model, &all),
        hosts(&mut builder, &model, &some),
    );
    assert_eq!((a.len(), s.len()), (10, 4));
    for (name, h) in s.iter() {
        assert!(
            Arc::ptr_eq(h, &a[name]),
            "{name}: one encoding for both views"
        );
    }
    let s0 = "outbound-vhds/s0.shop.svc.cluster.local:80";
    let keys = apply(&mut model, &split(50, 50));
    let out = builder.update(&model, &keys, &none);
    let (a2, s2) = (
        hosts(&mut builder, &model, &all),
        hosts(&mut builder, &model, &some),
    );
    assert!(Arc::ptr_eq(&a2[s0], &s2[s0]), "the new host, shared");
    assert!(!Arc::ptr_eq(&a2[s0], &a[s0]), "it changed");
    for (name, h) in a2.iter().filter(|(n, _)| &***n != s0) {
        assert!(Arc::ptr_eq(h, &a[name]), "{name} kept");
    }
    assert_eq!(out.encoded, 1, "one host encoded for both views");
}
