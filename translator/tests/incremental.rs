//! The incremental builder always agrees with a translation from scratch: objects of the
//! golden inputs are applied one by one, changed, and deleted one by one, and after every
//! step every view and every proxy's own resources equal what `translate_mesh`,
//! `outbound_routes`, `translate_grpc` (per namespace) and `translate_proxy` make of the model as it is then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;

use common::{apply, slice_yaml, svc_yaml};
use translator::encoded::Encoded;
use translator::identity::{DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind};
use translator::incremental::Builder;
use translator::model::{Egress, Model, Object, ObjectKey, ViewKey, parse_manifest};
use translator::{MeshConfig, outbound_routes, translate_mesh, translate_proxy};
use xds_types::XdsType;

fn objects(dir: &Path) -> Vec<Object> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read case dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            parse_manifest(&std::fs::read_to_string(f).expect("read"))
                .expect("valid")
                .objects
        })
        .collect()
}

fn proxy(ns: &str, pod: &str, sa: &str) -> ProxyIdentity {
    ProxyIdentity {
        vhds: false,
        node_id: format!("{pod}.{ns}"),
        kind: ProxyKind::Envoy,
        namespace: ns.into(),
        pod: pod.into(),
        service_account: sa.into(),
        pod_ip: None,
        outbound_port: DEFAULT_OUTBOUND_PORT,
        app_address: "127.0.0.1".parse().expect("ip"),
        intercepted: false,
        inbound_port: translator::identity::DEFAULT_INBOUND_PORT,
    }
}

type Versions = BTreeMap<(XdsType, String), String>;

fn versions<'a>(rs: impl IntoIterator<Item = &'a std::sync::Arc<Encoded>>) -> Versions {
    rs.into_iter()
        .map(|r| ((r.kind, r.name.to_string()), r.version.clone()))
        .collect()
}

fn fresh(model: &Model, builder: &Builder, view: &ViewKey) -> Versions {
    fresh_with(model, builder.policy(), view)
}

/// A view's clusters and endpoints translated from scratch with `policy`.
fn fresh_with(
    model: &Model,
    policy: &translator::policy::PolicyContext,
    view: &ViewKey,
) -> Versions {
    let mesh = MeshConfig::default();
    let mut out = Versions::new();
    let visible: BTreeSet<(String, String)> = model
        .services()
        .filter(|s| view.sees(s))
        .map(|s| (s.namespace.clone(), s.name.clone()))
        .collect();
    for r in translate_mesh(model, &mesh, policy).resources {
        // Each cluster and endpoints resource is made from its Service first of all.
        let service = r
            .sources
            .iter()
            .find(|k| k.kind == translator::model::Kind::Service)
            .map(|k| (k.namespace.clone(), k.name.clone()));
        if service.is_some_and(|s| visible.contains(&s)) {
            let e = Encoded::with_revs(&r, |k| model.rev(k).unwrap_or(0));
            out.insert((e.kind, e.name.to_string()), e.version);
        }
    }
    out
}

fn fresh_routes(model: &Model, builder: &Builder, ns: &str) -> Versions {
    let routes = outbound_routes(model, builder.policy(), ns);
    versions(
        routes
            .resources
            .iter()
            .map(|r| std::sync::Arc::new(Encoded::new(r)))
            .collect::<Vec<_>>()
            .iter(),
    )
}

/// A view with virtual hosts apart holds the whole table's hosts, each as its own
/// resource named `outbound-vhds/NAME`, and a table of that name with only the
/// pod-address host that asks for the others over VHDS; its other tables (per port) are
/// the whole view's.
const APART: &str = translator::OUTBOUND_ROUTE_APART;

