//! An in-process fake Kubernetes API server behind `kube::Client::new`: real LIST and
//! streaming WATCH (newline-delimited JSON events) with resourceVersions, bookmarks,
//! `410 Gone` after compaction, status merge-patches, and Lease get/create/replace with
//! optimistic concurrency, and TokenReview (tokens registered with
//! [`FakeKube::add_token`]). Tests drive it with [`FakeKube::apply`], [`FakeKube::delete`],
//! [`FakeKube::compact`] and [`FakeKube::break_watches`].
//!
//! Not covered: label/field selectors, pagination (`limit`/`continue`), server-side
//! apply, schema validation and admission, `sendInitialEvents` streaming lists.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// (apiVersion, kind, plural) of the resources the fake serves besides the mesh's kinds
/// ([`crds::kinds`]): what the control plane writes and asks.
const OTHER_RESOURCES: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io/v1", "Lease", "leases"),
    ("v1", "Secret", "secrets"),
    ("authentication.k8s.io/v1", "TokenReview", "tokenreviews"),
];

/// (stored apiVersion, kind, plural) of every resource the fake serves: every row of the
/// kind table, then the others.
fn resources() -> impl Iterator<Item = (String, &'static str, &'static str)> {
    crds::kinds::all()
        .map(|k| (k.api_version(), k.kind, k.plural))
        .chain(
            OTHER_RESOURCES
                .iter()
                .map(|(api, kind, plural)| (api.to_string(), *kind, *plural)),
        )
}

/// An accepted older version of a mesh kind (the SMI kinds: v1alpha1 to v1alpha4, with
/// conversion `None`) -> the storage version: the stored object differs only in its
/// apiVersion, as with a real API server.
fn storage_version(api_version: &str, kind: &str) -> Option<String> {
    crds::kinds::by_api_version_kind(api_version, kind)
        .map(|k| k.api_version())
        .filter(|stored| stored != api_version)
}

fn resource_by_plural(plural: &str) -> Option<(String, &'static str)> {
    resources().find(|r| r.2 == plural).map(|r| (r.0, r.1))
}

fn plural_of(api_version: &str, kind: &str) -> Option<&'static str> {
    resources()
        .find(|r| r.0 == api_version && r.1 == kind)
        .map(|r| r.2)
}

/// The plurals of the resources whose CRD the user installs (the Gateway API's).
fn user_installed() -> impl Iterator<Item = &'static str> {
    crds::kinds::all()
        .filter(|k| k.provider == crds::kinds::Provider::UserInstalled)
        .map(|k| k.plural)
}

type Key = (String, String, String); // plural, namespace, name

struct Watch {
    plural: String,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (rv, plural, namespace, type, object)
    events: Vec<(u64, String, String, &'static str, Value)>,
    compacted: u64,
    watches: Vec<Watch>,
    requests: Vec<String>,
    status_patches: Vec<(String, String)>,
    fail_next_watches: usize,
    /// Resources not served, as `PLURAL` (the CRD is missing) or `PLURAL/VERSION` (the CRD
    /// does not serve that version): they answer 404.
    hidden: BTreeSet<String>,
    /// token -> (namespace, service account, audiences)
    tokens: BTreeMap<String, (String, String, Vec<String>)>,
    /// The pod each bound token belongs to.
    token_pods: BTreeMap<String, String>,
}

impl Store {
    fn emit(&mut self, plural: &str, ns: &str, type_: &'static str, obj: Value) {
        self.events
            .push((self.rv, plural.into(), ns.into(), type_, obj.clone()));
        let line = event_line(type_, &obj);
        self.watches.retain(|w| {
            if w.plural != plural || w.namespace.as_deref().is_some_and(|n| n != ns) {
                return true;
            }
            w.tx.send(line.clone()).is_ok()
        });
    }

