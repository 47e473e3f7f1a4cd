//! Micro-benchmarks of the translator on a generated mesh of S Services in one namespace,
//! each with one HTTP port, a Pod it selects and an EndpointSlice of E endpoints:
//!
//! - `full_build`: the first `Builder::update` over the whole model, one view registered;
//! - `encode_clusters`: `Encoded::with_revs` over every outbound Cluster of `translate_mesh`;
//! - `one_endpoint_change`: one EndpointSlice changed in the model and `Builder::update`
//!   with that key, after a full build (two versions of the slice alternate);
//! - `new_service`: one new Service and its slice applied and `Builder::update` run (the
//!   pair is deleted again, untimed, after each iteration).
//! - `new_service_grpc`: the same with a gRPC view and 100 proxyless gRPC clients
//!   registered (each holds every client Listener of its view: the per-proxy cost).
//! - `route_weight_change` / `split_weight_change`: one in five Services is routed by an
//!   HTTPRoute (or split by a TrafficSplit) to the next two; one of them changes its
//!   weights (90/10 and 50/50 alternate) and `Builder::update` runs: a canary step.
//! - `route_weight_change_10_variants`: the same canary step (HTTPRoutes) while 10
//!   identities' variants of the view each leave out another HTTPRoute (containment);
//!   `route_weight_change_10_variants_one_object`: all 10 leave out the same one (a bad
//!   object every identity rejects).
//! - `variant_start`: a variant of the view that leaves out one HTTPRoute is made and
//!   brought up to date (it is forgotten again, untimed, after each iteration).
//!
//! Run: `cargo bench -p translator -- --warm-up-time 1 --measurement-time 3`.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use translator::encoded::Encoded;
use translator::incremental::Builder;
use translator::model::{Egress, Model, Object, ObjectKey, ViewKey, parse_manifest};
use translator::policy::Excluded;
use translator::{MeshConfig, translate_mesh};
use xds_types::XdsType;

const NS: &str = "bench";
const SIZES: [usize; 2] = [100, 1000];
const ENDPOINTS: usize = 10;

fn svc_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\n"
    )
}

/// The slice of Service number `i`; `variant` shifts its last address.
fn slice_yaml(name: &str, i: usize, variant: usize) -> String {
    let eps: Vec<String> = (0..ENDPOINTS)
        .map(|j| {
            let last = if j + 1 == ENDPOINTS {
                j + 1 + variant
            } else {
                j + 1
            };
            format!(
                "{{addresses: [\"10.{}.{}.{last}\"], conditions: {{ready: true}}}}",
                i / 256,
                i % 256
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: {NS}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n---\n",
        eps.join(", ")
    )
}

fn pod_yaml(name: &str, i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-0, namespace: {NS}, labels: {{app: {name}}}}}\nspec:\n  serviceAccountName: {name}\n  containers: [{{name: app, image: example/app, ports: [{{name: http, containerPort: 8080}}]}}]\nstatus: {{podIP: \"10.{}.{}.1\"}}\n---\n",
        i / 256,
        i % 256
    )
}

fn parse(yaml: &str) -> Vec<Object> {
    parse_manifest(yaml)
        .expect("generated manifest is valid")
        .objects
}

fn apply(model: &mut Model, objects: &[Object]) {
    for o in objects {
        model.apply(o).expect("generated object is accepted");
    }
}

/// A model of `services` Services, its changed keys taken.
fn mesh(services: usize) -> (Model, BTreeSet<ObjectKey>) {
    let mut yaml = String::new();
    for i in 0..services {
        let name = format!("s{i}");
        yaml.push_str(&svc_yaml(&name));
        yaml.push_str(&slice_yaml(&name, i, 0));
        yaml.push_str(&pod_yaml(&name, i));
    }
    let mut model = Model::new();
    apply(&mut model, &parse(&yaml));
    let keys = model.take_changes();
    (model, keys)
}

fn view() -> ViewKey {
    ViewKey {
        vhds: false,
        namespace: NS.into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    }
}

/// A builder after a full build of `model`, with the view registered.
fn built(model: &Model, keys: &BTreeSet<ObjectKey>) -> Builder {
    let mut builder = Builder::new(MeshConfig::default());
    builder.view(model, &view());
    let out = builder.update(model, keys, &BTreeMap::new());
    assert_eq!(out.views.len(), 1, "the view sees the mesh");
    builder
}

fn full_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("full_build");
    g.sample_size(20);
    for s in SIZES {
        let (model, keys) = mesh(s);
        let excluded: BTreeMap<ViewKey, Excluded> = BTreeMap::new();
        g.throughput(Throughput::Elements(s as u64));
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter_batched(
                || {
                    let mut builder = Builder::new(MeshConfig::default());
                    builder.view(&model, &view());
                    builder
                },
                |mut builder| {
                    let out = builder.update(&model, &keys, &excluded);
                    (builder, out)
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

fn encode_clusters(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_clusters");
    for s in SIZES {
        let (model, keys) = mesh(s);
        let builder = built(&model, &keys);
        let clusters: Vec<_> = translate_mesh(&model, &MeshConfig::default(), builder.policy())
            .resources
            .into_iter()
            .filter(|r| r.kind == XdsType::Cluster)
            .collect();
        assert_eq!(clusters.len(), s, "one outbound Cluster per Service");
        g.throughput(Throughput::Elements(s as u64));
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter(|| {
                clusters
                    .iter()
                    .map(|r| Encoded::with_revs(r, |k| model.rev(k).unwrap_or(0)))
                    .collect::<Vec<_>>()
            });
        });
    }
    g.finish();
}

fn one_endpoint_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_endpoint_change");
    for s in SIZES {
        let (mut model, keys) = mesh(s);
        let mut builder = built(&model, &keys);
        let excluded: BTreeMap<ViewKey, Excluded> = BTreeMap::new();
        let i = s / 2;
        let versions = [
            parse(&slice_yaml(&format!("s{i}"), i, 1)),
            parse(&slice_yaml(&format!("s{i}"), i, 0)),
        ];
        // Each iteration is a real change: exactly one ClusterLoadAssignment re-encoded.
        for v in &versions {
            apply(&mut model, v);
            let changed = model.take_changes();
            let out = builder.update(&model, &changed, &excluded);
            assert_eq!(out.encoded, 1, "one endpoint change encodes one resource");
        }
        let mut n = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter(|| {
                apply(&mut model, &versions[n % 2]);
                n += 1;
                let changed = model.take_changes();
                black_box(builder.update(&model, &changed, &excluded))
            });
        });
    }
    g.finish();
}

