//! Writes `status` (observedGeneration, `Accepted`, `ResolvedRefs`, and while proxies
//! reject config made from the object `RejectedByProxies` or `Implicated`) of the kinds
//! whose row of the kind table ([`crds::kinds`]) says `Conditions` (TrafficSplits and
//! RetryPolicies), and `status.parents` of those that say `RouteParents` (Gateway API
//! routes: one entry per Service parent, `controllerName: rudder.dev/mesh`; other
//! controllers' entries are kept), after each build, only while this replica leads (see `lease`). Only changed
//! statuses are patched; `lastTransitionTime` moves only when a condition's status does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crds::gateway::{CONTROLLER_NAME, Route, RouteParentStatus};
use crds::kinds::StatusWrite;
use crds::{ConditionReason, MeshCondition};
use crds::{GRPCRoute, HTTPRoute, ParentReference, RouteStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use translator::model::{Kind, ObjectKey};
use translator::status::{PolicyStatus, policy_status};

use crate::k8s::watch::Rejected;
use crate::xds::containment::Suspect;
use crate::xds::store::Store;

/// The condition of an object that shares a rejected resource with others, while the
/// control plane finds which of them the proxy rejects. `Accepted` is left as it is.
pub const IMPLICATED: &str = "Implicated";
/// The condition of an object some proxies reject config made from: True, reason
/// `Rejected`, while it is left out for them; the message names their identities and
/// namespace and the error text. `Accepted` is left as validation decided (the word of
/// proxies never flips it), and the condition goes away once the rejection is lifted.
pub const REJECTED_BY_PROXIES: &str = "RejectedByProxies";

/// Most rejecting identities a message names.
const IDENTITIES_NAMED: usize = 4;
/// Longest proxy error text a message quotes, in characters.
const ERROR_QUOTED: usize = 256;

/// One identity's rejection of an object: (identity, its namespace, why).
type Rejection = (Arc<str>, String, Suspect);

/// What containment leaves out now, by (object, confirmed), with who rejected it.
fn rejections(cache: &Store) -> BTreeMap<(ObjectKey, bool), Vec<Rejection>> {
    let mut out: BTreeMap<(ObjectKey, bool), Vec<Rejection>> = BTreeMap::new();
    for (view, key, suspect) in cache.contained() {
        let Some(identity) = view.variant else {
            continue;
        };
        out.entry((key, suspect.confirmed))
            .or_default()
            .push((identity, view.namespace, suspect));
    }
    for who in out.values_mut() {
        who.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        who.dedup_by(|a, b| a.0 == b.0);
    }
    out
}

/// The message of a `RejectedByProxies` (confirmed) or `Implicated` condition: where it
/// was rejected (identities and namespace, a few named) and the first proxy's words,
/// quoted and cut: they are untrusted text.
fn rejection_message(key: &ObjectKey, confirmed: bool, who: &[Rejection]) -> String {
    let mut named: Vec<String> = who
        .iter()
        .take(IDENTITIES_NAMED)
        .map(|(id, ns, _)| format!("{id} (namespace {ns})"))
        .collect();
    if who.len() > IDENTITIES_NAMED {
        named.push(format!("{} more", who.len() - IDENTITIES_NAMED));
    }
    let Some((_, _, first)) = who.first() else {
        return String::new();
    };
    let error = crds::text::quote(&crds::text::clip(&first.error, ERROR_QUOTED));
    if confirmed {
        format!(
            "proxies of {} rejected {} made from {key}: {error}; left out for the proxies of those identities only (every other proxy keeps it) until it changes or they disconnect",
            named.join(", "),
            first.resource
        )
    } else {
        format!(
            "proxies of {} rejected {} made from {key} and other objects: {error}; left out for the proxies of those identities only while the control plane narrows down which object caused it",
            named.join(", "),
            first.resource
        )
    }
}

/// What status every policy object should carry now, rejected objects included.
pub fn desired(cache: &Store, rejected: &Rejected) -> BTreeMap<ObjectKey, PolicyStatus> {
    let mut out = cache.read(policy_status);
    // Copied out so the rejected-objects lock is never held while the store's is taken:
    // the watchers take them the other way round (a deadlock seen in a full test run).
    let refused: Vec<(ObjectKey, Option<i64>, String, bool)> = {
        let rejected = rejected.lock();
        rejected
            .iter()
            .filter(|(key, _)| key.kind.info().status.is_some())
            .map(|(key, (generation, err))| {
                (
                    key.clone(),
                    *generation,
                    format!("{}: {}", err.field, err.message),
                    err.unsupported,
                )
            })
            .collect()
    };
    for (key, generation, message, unsupported) in refused {
        // A route refused as a whole: its conditions go to every Service parent.
        let reason = match (key.kind.is_route(), unsupported) {
            (true, true) => ConditionReason::UnsupportedValue,
            (true, false) => ConditionReason::Invalid,
            (false, _) => ConditionReason::Invalid,
        };
        out.insert(
            key,
            PolicyStatus {
                generation,
                conditions: vec![MeshCondition::new("Accepted", false, reason, message)],
                parents: Vec::new(),
            },
        );
    }
    for ((key, confirmed), who) in rejections(cache) {
        let message = rejection_message(&key, confirmed, &who);
        // An HTTPRouteGroup has no status of its own: the splits that use it say it.
        let targets: Vec<ObjectKey> = if key.kind == Kind::HTTPRouteGroup {
            out.keys()
                .filter(|k| k.kind == Kind::TrafficSplit && k.namespace == key.namespace)
                .filter(|k| {
                    cache.read(|m| {
                        m.traffic_splits().any(|ts| {
                            ts.metadata.name.as_deref() == Some(k.name.as_str())
                                && ts.metadata.namespace.as_deref().unwrap_or("default")
                                    == k.namespace
                                && ts.spec.matches.iter().any(|m| m.name == key.name)
                        })
                    })
                })
                .cloned()
                .collect()
        } else {
            vec![key.clone()]
        };
        for target in targets {
            let Some(status) = out.get_mut(&target) else {
                continue;
            };
            // `Accepted` stays as validation decided: proxies' word never flips it.
            let condition = if confirmed {
                // The search (re-admitting half of the suspects at a time, judged by the
                // rejecting proxy) showed this object alone makes those proxies reject.
                MeshCondition::new(
                    REJECTED_BY_PROXIES,
                    true,
                    ConditionReason::Rejected,
                    message.clone(),
                )
            } else {
                // Not blamed: it only shares the rejected resource with other objects.
                MeshCondition::new(
                    IMPLICATED,
                    true,
                    ConditionReason::SharesRejectedResource,
                    message.clone(),
                )
            };
            status.conditions.retain(|c| c.type_ != condition.type_);
            status.conditions.push(condition);
            // A route's parents carry what containment says, over their own.
            if target.kind.is_route() {
                let extra: Vec<MeshCondition> = status
                    .conditions
                    .iter()
                    .filter(|c| c.type_ == IMPLICATED || c.type_ == REJECTED_BY_PROXIES)
                    .cloned()
                    .collect();
                for (_, conditions) in &mut status.parents {
                    for c in &extra {
                        conditions.retain(|o| o.type_ != c.type_);
                        conditions.push(c.clone());
                    }
                }
            }
        }
    }
    out
}

/// Without an API server (manifest mode) the conditions go to the log whenever they
/// change.
pub async fn log_changes(cache: Arc<Store>) {
    let mut builds = cache.builds();
    let none = Rejected::default();
    let mut last: BTreeMap<ObjectKey, PolicyStatus> = BTreeMap::new();
    loop {
        let now = desired(&cache, &none);
        for (key, status) in &now {
            let before = last.get(key);
            if before == Some(status) {
                continue;
            }
            let parents = status.parents.iter().flat_map(|(_, cs)| cs.iter());
            for c in status.conditions.iter().chain(parents) {
                let trouble =
                    c.status != "True" || c.type_ == REJECTED_BY_PROXIES || c.type_ == IMPLICATED;
                if trouble {
                    tracing::warn!(object = %key, condition = %c.type_, reason = %c.reason, "{}", c.message);
                } else {
                    tracing::info!(object = %key, condition = %c.type_, reason = %c.reason, "{}", c.message);
                }
            }
            // A condition that went away (a rejection lifted) says so.
            for c in before.iter().flat_map(|b| b.conditions.iter()) {
                if !status.conditions.iter().any(|n| n.type_ == c.type_) {
                    tracing::info!(object = %key, condition = %c.type_, cleared = true, "condition cleared");
                }
            }
        }
        last = now;
        // Containment changes (rejections) trigger builds too: nothing to poll.
        if builds.changed().await.is_err() {
            return;
        }
    }
}

/// Patches status while `leader` is true.
pub async fn run(
    client: Client,
    cache: Arc<Store>,
    rejected: Rejected,
    mut leader: watch::Receiver<bool>,
    field_manager: String,
) {
    let mut builds = cache.builds();
    // What was last written: the status and the conditions as sent (with their times).
    let mut written: BTreeMap<ObjectKey, (PolicyStatus, Vec<MeshCondition>)> = BTreeMap::new();
    loop {
        tokio::select! {
            r = builds.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if !*leader.borrow_and_update() {
            // A new leader rewrites everything it finds different.
            written.clear();
            continue;
        }
        let want = desired(&cache, &rejected);
        written.retain(|k, _| want.contains_key(k));
        for (key, status) in want {
            if written.get(&key).is_some_and(|(s, _)| *s == status) {
                continue;
            }
            let previous = written.get(&key).map(|(_, sent)| sent.as_slice());
            match patch(&client, &key, &status, previous, &field_manager).await {
                Ok(sent) => {
                    written.insert(key, (status, sent));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "status update failed; will retry")
                }
            }
        }
    }
}

async fn patch(
    client: &Client,
    key: &ObjectKey,
    status: &PolicyStatus,
    previous: Option<&[MeshCondition]>,
    field_manager: &str,
) -> Result<Vec<MeshCondition>, kube::Error> {
    let now = Timestamp::now().to_string();
    let conditions: Vec<MeshCondition> = status
        .conditions
        .iter()
        .map(|c| {
            let kept = previous
                .and_then(|p| p.iter().find(|o| o.type_ == c.type_))
                .filter(|o| o.status == c.status)
                .and_then(|o| o.last_transition_time.clone());
            MeshCondition {
                observed_generation: status.generation,
                last_transition_time: Some(kept.unwrap_or_else(|| now.clone())),
                ..c.clone()
            }
        })
        .collect();
    let body =
        json!({"status": {"observedGeneration": status.generation, "conditions": conditions}});
    let params = PatchParams {
        field_manager: Some(field_manager.to_string()),
        ..Default::default()
    };
    match key.kind.info().status {
        Some(StatusWrite::RouteParents) => {
            patch_route(client, key, status, &params, &now).await?;
            return Ok(Vec::new());
        }
        Some(StatusWrite::Conditions) => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &key.namespace, &api_resource(key.kind));
            api.patch_status(&key.name, &params, &Patch::Merge(body))
                .await?;
        }
        None => {}
    }
    Ok(conditions)
}