fn check_apart(
    model: &Model,
    builder: &Builder,
    maps: &translator::incremental::ViewMaps,
    ns: &str,
    step: &str,
) {
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
    use prost::Message;
    let decode = |e: &Encoded| RouteConfiguration::decode(e.any.value.as_slice()).expect("table");
    let fresh = outbound_routes(model, builder.policy(), ns);
    let mut whole = None;
    let mut others = Vec::new();
    for r in &fresh.resources {
        let e = std::sync::Arc::new(Encoded::new(r));
        if &*e.name == translator::OUTBOUND_ROUTE {
            whole = Some(decode(&e));
        } else {
            others.push(e);
        }
    }
    let mut whole = whole.expect("an outbound table");
    let pod_address = whole.virtual_hosts.pop().expect("the pod-address host");
    let want: BTreeMap<String, VirtualHost> = whole
        .virtual_hosts
        .into_iter()
        .map(|h| (format!("{APART}/{}", h.name), h))
        .collect();
    let got: BTreeMap<String, VirtualHost> = maps
        .vhosts
        .values()
        .map(|e| {
            assert_eq!(e.kind, XdsType::VirtualHost);
            let h = VirtualHost::decode(e.any.value.as_slice()).expect("vhost");
            assert_eq!(
                h.name, *e.name,
                "{step}: a virtual host is named as its resource"
            );
            let name = h.name.clone();
            (
                name.clone(),
                VirtualHost {
                    name: name
                        .strip_prefix(&format!("{APART}/"))
                        .expect("named for its table")
                        .into(),
                    ..h
                },
            )
        })
        .collect();
    assert_eq!(got, want, "{step}: {ns}'s virtual hosts apart");
    assert!(
        !maps.routes.contains_key(translator::OUTBOUND_ROUTE),
        "{step}: no whole table"
    );
    let table = decode(maps.routes.get(APART).expect("table"));
    assert!(table.vhds.is_some(), "{step}: the table asks for its hosts");
    assert_eq!(
        table.virtual_hosts,
        [pod_address],
        "{step}: only the pod-address host"
    );
    let per_port: Versions = versions(maps.routes.values().filter(|r| &*r.name != APART));
    assert_eq!(per_port, versions(others.iter()), "{step}: per-port tables");
}

fn check(
    model: &Model,
    builder: &mut Builder,
    views: &[ViewKey],
    proxies: &[ProxyIdentity],
    step: &str,
) {
    for view in views.iter().filter(|v| v.grpc) {
        let maps = builder.view(model, view);
        let got = versions(
            maps.clusters
                .values()
                .chain(maps.endpoints.values())
                .chain(maps.routes.values()),
        );
        let visible: BTreeSet<(String, String)> = model
            .services()
            .filter(|s| view.sees(s))
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect();
        let want: Versions = translator::translate_grpc(
            model,
            &MeshConfig::default(),
            builder.policy(),
            Some(&view.namespace),
        )
        .resources
        .iter()
        .filter(|r| {
            r.sources.iter().any(|s| {
                s.kind == translator::model::Kind::Service
                    && visible.contains(&(s.namespace.clone(), s.name.clone()))
            })
        })
        .map(|r| {
            let e = Encoded::with_revs(r, |k| model.rev(k).unwrap_or(0));
            ((e.kind, e.name.to_string()), e.version)
        })
        .collect();
        assert_eq!(got, want, "{step}: gRPC view {view:?}");
    }
    for view in views.iter().filter(|v| !v.grpc) {
        let maps = builder.view(model, view);
        let got = versions(maps.clusters.values().chain(maps.endpoints.values()));
        assert_eq!(
            got,
            fresh(model, builder, view),
            "{step}: view {view:?} clusters/endpoints"
        );
        let routes = versions(maps.routes.values());
        if view.egress == Egress::All && !view.vhds {
            assert_eq!(
                routes,
                fresh_routes(model, builder, &view.namespace),
                "{step}: view {view:?} routes"
            );
        }
        if view.egress == Egress::All && view.vhds {
            check_apart(model, builder, &maps, &view.namespace, step);
        }
    }
    for p in proxies {
        let (own, view) = builder.proxy(model, p);
        // Its own, and the Listeners its view serves every proxy of it (gRPC clients').
        let shared = builder.view(model, &view).listeners;
        assert!(
            own.listeners.keys().all(|n| !shared.contains_key(n)),
            "{step}: proxy {}: a Listener both its own and its view's",
            p.node_id
        );
        let got = versions(
            own.listeners
                .values()
                .chain(shared.values())
                .chain(own.clusters.values()),
        );
        let want = versions(
            translate_proxy(model, &MeshConfig::default(), p)
                .resources
                .iter()
                .map(|r| std::sync::Arc::new(Encoded::with_revs(r, |k| model.rev(k).unwrap_or(0))))
                .collect::<Vec<_>>()
                .iter(),
        );
        assert_eq!(got, want, "{step}: proxy {}", p.node_id);
    }
}