/// The Service (and its slice) the `new_service` benchmarks add.
fn added_service(s: usize) -> Vec<Object> {
    let mut yaml = svc_yaml("added");
    yaml.push_str(&slice_yaml("added", s, 0));
    parse(&yaml)
}

/// `iters` times: apply `added` and build (timed, the output checked), then delete it
/// and build again (untimed).
fn time_new_service(
    iters: u64,
    model: &mut Model,
    builder: &mut Builder,
    added: &[Object],
    check: impl Fn(&translator::incremental::BuildOutput),
) -> Duration {
    let excluded: BTreeMap<ViewKey, Excluded> = BTreeMap::new();
    let keys: Vec<ObjectKey> = added.iter().map(Object::key).collect();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        apply(model, added);
        let changed = model.take_changes();
        let out = builder.update(model, &changed, &excluded);
        total += start.elapsed();
        check(&out);
        drop(black_box(out));
        for k in &keys {
            model.delete(k);
        }
        let changed = model.take_changes();
        builder.update(model, &changed, &excluded);
    }
    total
}

fn new_service(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_service");
    for s in SIZES {
        let (mut model, keys) = mesh(s);
        let mut builder = built(&model, &keys);
        let added = added_service(s);
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter_custom(|iters| {
                time_new_service(iters, &mut model, &mut builder, &added, |out| {
                    assert_eq!(out.views.len(), 1, "the new Service reaches the view");
                })
            });
        });
    }
    g.finish();
}

/// GRPC proxies registered in `new_service_grpc`.
const GRPC_PROXIES: usize = 100;

fn new_service_grpc(c: &mut Criterion) {
    use translator::identity::{ProxyIdentity, ProxyKind};
    let mut g = c.benchmark_group("new_service_grpc");
    g.sample_size(10);
    for s in SIZES {
        let (mut model, keys) = mesh(s);
        let mut builder = built(&model, &keys);
        let grpc = ViewKey {
            grpc: true,
            ..view()
        };
        builder.view(&model, &grpc);
        for p in 0..GRPC_PROXIES {
            let i = p % s;
            builder.proxy(
                &model,
                &ProxyIdentity {
                    vhds: false,
                    node_id: format!("grpc-{p}"),
                    kind: ProxyKind::Grpc,
                    namespace: NS.into(),
                    pod: format!("s{i}-0"),
                    service_account: format!("s{i}"),
                    pod_ip: None,
                    outbound_port: 15001,
                    app_address: "127.0.0.1".parse().expect("ip"),
                    intercepted: false,
                    inbound_port: 15006,
                },
            );
        }
        let added = added_service(s);
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter_custom(|iters| {
                time_new_service(iters, &mut model, &mut builder, &added, |out| {
                    assert_eq!(out.views.len(), 2, "the new Service reaches both views");
                    assert!(
                        out.views.iter().any(|(_, c, _)| !c.listeners.is_empty()),
                        "the gRPC view serves its clients the new Listeners"
                    );
                    assert!(out.proxies.is_empty(), "no client is rebuilt for it");
                })
            });
        });
    }
    g.finish();
}