/// The API resource of `kind`, from the kind table.
fn api_resource(kind: Kind) -> ApiResource {
    let info = kind.info();
    ApiResource {
        group: info.group.into(),
        version: info.storage_version.into(),
        api_version: info.api_version(),
        kind: info.kind.into(),
        plural: info.plural.into(),
    }
}

/// The `status.parents` a route should carry: other controllers' entries as they are,
/// then Rudder's, one per Service parent the route names now, with their conditions (or
/// the route-wide ones when it was refused as a whole). `lastTransitionTime` is kept
/// from `current` while a condition's status does not change.
pub fn route_parents(
    current: &RouteStatus,
    parent_refs: &[ParentReference],
    status: &PolicyStatus,
    now: &str,
) -> Vec<RouteParentStatus> {
    let mut out: Vec<RouteParentStatus> = current
        .parents
        .iter()
        .filter(|p| p.controller_name != CONTROLLER_NAME)
        .cloned()
        .collect();
    for p in parent_refs.iter().filter(|p| p.is_service()) {
        let wanted = status
            .parents
            .iter()
            .find(|(r, _)| r == p)
            .map(|(_, cs)| cs.as_slice())
            .unwrap_or(&status.conditions);
        // A parent the object names but the model does not know yet (it lags the object
        // just read): nothing to say until it does (an entry needs conditions).
        if wanted.is_empty() {
            if let Some(b) = current
                .parents
                .iter()
                .find(|o| o.controller_name == CONTROLLER_NAME && o.parent_ref == *p)
            {
                out.push(b.clone());
            }
            continue;
        }
        let before = current
            .parents
            .iter()
            .find(|o| o.controller_name == CONTROLLER_NAME && o.parent_ref == *p);
        let conditions = wanted
            .iter()
            .map(|c| {
                let kept = before
                    .and_then(|b| b.conditions.iter().find(|o| o.type_ == c.type_))
                    .filter(|o| o.status == c.status)
                    .and_then(|o| o.last_transition_time.clone());
                MeshCondition {
                    observed_generation: status.generation,
                    last_transition_time: Some(kept.unwrap_or_else(|| now.to_string())),
                    ..c.clone()
                }
            })
            .collect();
        out.push(RouteParentStatus {
            parent_ref: p.clone(),
            controller_name: CONTROLLER_NAME.into(),
            conditions,
        });
    }
    out
}