fn run(dir: &Path) {
    run_objects(objects(dir));
}

/// Applies `objs` one by one, then deletes them in reverse, checking each step against
/// a build from scratch.
fn run_objects(objs: Vec<Object>) {
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let empty: std::collections::BTreeMap<ViewKey, translator::policy::Excluded> =
        Default::default();
    builder.update(&model, &BTreeSet::new(), &empty);
    let namespaces: BTreeSet<String> = objs.iter().map(|o| o.key().namespace).collect();
    let views: Vec<ViewKey> = namespaces
        .iter()
        .flat_map(|ns| {
            // Envoys with the whole table, with virtual hosts apart, and gRPC clients.
            [(false, false), (false, true), (true, false)].map(|(grpc, vhds)| ViewKey {
                vhds,
                namespace: ns.clone(),
                egress: Egress::All,
                grpc,
                variant: None,
            })
        })
        .collect();
    let proxies: Vec<ProxyIdentity> = objs
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(proxy(
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or_default(),
                p.spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.as_deref())
                    .unwrap_or("default"),
            )),
            _ => None,
        })
        // Each pod also as an injected (intercepted) proxy: its outbound listener
        // follows every Service.
        .flat_map(|p| {
            let i = ProxyIdentity {
                node_id: format!("{}.intercepted", p.node_id),
                intercepted: true,
                // Its inbound clusters follow the pod's address.
                app_address: translator::identity::POD_ADDRESS,
                inbound_port: translator::identity::DEFAULT_INBOUND_PORT,
                ..p.clone()
            };
            // And as a proxyless gRPC client and server.
            let g = ProxyIdentity {
                node_id: format!("{}.grpc", p.node_id),
                kind: translator::identity::ProxyKind::Grpc,
                ..p.clone()
            };
            [p, i, g]
        })
        .collect();
    // Register every view and proxy up front, so updates have something to keep current.
    for v in &views {
        builder.view(&model, v);
    }
    for p in &proxies {
        builder.proxy(&model, p);
    }
    for (i, o) in objs.iter().enumerate() {
        model.apply(o).expect("valid");
        builder.update(&model, &[o.key()].into_iter().collect(), &empty);
        check(
            &model,
            &mut builder,
            &views,
            &proxies,
            &format!("apply #{i} {}", o.key()),
        );
    }
    for (i, o) in objs.iter().enumerate().rev() {
        let key: ObjectKey = o.key();
        model.delete(&key);
        builder.update(&model, &[key.clone()].into_iter().collect(), &empty);
        check(
            &model,
            &mut builder,
            &views,
            &proxies,
            &format!("delete #{i} {key}"),
        );
    }
}

#[test]
fn incremental_matches_from_scratch_on_the_examples() {
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"));
}

#[test]
fn incremental_matches_from_scratch_on_the_edge_cases() {
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/edge-cases"));
}

#[test]
fn incremental_matches_from_scratch_on_authz() {
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/authz"));
}

#[test]
fn incremental_matches_from_scratch_on_gamma() {
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gamma"));
}

#[test]
fn incremental_matches_from_scratch_on_gamma_filters_and_consumer_routes() {
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gamma-filters"));
}

#[test]
fn incremental_matches_from_scratch_on_traffic_policy() {
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/traffic-policy"));
}