    fn put(&mut self, plural: &str, mut obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (plural.to_string(), ns.clone(), name.clone());
        self.rv += 1;
        let old = self.objects.get(&key).cloned();
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(ns);
        meta["resourceVersion"] = json!(self.rv.to_string());
        let generation = match &old {
            None => 1,
            Some(o) => {
                let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                if o.get("spec") != obj.get("spec") {
                    g + 1
                } else {
                    g
                }
            }
        };
        obj["metadata"]["generation"] = json!(generation);
        let (uid, created) = match &old {
            Some(o) => (
                o["metadata"]["uid"].clone(),
                o["metadata"]["creationTimestamp"].clone(),
            ),
            None => (
                json!(format!("uid-{}", self.rv)),
                obj["metadata"]
                    .get("creationTimestamp")
                    .cloned()
                    .unwrap_or_else(|| json!(format!("2026-01-01T00:00:{:02}Z", self.rv % 60))),
            ),
        };
        obj["metadata"]["uid"] = uid;
        obj["metadata"]["creationTimestamp"] = created;
        if let Some(o) = &old
            && obj.get("status").is_none()
            && let Some(status) = o.get("status")
        {
            obj["status"] = status.clone();
        }
        self.objects.insert(key, obj.clone());
        self.emit(
            plural,
            &ns,
            if old.is_some() { "MODIFIED" } else { "ADDED" },
            obj.clone(),
        );
        obj
    }
}

fn event_line(type_: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": type_, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status_error(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// The fake API server. Clones share state.
#[derive(Clone, Default)]
pub struct FakeKube {
    store: Arc<Mutex<Store>>,
}

impl FakeKube {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock()
    }

    /// Whether the Gateway API CRDs (HTTPRoute, GRPCRoute) are installed; they are by
    /// default. Uninstalled, their resources answer 404 as on a real server.
    pub fn set_gateway_api(&self, installed: bool) {
        for plural in user_installed() {
            self.set_served(plural, None, installed);
        }
    }

    /// Whether the resource `plural` is served (at `version`, or at all with `None`).
    /// Not served, it answers 404 as a real server does when its CRD is missing, or does
    /// not serve that version.
    pub fn set_served(&self, plural: &str, version: Option<&str>, served: bool) {
        let key = match version {
            Some(v) => format!("{plural}/{v}"),
            None => plural.to_string(),
        };
        let mut s = self.lock();
        if served {
            s.hidden.remove(&key);
        } else {
            s.hidden.insert(key);
        }
    }

    /// A client talking to this fake (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// Serves the fake over plain HTTP on `listener` (for a control-plane process, with a
    /// kubeconfig from [`FakeKube::kubeconfig`]) until the task is dropped.
    pub async fn serve_http(&self, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let fake = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let fake = fake.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let req = Request::from_parts(parts, kube::client::Body::from(bytes));
                        Ok::<_, Infallible>(fake.handle(req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    /// A kubeconfig that points at `addr` (where [`FakeKube::serve_http`] listens).
    pub fn kubeconfig(addr: std::net::SocketAddr) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: fake, user: {{token: fake}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\ncurrent-context: fake\n"
        )
    }

    /// Registers a ServiceAccount token minted for `audiences`, as the kubelet's projected
    /// tokens are; a TokenReview of it authenticates
    /// `system:serviceaccount:NAMESPACE:SA` for the audiences both sides name.
    pub fn add_token(&self, token: &str, namespace: &str, sa: &str, audiences: &[&str]) {
        self.lock().tokens.insert(
            token.to_string(),
            (
                namespace.to_string(),
                sa.to_string(),
                audiences.iter().map(|a| a.to_string()).collect(),
            ),
        );
    }

    /// Mints a projected ServiceAccount token as the kubelet would (a JWT with `aud`,
    /// `exp` an hour away, `nbf`, `sub` = `system:serviceaccount:NAMESPACE:SA`) and
    /// registers it ([`FakeKube::add_token`]).
    pub fn mint_token(&self, namespace: &str, sa: &str, audiences: &[&str]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let n = self.lock().tokens.len();
        let token = jwt(&json!({
            "aud": audiences, "exp": now + 3600, "iat": now, "nbf": now,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": format!("system:serviceaccount:{namespace}:{sa}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": sa, "uid": format!("uid-{n}")}},
            "jti": format!("fake-{n}"),
        }));
        self.add_token(&token, namespace, sa, audiences);
        token
    }

    /// Like [`FakeKube::mint_token`], for a token bound to `pod` (as projected tokens
    /// are): its TokenReview names the pod in `user.extra`.
    pub fn mint_pod_token(
        &self,
        namespace: &str,
        sa: &str,
        pod: &str,
        audiences: &[&str],
    ) -> String {
        let token = self.mint_token(namespace, sa, audiences);
        self.lock()
            .token_pods
            .insert(token.clone(), pod.to_string());
        token
    }

    /// Like [`FakeKube::add_token`], for a token bound to `pod`.
    pub fn add_pod_token(
        &self,
        token: &str,
        namespace: &str,
        sa: &str,
        pod: &str,
        audiences: &[&str],
    ) {
        self.add_token(token, namespace, sa, audiences);
        self.lock()
            .token_pods
            .insert(token.to_string(), pod.to_string());
    }

    fn token_review(&self, body: &[u8]) -> Response<Body> {
        let Ok(review) = serde_json::from_slice::<Value>(body) else {
            return status_error(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let wanted: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        let known = self.lock().tokens.get(token).cloned();
        let pod = self.lock().token_pods.get(token).cloned();
        let status = match known {
            Some((ns, sa, auds)) => {
                let both: Vec<&String> = if wanted.is_empty() {
                    auds.iter().collect()
                } else {
                    wanted.iter().filter(|a| auds.contains(a)).collect()
                };
                if both.is_empty() {
                    json!({"authenticated": false, "error": "token audiences are invalid for the target audiences"})
                } else {
                    let mut user = json!({"username": format!("system:serviceaccount:{ns}:{sa}"),
                                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}")]});
                    if let Some(pod) = pod {
                        user["extra"] = json!({"authentication.kubernetes.io/pod-name": [pod]});
                    }
                    json!({"authenticated": true, "audiences": both, "user": user})
                }
            }
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        full(
            StatusCode::CREATED,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "metadata": {}, "spec": review["spec"].clone(), "status": status}),
        )
    }

    /// Creates or replaces an object (by its apiVersion and kind), as `kubectl apply`.
    /// An object of an older served version of a multi-version CRD is stored at the
    /// storage version (conversion `None`).
    pub fn apply(&self, mut obj: Value) -> Value {
        let mut api = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        if let Some(stored) = storage_version(&api, obj["kind"].as_str().unwrap_or_default()) {
            obj["apiVersion"] = json!(stored);
            api = stored;
        }
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let plural = plural_of(&api, &kind)
            .unwrap_or_else(|| panic!("fake API server does not serve {api}/{kind}"));
        self.lock().put(plural, obj)
    }

    /// Deletes an object.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let Some(plural) = plural_of(api_version, kind) else {
            return;
        };
        let mut s = self.lock();
        if let Some(mut obj) = s
            .objects
            .remove(&(plural.into(), namespace.into(), name.into()))
        {
            s.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            s.emit(plural, namespace, "DELETED", obj);
        }
    }

    /// One object as stored.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let plural = plural_of(api_version, kind)?;
        self.lock()
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Forgets history: a watch resuming from an older resourceVersion gets `410 Gone`.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.compacted = s.rv;
        s.events.clear();
    }

    /// Ends every open watch (as an API server restart or a load balancer would).
    pub fn break_watches(&self) {
        self.lock().watches.clear();
    }

    /// The next `n` watch requests fail with 500.
    pub fn fail_next_watches(&self, n: usize) {
        self.lock().fail_next_watches = n;
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch.
    pub fn bookmark(&self) {
        let mut s = self.lock();
        let rv = s.rv.to_string();
        s.watches.retain(|w| {
            let (api, kind) =
                resource_by_plural(&w.plural).unwrap_or(("v1".to_string(), "Unknown"));
            let obj = json!({"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": rv}});
            w.tx.send(event_line("BOOKMARK", &obj)).is_ok()
        });
    }

    /// Every request seen, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Status patches: (path, fieldManager).
    pub fn status_patches(&self) -> Vec<(String, String)> {
        self.lock().status_patches.clone()
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), percent_decode(v)))
            })
            .collect();
        self.lock().requests.push(format!(
            "{method} {path}?{}",
            req.uri().query().unwrap_or_default()
        ));
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status_error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match segs.first() {
            Some(&"api") if segs.len() >= 2 => &segs[2..],
            Some(&"apis") if segs.len() >= 3 => &segs[3..],
            _ => return status_error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
        };
        let (ns, plural, name, sub) = match rest {
            [plural] => (None, *plural, None, None),
            ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
            ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
            _ => return status_error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
        };
        let version = segs.get(if segs.first() == Some(&"api") { 1 } else { 2 });
        let hidden = {
            let s = self.lock();
            s.hidden.contains(plural)
                || version.is_some_and(|v| s.hidden.contains(&format!("{plural}/{v}")))
        };
        if hidden {
            return status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let Some((api_version, kind)) = resource_by_plural(plural) else {
            return status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no resource {plural}"),
            );
        };
        if plural == "tokenreviews" && method == "POST" {
            return self.token_review(&body);
        }
        let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
        match (method.as_str(), name, sub) {
            ("GET", None, None) if watch => self.watch(plural, ns, &query),
            ("GET", None, None) => {
                let s = self.lock();
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((p, n, _), _)| p == plural && ns.is_none_or(|ns| ns == n))
                    .map(|(_, v)| v.clone())
                    .collect();
                full(
                    StatusCode::OK,
                    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                           "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
                )
            }
            ("GET", Some(name), None) => match self.lock().objects.get(&(
                plural.into(),
                ns.unwrap_or("default").into(),
                name.into(),
            )) {
                Some(obj) => full(StatusCode::OK, obj.clone()),
                None => status_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{plural} {name:?} not found"),
                ),
            },
            ("POST", None, None) => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                    return status_error(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let ns = ns.unwrap_or("default");
                obj["metadata"]["namespace"] = json!(ns);
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let mut s = self.lock();
                if s.objects
                    .contains_key(&(plural.into(), ns.into(), name.clone()))
                {
                    return status_error(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{plural} {name:?} already exists"),
                    );
                }
                let stored = s.put(plural, obj);
                full(StatusCode::CREATED, stored)
            }
            ("PUT", Some(name), None) => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                    return status_error(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let ns = ns.unwrap_or("default");
                obj["metadata"]["namespace"] = json!(ns);
                let mut s = self.lock();
                let current = s
                    .objects
                    .get(&(plural.into(), ns.into(), name.into()))
                    .cloned();
                let Some(current) = current else {
                    return status_error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{plural} {name:?} not found"),
                    );
                };
                if obj["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return status_error(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    );
                }
                let stored = s.put(plural, obj);
                full(StatusCode::OK, stored)
            }
            ("PATCH", Some(name), Some("status")) => {
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                    return status_error(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let ns = ns.unwrap_or("default");
                let mut s = self.lock();
                let Some(mut obj) = s
                    .objects
                    .get(&(plural.into(), ns.into(), name.into()))
                    .cloned()
                else {
                    return status_error(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{plural} {name:?} not found"),
                    );
                };
                // A resourceVersion in the patch is a precondition, as on a real server.
                if let Some(rv) = patch.get("metadata").and_then(|m| m.get("resourceVersion"))
                    && !rv.is_null()
                    && *rv != obj["metadata"]["resourceVersion"]
                {
                    return status_error(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    );
                }
                if let Some(status) = patch.get("status") {
                    merge(&mut obj["status"], status);
                }
                let manager = query.get("fieldManager").cloned().unwrap_or_default();
                s.status_patches.push((path.clone(), manager));
                let stored = s.put(plural, obj);
                full(StatusCode::OK, stored)
            }
            _ => status_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the fake",
            ),
        }
    }

    fn watch(
        &self,
        plural: &str,
        ns: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let mut s = self.lock();
        if s.fail_next_watches > 0 {
            s.fail_next_watches -= 1;
            return status_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected watch failure",
            );
        }
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        if from < s.compacted {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": format!("too old resource version: {from} ({})", s.compacted),
                              "reason": "Expired", "code": 410});
            let _ = tx.send(event_line("ERROR", &gone));
            drop(tx);
        } else {
            for (rv, p, n, t, obj) in &s.events {
                if *rv > from && p == plural && ns.is_none_or(|ns| ns == n) {
                    let _ = tx.send(event_line(t, obj));
                }
            }
            s.watches.push(Watch {
                plural: plural.into(),
                namespace: ns.map(str::to_string),
                tx,
            });
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        })
        .boxed();
        let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A JWT with `claims` and a made-up RS256 signature: shaped like a ServiceAccount token,