async fn patch_route(
    client: &Client,
    key: &ObjectKey,
    status: &PolicyStatus,
    params: &PatchParams,
    now: &str,
) -> Result<(), kube::Error> {
    async fn one<K>(
        api: Api<K>,
        name: &str,
        status: &PolicyStatus,
        params: &PatchParams,
        now: &str,
    ) -> Result<(), kube::Error>
    where
        K: Route + kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let current = api.get(name).await?;
        let st = current.route_status().cloned().unwrap_or_default();
        let parents = route_parents(&st, current.parent_refs(), status, now);
        // Nothing to say (e.g. a route of gateways only, with no entry of Rudder's).
        if parents == st.parents {
            return Ok(());
        }
        // The resourceVersion makes the write fail (409, retried next round) if another
        // controller changed the parents in between.
        let body = json!({
            "metadata": {"resourceVersion": current.meta().resource_version},
            "status": {"parents": parents},
        });
        api.patch_status(name, params, &Patch::Merge(body)).await?;
        Ok(())
    }
    let ns = &key.namespace;
    // Exhaustive: a new kind whose row says `RouteParents` must be read here as a route.
    match key.kind {
        Kind::HTTPRoute => {
            let api: Api<HTTPRoute> = Api::namespaced(client.clone(), ns);
            one(api, &key.name, status, params, now).await
        }
        Kind::GRPCRoute => {
            let api: Api<GRPCRoute> = Api::namespaced(client.clone(), ns);
            one(api, &key.name, status, params, now).await
        }
        Kind::Service
        | Kind::EndpointSlice
        | Kind::Pod
        | Kind::TrafficSplit
        | Kind::RetryPolicy
        | Kind::HTTPRouteGroup
        | Kind::TrafficTarget
        | Kind::TCPRoute => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use translator::model::parse_manifest;
    use xds_types::XdsType;

    use super::*;
    use crate::xds::store::StoreConfig;
    use crate::xds::stream::Rejection;
    use translator::encoded::Source;

    const YAML: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: canary}\nspec:\n  service: web\n  backends: [{service: web, weight: 1}]\n---\napiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: retries}\nspec:\n  targetRef: {name: web}\n";

    fn rejection(suspects: Vec<Source>) -> Rejection {
        Rejection {
            kind: XdsType::Route,
            version: "r1".into(),
            resources: vec!["outbound".into()],
            error: "invalid regex".into(),
            sources: Vec::new(),
            suspects,
            precise: true,
        }
    }

    /// A store holding the objects of `yaml`.
    fn store_with(yaml: &str) -> std::sync::Arc<Store> {
        let cache = Store::new(StoreConfig::default(), Default::default(), None);
        let parsed = parse_manifest(yaml).expect("yaml");
        cache.update(|m| {
            parsed
                .objects
                .iter()
                .for_each(|o| m.apply(o).expect("valid"))
        });
        cache
    }

    /// A proxy of service account `sa` in `ns`, attached to `cache` as its streams are.
    fn proxy(cache: &std::sync::Arc<Store>, sa: &str, ns: &str) -> crate::xds::store::Attachment {
        let identity = translator::identity::ProxyIdentity {
            vhds: false,
            node_id: format!("{sa}.{ns}"),
            kind: translator::identity::ProxyKind::Envoy,
            namespace: ns.into(),
            pod: sa.into(),
            service_account: sa.into(),
            pod_ip: None,
            outbound_port: translator::identity::DEFAULT_OUTBOUND_PORT,
            app_address: "127.0.0.1".parse().expect("ip"),
            intercepted: false,
            inbound_port: translator::identity::DEFAULT_INBOUND_PORT,
        };
        cache.attach(&spiffe(sa, ns), &identity).expect("attached")
    }

    fn spiffe(sa: &str, ns: &str) -> String {
        format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
    }

    fn condition<'a>(status: &'a PolicyStatus, type_: &str) -> Option<&'a MeshCondition> {
        status.conditions.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn a_contained_policy_keeps_accepted_and_says_where_it_was_rejected() {
        let cache = store_with(YAML);
        let split = ObjectKey::new(Kind::TrafficSplit, "default", "canary");
        let rev = cache.read(|m| m.rev(&split)).expect("rev");
        cache.rebuild_now();
        // Issue 21, finding 4: a proxy of another namespace rejects the owner's split.
        let attacker = proxy(&cache, "attacker", "evil");
        let by = crate::xds::store::stream_tag(&spiffe("attacker", "evil"), "attacker.evil");
        cache.on_nack(
            attacker.view_key(),
            &by,
            &spiffe("attacker", "evil"),
            &rejection(vec![Source {
                key: split.clone(),
                rev,
            }]),
        );
        let status = desired(&cache, &Rejected::default());
        let accepted = condition(&status[&split], "Accepted").expect("Accepted");
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("True", "Accepted"),
            "the owner's object keeps Accepted as validation decided"
        );
        let rejected = condition(&status[&split], REJECTED_BY_PROXIES).expect("the condition");
        assert_eq!(
            (rejected.status.as_str(), rejected.reason.as_str()),
            ("True", "Rejected")
        );
        assert_eq!(
            rejected.message,
            "proxies of spiffe://cluster.local/ns/evil/sa/attacker (namespace evil) rejected RDS outbound made from TrafficSplit default/canary: \"invalid regex\"; left out for the proxies of those identities only (every other proxy keeps it) until it changes or they disconnect"
        );
        let other = &status[&ObjectKey::new(Kind::RetryPolicy, "default", "retries")];
        assert!(condition(other, REJECTED_BY_PROXIES).is_none(), "{other:?}");
        // The proxy leaves: the condition goes away.
        drop(attacker);
        let status = desired(&cache, &Rejected::default());
        assert!(
            condition(&status[&split], REJECTED_BY_PROXIES).is_none(),
            "{:?}",
            status[&split]
        );
    }

    #[test]
    fn objects_sharing_a_rejected_resource_are_not_blamed_until_the_search_says_so() {
        let cache = store_with(YAML);
        let split = ObjectKey::new(Kind::TrafficSplit, "default", "canary");
        let retry = ObjectKey::new(Kind::RetryPolicy, "default", "retries");
        let source = |k: &ObjectKey| Source {
            key: k.clone(),
            rev: cache.read(|m| m.rev(k)).expect("rev"),
        };
        let p = proxy(&cache, "p", "default");
        // A proxy with no accepted version rejects a route made from both: either could
        // be the cause.
        cache.on_nack(
            p.view_key(),
            "p",
            &spiffe("p", "default"),
            &rejection(vec![source(&split), source(&retry)]),
        );
        let status = desired(&cache, &Rejected::default());
        for key in [&split, &retry] {
            let conditions = &status[key].conditions;
            assert!(
                condition(&status[key], REJECTED_BY_PROXIES).is_none(),
                "{key} is not blamed yet: {conditions:?}"
            );
            let accepted = condition(&status[key], "Accepted").expect("Accepted");
            assert_eq!(accepted.status, "True", "{conditions:?}");
        }
        let implicated: Vec<_> = [&split, &retry]
            .into_iter()
            .filter_map(|k| condition(&status[k], IMPLICATED))
            .collect();
        assert!(
            implicated
                .iter()
                .all(|c| c.reason == "SharesRejectedResource"
                    && c.message.contains("spiffe://cluster.local/ns/default/sa/p")),
            "{implicated:?}"
        );
        assert!(
            !implicated.is_empty(),
            "what is left out says it shares the rejected route"
        );
    }

    /// The status writer reaches each kind the table says gets status at its stored
    /// version, and the routes it reads as routes are the `RouteParents` rows.
    #[test]
    fn status_is_written_as_the_kind_table_says() {
        for kind in Kind::ALL {
            let info = kind.info();
            let ar = api_resource(kind);
            assert_eq!(
                (
                    ar.api_version.as_str(),
                    ar.plural.as_str(),
                    ar.kind.as_str()
                ),
                (info.api_version().as_str(), info.plural, info.kind)
            );
            assert_eq!(
                kind.is_route(),
                info.status == Some(StatusWrite::RouteParents),
                "{kind}"
            );
        }
        // Rejected objects of every status kind, and of no other, get a status.
        let rejected = Rejected::default();
        for kind in Kind::ALL {
            rejected.lock().insert(
                ObjectKey::new(kind, "default", "bad"),
                (
                    Some(1),
                    translator::model::ModelError {
                        object: format!("{kind} default/bad"),
                        field: "spec".into(),
                        message: "wrong".into(),
                        unsupported: false,
                    },
                ),
            );
        }
        let status = desired(&store_with(""), &rejected);
        for kind in Kind::ALL {
            assert_eq!(
                status.contains_key(&ObjectKey::new(kind, "default", "bad")),
                kind.info().status.is_some(),
                "{kind}"
            );
        }
    }

    #[test]
    fn route_parents_keep_other_controllers_and_times_and_wait_for_known_parents() {
        let svc = |name: &str| ParentReference {
            group: Some(String::new()),
            kind: Some("Service".into()),
            name: name.into(),
            ..Default::default()
        };
        let gateway = ParentReference {
            name: "gw".into(),
            ..Default::default()
        };
        let cond = |t: &str, ok: bool, time: &str| MeshCondition {
            last_transition_time: Some(time.into()),
            observed_generation: Some(1),
            ..MeshCondition::new(t, ok, ConditionReason::Accepted, "m")
        };
        let current = RouteStatus {
            parents: vec![
                RouteParentStatus {
                    parent_ref: gateway.clone(),
                    controller_name: "example.com/gateway".into(),
                    conditions: vec![cond("Accepted", true, "2026-01-01T00:00:00Z")],
                },
                RouteParentStatus {
                    parent_ref: svc("a"),
                    controller_name: CONTROLLER_NAME.into(),
                    conditions: vec![cond("Accepted", true, "2026-02-02T00:00:00Z")],
                },
            ],
        };
        let status = PolicyStatus {
            generation: Some(2),
            conditions: Vec::new(),
            parents: vec![(
                svc("a"),
                vec![MeshCondition::new(
                    "Accepted",
                    true,
                    ConditionReason::Accepted,
                    "m",
                )],
            )],
        };
        // `b` is in the object just read, not yet in the model: no entry is made up for it.
        let out = route_parents(
            &current,
            &[svc("a"), svc("b"), gateway.clone()],
            &status,
            "2026-03-03T00:00:00Z",
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].controller_name, "example.com/gateway");
        assert_eq!(out[1].parent_ref, svc("a"));
        assert_eq!(
            out[1].conditions[0].last_transition_time.as_deref(),
            Some("2026-02-02T00:00:00Z"),
            "an unchanged status keeps its time"
        );
        assert_eq!(out[1].conditions[0].observed_generation, Some(2));
        // A route that lost its Service parents loses Rudder's entries.
        let none = PolicyStatus {
            generation: Some(3),
            conditions: Vec::new(),
            parents: Vec::new(),
        };
        let out = route_parents(&current, &[gateway], &none, "2026-03-03T00:00:00Z");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].controller_name, "example.com/gateway");
    }
}
