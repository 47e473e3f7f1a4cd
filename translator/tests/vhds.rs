//! A view whose Envoys take virtual hosts apart (VHDS): a canary step, a new Service and
//! a removed one change that Service's virtual host and nothing of the outbound table,
//! while the view with the whole table re-sends the table each time.

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
    let s0 = "outbound/s0.shop.svc.cluster.local:80".to_string();

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
    let new = "outbound/new.shop.svc.cluster.local:80".to_string();
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