/// Policy number `i` of kind `route` (an HTTPRoute) or not (a TrafficSplit): Service
/// `s{i}` to `s{i+1}` and `s{i+2}`, weighted `a` and `b`.
fn policy_yaml(route: bool, i: usize, s: usize, a: u32, b: u32) -> String {
    let (x, y) = ((i + 1) % s, (i + 2) % s);
    if route {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: {NS}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: s{i}, port: 80}}]\n  rules:\n    - backendRefs: [{{name: s{x}, port: 80, weight: {a}}}, {{name: s{y}, port: 80, weight: {b}}}]\n---\n"
        )
    } else {
        format!(
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: t{i}, namespace: {NS}}}\nspec:\n  service: s{i}\n  backends: [{{service: s{x}, weight: {a}}}, {{service: s{y}, weight: {b}}}]\n---\n"
        )
    }
}

/// `n` view variants, variant `j` leaving out HTTPRoute `r{5 (j + 1)}` (or all of them
/// `r5`, unless `distinct`).
fn variants(n: usize, distinct: bool) -> BTreeMap<ViewKey, Excluded> {
    (0..n)
        .map(|j| {
            let route = if distinct { 5 * (j + 1) } else { 5 };
            let key = ObjectKey::new(translator::model::Kind::HTTPRoute, NS, &format!("r{route}"));
            (
                view().variant_for(&format!("spiffe://cluster.local/ns/{NS}/sa/v{j}")),
                [key].into_iter().collect(),
            )
        })
        .collect()
}

fn weight_change(c: &mut Criterion, route: bool, (n_variants, distinct): (usize, bool)) {
    let name = match (route, n_variants, distinct) {
        (true, 0, _) => "route_weight_change".to_string(),
        (true, n, true) => format!("route_weight_change_{n}_variants"),
        (true, n, false) => format!("route_weight_change_{n}_variants_one_object"),
        (false, _, _) => "split_weight_change".to_string(),
    };
    let mut g = c.benchmark_group(name);
    for s in SIZES {
        let (mut model, _) = mesh(s);
        let policies: String = (0..s)
            .step_by(5)
            .map(|i| policy_yaml(route, i, s, 90, 10))
            .collect();
        apply(&mut model, &parse(&policies));
        let keys = model.take_changes();
        let mut builder = built(&model, &keys);
        let steps = [
            parse(&policy_yaml(route, 0, s, 50, 50)),
            parse(&policy_yaml(route, 0, s, 90, 10)),
        ];
        let excluded = variants(n_variants, distinct);
        for k in excluded.keys() {
            builder.view(&model, k);
        }
        builder.update(&model, &BTreeSet::new(), &excluded);
        let mut n = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter(|| {
                apply(&mut model, &steps[n % 2]);
                n += 1;
                let changed = model.take_changes();
                let out = builder.update(&model, &changed, &excluded);
                assert_eq!(
                    out.views.len(),
                    1 + n_variants,
                    "the weight change reaches the view and its variants"
                );
                black_box(out)
            });
        });
    }
    g.finish();
}

fn route_weight_change(c: &mut Criterion) {
    weight_change(c, true, (0, true));
}

fn split_weight_change(c: &mut Criterion) {
    weight_change(c, false, (0, true));
}

fn route_weight_change_10_variants(c: &mut Criterion) {
    weight_change(c, true, (10, true));
}

fn route_weight_change_10_variants_one_object(c: &mut Criterion) {
    weight_change(c, true, (10, false));
}

fn variant_start(c: &mut Criterion) {
    let mut g = c.benchmark_group("variant_start");
    for s in SIZES {
        let (mut model, _) = mesh(s);
        let policies: String = (0..s)
            .step_by(5)
            .map(|i| policy_yaml(true, i, s, 90, 10))
            .collect();
        apply(&mut model, &parse(&policies));
        let keys = model.take_changes();
        let mut builder = built(&model, &keys);
        let one = variants(1, true);
        let none: BTreeMap<ViewKey, Excluded> = BTreeMap::new();
        g.bench_with_input(BenchmarkId::from_parameter(s), &s, |b, _| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for k in one.keys() {
                        builder.view(&model, k);
                    }
                    let out = builder.update(&model, &BTreeSet::new(), &one);
                    took += start.elapsed();
                    assert_eq!(out.views.len(), 1, "the variant leaves the route out");
                    builder.retain_variants(|_| false);
                    black_box(builder.update(&model, &BTreeSet::new(), &none));
                }
                took
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    full_build,
    encode_clusters,
    one_endpoint_change,
    new_service,
    new_service_grpc,
    route_weight_change,
    split_weight_change,
    route_weight_change_10_variants,
    route_weight_change_10_variants_one_object,
    variant_start
);
criterion_main!(benches);