#[test]
fn one_endpoint_change_is_one_endpoint_update_whatever_the_mesh_size() {
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let empty: std::collections::BTreeMap<ViewKey, translator::policy::Excluded> =
        Default::default();
    let mut yaml = String::new();
    for i in 0..300 {
        yaml.push_str(&svc_yaml("shop", &format!("s{i}"), ""));
        yaml.push_str("---\n");
        yaml.push_str(&slice_yaml(
            "shop",
            &format!("s{i}"),
            &["10.0.0.1", "10.0.0.2"],
        ));
        yaml.push_str("---\n");
    }
    let keys = apply(&mut model, &yaml);
    builder.update(&model, &keys, &empty);
    let view = ViewKey {
        vhds: false,
        namespace: "shop".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    builder.view(&model, &view);
    let keys = apply(
        &mut model,
        &slice_yaml("shop", "s7", &["10.0.0.1", "10.0.0.3"]),
    );
    let out = builder.update(&model, &keys, &empty);
    assert_eq!(out.views.len(), 1);
    let changes = &out.views[0].1;
    assert_eq!(changes.endpoints.len(), 1, "{changes:?}");
    assert!(changes.clusters.is_empty() && changes.routes.is_empty());
    assert_eq!(
        out.encoded, 1,
        "only the changed ClusterLoadAssignment is encoded"
    );
}

#[test]
fn views_see_only_what_services_export_and_pods_declare() {
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let empty: std::collections::BTreeMap<ViewKey, translator::policy::Excluded> =
        Default::default();
    let keys = apply(
        &mut model,
        &[
            svc_yaml("shop", "cart", ""),
            svc_yaml(
                "shop",
                "secret",
                ", annotations: {rudder.dev/export-to: \".\"}",
            ),
            svc_yaml("web", "front", ""),
        ]
        .join("---\n"),
    );
    builder.update(&model, &keys, &empty);
    let names = |maps: &translator::incremental::ViewMaps| -> Vec<String> {
        maps.clusters.keys().map(|k| k.to_string()).collect()
    };
    let all_web = ViewKey {
        vhds: false,
        namespace: "web".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    assert_eq!(
        names(&builder.view(&model, &all_web)),
        [
            "outbound|80||cart.shop.svc.cluster.local",
            "outbound|80||front.web.svc.cluster.local"
        ],
        "another namespace does not see an own-namespace export"
    );
    let all_shop = ViewKey {
        vhds: false,
        namespace: "shop".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    assert_eq!(builder.view(&model, &all_shop).clusters.len(), 3);
    let scoped = ViewKey {
        vhds: false,
        namespace: "web".into(),
        egress: Egress::parse("shop/cart", "web").expect("egress"),
        grpc: false,
        variant: None,
    };
    assert_eq!(
        names(&builder.view(&model, &scoped)),
        ["outbound|80||cart.shop.svc.cluster.local"]
    );
    // Exporting it everywhere sends it to the view that can now see it, and only there.
    let keys = apply(&mut model, &svc_yaml("shop", "secret", ""));
    let out = builder.update(&model, &keys, &empty);
    let touched: Vec<&ViewKey> = out.views.iter().map(|(k, _, _)| k).collect();
    assert!(touched.contains(&&all_web), "{touched:?}");
    assert!(!touched.contains(&&scoped), "{touched:?}");
    assert_eq!(builder.view(&model, &all_web).clusters.len(), 3);
    // The route table of the scoped view routes only what it sees.
    let scoped_routes = builder.view(&model, &scoped);
    let route = scoped_routes
        .routes
        .get(translator::OUTBOUND_ROUTE)
        .expect("route");
    assert_eq!(
        route.refs.iter().map(|r| &**r).collect::<Vec<_>>(),
        ["outbound|80||cart.shop.svc.cluster.local", "pod-address"]
    );
    // These Services have no cluster IP: no route table of their own.
    assert_eq!(
        scoped_routes
            .routes
            .keys()
            .map(|r| &**r)
            .collect::<Vec<_>>(),
        ["outbound"]
    );
}

#[test]
fn a_view_that_leaves_a_policy_out_gets_its_own_parts_and_the_others_do_not() {
    use translator::model::Kind;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/traffic-policy");
    let mut model = Model::new();
    for o in objects(&dir) {
        model.apply(&o).expect("valid");
    }
    let mut builder = Builder::new(MeshConfig::default());
    let none: std::collections::BTreeMap<ViewKey, translator::policy::Excluded> =
        Default::default();
    let changes = model.take_changes();
    builder.update(&model, &changes, &none);
    let a = ViewKey {
        vhds: false,
        namespace: "default".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    let b = ViewKey {
        vhds: false,
        namespace: "other".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    let route = |maps: &translator::incremental::ViewMaps| {
        maps.routes
            .get(translator::OUTBOUND_ROUTE)
            .expect("route")
            .clone()
    };
    let before_a = route(&builder.view(&model, &a));
    let before_b = route(&builder.view(&model, &b));
    let split = model
        .traffic_splits()
        .find(|s| s.metadata.name.as_deref() == Some("reviews-canary"))
        .expect("the canary split");
    let key = ObjectKey::new(
        Kind::TrafficSplit,
        split.metadata.namespace.as_deref().unwrap_or("default"),
        split.metadata.name.as_deref().unwrap_or_default(),
    );
    let excl: translator::policy::Excluded = [key.clone()].into_iter().collect();
    let by_view = [(a.clone(), excl.clone())].into_iter().collect();
    let out = builder.update(&model, &BTreeSet::new(), &by_view);
    let touched: Vec<&ViewKey> = out.views.iter().map(|(k, _, _)| k).collect();
    assert_eq!(touched, [&a], "only the view that left it out changes");
    let after_a = route(&builder.view(&model, &a));
    assert_ne!(after_a.version, before_a.version);
    assert!(
        !after_a.sources.iter().any(|s| s.key == key),
        "{:?}",
        after_a.sources
    );
    assert_eq!(route(&builder.view(&model, &b)).version, before_b.version);
    // The same as a from-scratch translation with that object left out.
    let policy = translator::policy::PolicyContext::new(&model, &Default::default(), &excl);
    let want = outbound_routes(&model, &policy, "default");
    assert_eq!(after_a.version, Encoded::new(&want.resources[0]).version);
    // Bringing it back restores the shared parts.
    let out = builder.update(&model, &BTreeSet::new(), &none);
    assert_eq!(out.views.len(), 1);
    assert_eq!(route(&builder.view(&model, &a)).version, before_a.version);
}

#[test]
fn incremental_matches_from_scratch_outside_the_mesh() {
    // Slices come before the pods they list: each pod's arrival (and its sidecar
    // annotation) must re-mark the endpoints that are it, by name or by address.
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/outside-mesh"));
}

#[test]
fn incremental_matches_from_scratch_for_gateway_routes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gamma");
    run(&dir);
    // Routes before the Services they name: each Service's arrival (a parent, a backend)
    // changes what the routes resolve to; deleting them in reverse removes the Services
    // under live routes.
    let mut objs = objects(&dir);
    objs.sort_by_key(|o| !o.key().kind.is_route());
    run_objects(objs);
}

#[test]
fn incremental_matches_from_scratch_for_grpc_clients() {
    // Splits, retries and backends gRPC is not offered, object by object.
    run(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/grpc"));
}

/// Policy changes rebuild only the Services whose routing changed: the backends a split
/// or route sends to can change under it (ports, protocol) and the apex follows.
#[test]
fn backends_changing_under_splits_and_routes_match_from_scratch() {
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let empty: std::collections::BTreeMap<ViewKey, translator::policy::Excluded> =
        Default::default();
    let views: Vec<ViewKey> = [false, true]
        .map(|grpc| ViewKey {
            vhds: false,
            namespace: "default".into(),
            egress: Egress::All,
            grpc,
            variant: None,
        })
        .to_vec();
    let proxies = vec![proxy("default", "client", "client")];
    for v in &views {
        builder.view(&model, v);
    }
    for p in &proxies {
        builder.proxy(&model, p);
    }
    let mut step = |model: &mut Model, yaml: &str, what: &str| {
        let keys = apply(model, yaml);
        builder.update(model, &keys, &empty);
        check(model, &mut builder, &views, &proxies, what);
    };
    let mut yaml = String::new();
    for s in ["apex", "a", "b", "parent", "c", "d", "client"] {
        yaml.push_str(&svc_yaml("default", s, ""));
        yaml.push_str("---\n");
    }
    yaml.push_str("apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: default, labels: {app: client}}\nspec: {serviceAccountName: client, containers: [{name: app}]}\nstatus: {podIP: 10.0.0.9}\n---\n");
    yaml.push_str("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ts, namespace: default}\nspec:\n  service: apex\n  backends: [{service: a, weight: 1}, {service: b, weight: 1}]\n---\n");
    yaml.push_str("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: parent}]\n  rules:\n    - backendRefs: [{name: c, port: 80}, {name: d, port: 80}]\n");
    step(&mut model, &yaml, "everything");
    let moved = |name: &str, port: u16, proto: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: {proto}, port: {port}, targetPort: 8080}}]\n"
        )
    };
    step(
        &mut model,
        &moved("a", 81, "http"),
        "a split backend moves its port",
    );
    step(
        &mut model,
        &moved("a", 80, "grpc"),
        "a split backend becomes gRPC",
    );
    step(
        &mut model,
        &moved("c", 81, "http"),
        "a route backend moves its port",
    );
    step(
        &mut model,
        &moved("d", 80, "tcp"),
        "a route backend becomes TCP",
    );
    step(
        &mut model,
        &moved("c", 80, "grpc"),
        "a route backend comes back as gRPC",
    );
    step(
        &mut model,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: parent}]\n  rules:\n    - backendRefs: [{name: c, port: 80, weight: 9}, {name: d, port: 80}]\n",
        "a canary step",
    );
}