/// trusted by nothing (only [`FakeKube::add_token`] makes a TokenReview accept it).
pub fn jwt(claims: &Value) -> String {
    use base64::Engine;
    let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({"alg": "RS256", "kid": "fake"});
    format!(
        "{}.{}.{}",
        e(header.to_string().as_bytes()),
        e(claims.to_string().as_bytes()),
        e(b"not a real signature")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fake serves every row of the kind table, at every version it accepts, and
    /// stores it at the stored version.
    #[test]
    fn every_row_of_the_kind_table_is_served_at_every_accepted_version() {
        let fake = FakeKube::new();
        for row in crds::kinds::all() {
            let stored = row.api_version();
            assert_eq!(plural_of(&stored, row.kind), Some(row.plural));
            assert_eq!(
                resource_by_plural(row.plural),
                Some((stored.clone(), row.kind))
            );
            for (i, api_version) in row.api_versions().into_iter().enumerate() {
                let name = format!("x{i}");
                let obj = fake.apply(json!({"apiVersion": api_version, "kind": row.kind,
                                            "metadata": {"name": name, "namespace": "ns"}}));
                assert_eq!(obj["apiVersion"], json!(stored), "{api_version}");
                assert!(fake.get(&stored, row.kind, "ns", &name).is_some());
            }
        }
    }
}