#[test]
fn a_view_variant_leaves_policy_out_for_its_proxies_only_at_every_step() {
    for dir in [
        "tests/golden/traffic-policy",
        "tests/golden/gamma",
        "tests/golden/grpc",
    ] {
        let objs = objects(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir));
        run_variant(objs.clone());
        // Policy before the Services, pods and slices it names.
        run_variant(objs.into_iter().rev().collect());
    }
}

/// The variant of one identity leaves out the first object of each policy kind (named
/// before it exists); objects are applied and deleted one by one, and after each step the
/// shared view is what a translation from scratch makes of everything, the variant what
/// it makes without those objects.
fn run_variant(objs: Vec<Object>) {
    use translator::model::Kind;
    use translator::policy::{Excluded, PolicyContext};
    let excl: Excluded = [
        Kind::TrafficSplit,
        Kind::RetryPolicy,
        Kind::HTTPRoute,
        Kind::HTTPRouteGroup,
    ]
    .into_iter()
    .filter_map(|kind| objs.iter().map(|o| o.key()).find(|k| k.kind == kind))
    .collect();
    assert!(!excl.is_empty(), "the inputs have policy");
    let base = ViewKey {
        vhds: false,
        namespace: "default".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    let variant = base.variant_for("spiffe://cluster.local/ns/default/sa/strict");
    // Another identity's variant that leaves out the same objects (it shares what the
    // first resolves in each build).
    let twin = base.variant_for("spiffe://cluster.local/ns/default/sa/strict-too");
    let by_view = [
        (variant.clone(), excl.clone()),
        (twin.clone(), excl.clone()),
    ]
    .into_iter()
    .collect();
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    builder.update(&model, &BTreeSet::new(), &by_view);
    builder.view(&model, &base);
    builder.view(&model, &variant);
    builder.view(&model, &twin);
    let mut previous = PolicyContext::default();
    let mut step = |model: &Model, builder: &mut Builder, changed: ObjectKey, what: &str| {
        let out = builder.update(model, &[changed].into_iter().collect(), &by_view);
        previous = PolicyContext::new(model, &previous.splits, &excl);
        for (view, policy) in [
            (&base, builder.policy().clone()),
            (&variant, previous.clone()),
            (&twin, previous.clone()),
        ] {
            let maps = builder.view(model, view);
            let got = versions(maps.clusters.values().chain(maps.endpoints.values()));
            assert_eq!(got, fresh_with(model, &policy, view), "{what}: {view:?}");
            let routes = versions(maps.routes.values());
            let want = versions(
                outbound_routes(model, &policy, "default")
                    .resources
                    .iter()
                    .map(|r| std::sync::Arc::new(Encoded::new(r)))
                    .collect::<Vec<_>>()
                    .iter(),
            );
            assert_eq!(routes, want, "{what}: {view:?} routes");
        }
        let variant_changed = out.views.iter().any(|(k, _, _)| *k == variant);
        let base_changed = out.views.iter().any(|(k, _, _)| *k == base);
        // A left-out object that appears changes nothing the variant holds.
        if what.starts_with("apply") && excl.iter().any(|k| what.ends_with(&k.to_string())) {
            assert!(!variant_changed, "{what}: the variant does not have it");
        }
        base_changed || variant_changed
    };
    let mut changed_any = false;
    for (i, o) in objs.iter().enumerate() {
        model.apply(o).expect("valid");
        changed_any |= step(
            &model,
            &mut builder,
            o.key(),
            &format!("apply #{i} {}", o.key()),
        );
    }
    assert!(changed_any);
    // The two differ while the objects exist.
    assert_ne!(
        builder
            .view(&model, &base)
            .routes
            .values()
            .next()
            .map(|r| r.version.clone()),
        builder
            .view(&model, &variant)
            .routes
            .values()
            .next()
            .map(|r| r.version.clone()),
    );
    for (i, o) in objs.iter().enumerate().rev() {
        let key = o.key();
        model.delete(&key);
        step(
            &model,
            &mut builder,
            key.clone(),
            &format!("delete #{i} {key}"),
        );
    }
    // Forgetting an unused variant leaves the view alone.
    builder.retain_variants(|_| false);
    let out = builder.update(&model, &BTreeSet::new(), &Default::default());
    assert!(out.views.iter().all(|(k, _, _)| *k == base));
}

/// Routing by address (`envoy::address`): an endpoint change re-sends no route table
/// (neither the outbound one nor a port's own) and no explicit-mode listener; only the
/// intercepted proxies' outbound listener, which lists mesh pods by address, changes.
/// A route change re-sends the port's own table with the outbound one.
#[test]
fn an_endpoint_change_moves_only_the_intercepted_listener_and_the_endpoints() {
    let mut model = Model::new();
    let mut builder = Builder::new(MeshConfig::default());
    let empty: std::collections::BTreeMap<ViewKey, translator::policy::Excluded> =
        Default::default();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n";
    let pod = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}\nspec: {{containers: [{{name: web}}]}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    let keys = apply(
        &mut model,
        &format!(
            "{svc}---\n{}---\n{}---\n{}",
            pod("web-1", "10.0.0.1"),
            pod("web-2", "10.0.0.2"),
            slice_yaml("shop", "web", &["10.0.0.1"])
        ),
    );
    builder.update(&model, &keys, &empty);
    let view = ViewKey {
        vhds: false,
        namespace: "shop".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    };
    let maps = builder.view(&model, &view);
    assert_eq!(
        maps.routes.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["outbound", "outbound|80||web.shop.svc.cluster.local"]
    );
    let explicit = proxy("shop", "client", "client");
    let intercepted = ProxyIdentity {
        node_id: "client.intercepted".into(),
        intercepted: true,
        ..explicit.clone()
    };
    builder.proxy(&model, &explicit);
    builder.proxy(&model, &intercepted);

    let keys = apply(
        &mut model,
        &slice_yaml("shop", "web", &["10.0.0.1", "10.0.0.2"]),
    );
    let out = builder.update(&model, &keys, &empty);
    assert_eq!(out.views.len(), 1);
    let changes = &out.views[0].1;
    assert!(changes.routes.is_empty(), "{changes:?}");
    assert!(changes.clusters.is_empty(), "{changes:?}");
    assert_eq!(changes.endpoints.len(), 1, "{changes:?}");
    let moved: Vec<&str> = out.proxies.iter().map(|(p, _, _)| &*p.node_id).collect();
    assert_eq!(moved, ["client.intercepted"]);

    // A rule change: both tables of the view move together.
    let keys = apply(
        &mut model,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]\n  rules:\n    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier: {set: [{name: x-mark, value: web}]}\n      backendRefs: [{name: web, port: 80}]\n",
    );
    let out = builder.update(&model, &keys, &empty);
    let changes = &out.views[0].1;
    let mut routes: Vec<String> = changes
        .routes
        .iter()
        .map(|u| match u {
            translator::incremental::Update::Put(e) => e.name.to_string(),
            translator::incremental::Update::Remove(n) => format!("-{n}"),
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        ["outbound", "outbound|80||web.shop.svc.cluster.local"]
    );
}
