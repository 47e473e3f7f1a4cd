//! `xdsctl`: what every proxy was sent, whether it accepted it, and why not. Reads the
//! control plane's CSDS; the views here are pure functions of the CSDS answer.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ConfigStatus, client_config::GenericXdsConfig,
};
use serde_json::{Value, json};
use xds_types::XdsType;

use xds_types::csds::{META_IDENTITY, META_STREAM};

/// One proxy's line in `xdsctl status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusRow {
    /// Node id.
    pub(crate) node: String,
    /// SPIFFE identity.
    pub(crate) identity: String,
    /// `envoy` or a gRPC user agent.
    pub(crate) kind: String,
    /// `sotw` or `delta`.
    pub(crate) stream: String,
    /// Per type: SYNCED, NOT SENT, STALE or NACKED.
    pub(crate) types: BTreeMap<XdsType, &'static str>,
    /// Seconds since the last ACK.
    pub(crate) since_ack: Option<u64>,
}

fn meta(c: &ClientConfig, key: &str) -> String {
    c.node
        .as_ref()
        .and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.fields.get(key))
        .and_then(|v| match &v.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn kind_of(g: &GenericXdsConfig) -> Option<XdsType> {
    XdsType::from_type_url(&g.type_url)
}

/// The per-proxy summary.
pub(crate) fn status_row(c: &ClientConfig, now: SystemTime) -> StatusRow {
    let mut types = BTreeMap::new();
    for t in XdsType::ALL {
        let of_type: Vec<&GenericXdsConfig> = c
            .generic_xds_configs
            .iter()
            .filter(|g| kind_of(g) == Some(t))
            .collect();
        let state = if of_type
            .iter()
            .any(|g| g.client_status == ClientResourceStatus::Nacked as i32)
        {
            "NACKED"
        } else if of_type.is_empty()
            || of_type
                .iter()
                .all(|g| g.config_status == ConfigStatus::NotSent as i32)
        {
            "NOT SENT"
        } else if of_type
            .iter()
            .all(|g| g.config_status == ConfigStatus::Synced as i32)
        {
            "SYNCED"
        } else {
            "STALE"
        };
        types.insert(t, state);
    }
    let last_ack = c
        .generic_xds_configs
        .iter()
        .filter(|g| g.client_status == ClientResourceStatus::Acked as i32)
        .filter_map(|g| g.last_updated.as_ref())
        .map(|t| UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0)))
        .max();
    StatusRow {
        node: c.node.as_ref().map(|n| n.id.clone()).unwrap_or_default(),
        identity: meta(c, META_IDENTITY),
        kind: c
            .node
            .as_ref()
            .map(|n| n.user_agent_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "envoy".into()),
        stream: meta(c, META_STREAM),
        types,
        since_ack: last_ack
            .and_then(|t| now.duration_since(t).ok())
            .map(|d| d.as_secs()),
    }
}

/// `xdsctl status` as a table: a column per type, in push order.
pub(crate) fn status_table(rows: &[StatusRow]) -> String {
    let mut out = format!(
        "{:<28} {:<44} {:<6} {:<6} ",
        "NODE", "IDENTITY", "KIND", "STREAM"
    );
    for t in XdsType::ALL {
        out.push_str(&format!("{:<9} ", t.short()));
    }
    out.push_str("LAST ACK\n");
    for r in rows {
        out.push_str(&format!(
            "{:<28} {:<44} {:<6} {:<6} ",
            r.node, r.identity, r.kind, r.stream
        ));
        for t in XdsType::ALL {
            out.push_str(&format!(
                "{:<9} ",
                r.types.get(&t).copied().unwrap_or("NOT SENT")
            ));
        }
        let ack = r
            .since_ack
            .map(|s| format!("{s}s ago"))
            .unwrap_or_else(|| "never".into());
        out.push_str(&ack);
        out.push('\n');
    }
    out
}

/// `xdsctl status` as JSON.
pub(crate) fn status_json(rows: &[StatusRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "node": r.node, "identity": r.identity, "kind": r.kind, "stream": r.stream,
                    "types": r.types.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "secondsSinceAck": r.since_ack,
                })
            })
            .collect(),
    )
}

fn status_name(g: &GenericXdsConfig) -> &'static str {
    match ClientResourceStatus::try_from(g.client_status) {
        Ok(ClientResourceStatus::Acked) => "ACKED",
        Ok(ClientResourceStatus::Nacked) => "NACKED",
        Ok(ClientResourceStatus::Requested) => "REQUESTED",
        _ => "NOT SENT",
    }
}

/// Filters for `xdsctl dump`.
#[derive(Clone, Debug, Default)]
pub(crate) struct DumpFilter {
    /// Only these types (empty: all).
    pub(crate) types: Vec<XdsType>,
    /// Only this resource name.
    pub(crate) name: Option<String>,
}

/// One proxy's resources as JSON (proto3 JSON for each resource).
pub(crate) fn dump_json(c: &ClientConfig, filter: &DumpFilter) -> Value {
    let resources: Vec<Value> = c
        .generic_xds_configs
        .iter()
        .filter(|g| {
            filter.types.is_empty() || kind_of(g).is_some_and(|k| filter.types.contains(&k))
        })
        .filter(|g| filter.name.as_ref().is_none_or(|n| *n == g.name))
        .map(|g| {
            let mut v = json!({
                "type": kind_of(g).map(|k| k.to_string()).unwrap_or_else(|| g.type_url.clone()),
                "name": g.name,
                "version": g.version_info,
                "status": status_name(g),
            });
            if let Some(e) = &g.error_state {
                v["error"] = json!(e.details);
                v["lastGoodVersion"] = json!(e.version_info);
            }
            if let Some(any) = &g.xds_config {
                v["config"] = translator::json::any_to_json(any)
                    .unwrap_or_else(|e| json!({"error": e.to_string()}));
            }
            v
        })
        .collect();
    json!({ "node": c.node.as_ref().map(|n| n.id.clone()), "resources": resources })
}

/// One proxy's resources as a table.
pub(crate) fn dump_table(dump: &Value) -> String {
    let mut out = format!(
        "{:<5} {:<60} {:<18} {:<10} {}\n",
        "TYPE", "NAME", "VERSION", "STATUS", "ERROR"
    );
    for r in dump["resources"].as_array().into_iter().flatten() {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        out.push_str(&format!(
            "{:<5} {:<60} {:<18} {:<10} {}\n",
            s("type"),
            s("name"),
            s("version"),
            s("status"),
            s("error")
        ));
    }
    out
}

/// What a live Envoy holds, from its `/config_dump?include_eds`: (type, name) -> version.
/// Listeners it only reports an error for are not held.
pub(crate) fn envoy_holds(config_dump: &Value) -> BTreeMap<(XdsType, String), String> {
    let mut out = BTreeMap::new();
    for section in config_dump["configs"].as_array().into_iter().flatten() {
        let ty = section["@type"].as_str().unwrap_or_default();
        let mut add = |kind: XdsType,
                       items: &Value,
                       name: &dyn Fn(&Value) -> Option<String>,
                       version: &dyn Fn(&Value) -> String| {
            for item in items.as_array().into_iter().flatten() {
                if let Some(n) = name(item) {
                    out.insert((kind, n), version(item));
                }
            }
        };
        let v = |i: &Value| i["version_info"].as_str().unwrap_or_default().to_string();
        if ty.ends_with("ClustersConfigDump") {
            add(
                XdsType::Cluster,
                &section["dynamic_active_clusters"],
                &|i| i["cluster"]["name"].as_str().map(String::from),
                &v,
            );
        } else if ty.ends_with("ListenersConfigDump") {
            add(
                XdsType::Listener,
                &section["dynamic_listeners"],
                // A listener Envoy failed to apply is listed with only its error state:
                // Envoy does not hold it.
                &|i| {
                    (!i["active_state"].is_null() || !i["warming_state"].is_null())
                        .then(|| i["name"].as_str().map(String::from))
                        .flatten()
                },
                &|i| {
                    i["active_state"]["version_info"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                },
            );
        } else if ty.ends_with("RoutesConfigDump") {
            // A table that takes virtual hosts apart (VHDS) reports the last virtual
            // host update's version and lists them among its own: both are held, by
            // name only.
            let apart = |i: &Value| !i["route_config"]["vhds"].is_null();
            add(
                XdsType::Route,
                &section["dynamic_route_configs"],
                &|i| i["route_config"]["name"].as_str().map(String::from),
                &|i| if apart(i) { String::new() } else { v(i) },
            );
            for table in section["dynamic_route_configs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if !apart(table) {
                    continue;
                }
                let route = table["route_config"]["name"].as_str().unwrap_or_default();
                add(
                    XdsType::VirtualHost,
                    &table["route_config"]["virtual_hosts"],
                    &|h| {
                        h["name"]
                            .as_str()
                            .filter(|n| n.strip_prefix(route).is_some_and(|r| r.starts_with('/')))
                            .map(String::from)
                    },
                    &|_| String::new(),
                );
            }
        } else if ty.ends_with("EndpointsConfigDump") {
            add(
                XdsType::Endpoint,
                &section["dynamic_endpoint_configs"],
                &|i| {
                    i["endpoint_config"]["cluster_name"]
                        .as_str()
                        .map(String::from)
                },
                &v,
            );
        } else if ty.ends_with("SecretsConfigDump") {
            // The xDS connection's own certificate and bundle come from local files,
            // and the workload certificate from the agent's SDS socket: the agent's, not
            // Rudder's.
            add(
                XdsType::Secret,
                &section["dynamic_active_secrets"],
                &|i| {
                    i["name"]
                        .as_str()
                        .filter(|n| {
                            ![
                                xds_types::names::XDS_CLIENT_SECRET,
                                xds_types::names::XDS_CA_SECRET,
                                translator::tls::CERT_SECRET,
                            ]
                            .contains(n)
                        })
                        .map(String::from)
                },
                &v,
            );
        }
    }
    out
}

/// Differences between what Rudder sent (and the proxy ACKed) and what Envoy holds.
/// Versions are compared for delta streams, where Envoy reports per-resource versions.
pub(crate) fn drift(
    c: &ClientConfig,
    envoy: &BTreeMap<(XdsType, String), String>,
    compare_versions: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut sent: BTreeMap<(XdsType, String), String> = BTreeMap::new();
    for g in &c.generic_xds_configs {
        if g.client_status == ClientResourceStatus::Acked as i32
            && let Some(k) = kind_of(g)
        {
            sent.insert((k, g.name.clone()), g.version_info.clone());
        }
    }
    for ((k, n), v) in &sent {
        match envoy.get(&(*k, n.clone())) {
            None => out.push(format!("{k} {n}: ACKed version {v} is not in Envoy")),
            Some(ev) if compare_versions && !ev.is_empty() && ev != v => out.push(format!(
                "{k} {n}: Envoy holds version {ev}, Rudder sent {v}"
            )),
            _ => {}
        }
    }
    for (k, n) in envoy.keys() {
        // Envoy lists the inline endpoints of a static cluster as endpoint config.
        let inline = *k == XdsType::Endpoint && sent.contains_key(&(XdsType::Cluster, n.clone()));
        if !inline && !sent.contains_key(&(*k, n.clone())) {
            out.push(format!("{k} {n}: in Envoy but not ACKed from Rudder"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_envoy_only_reports_an_error_for_is_not_held() {
        let dump = serde_json::json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "dynamic_listeners": [
                {"name": "outbound", "active_state": {"version_info": "v1"}},
                {"name": "inbound|80", "warming_state": {"version_info": "v2"}},
                {"name": "inbound|9", "error_state": {"details": "cannot bind"}}
            ]
        }]});
        let held: Vec<String> = envoy_holds(&dump).into_keys().map(|(_, n)| n).collect();
        assert_eq!(held, ["inbound|80", "outbound"]);
    }

    fn acked(kind: XdsType, name: &str, version: &str) -> GenericXdsConfig {
        GenericXdsConfig {
            type_url: kind.type_url().into(),
            name: name.into(),
            version_info: version.into(),
            client_status: ClientResourceStatus::Acked as i32,
            ..Default::default()
        }
    }

    /// Envoy lists an EDS cluster's endpoints by their own name (the cluster's
    /// `service_name`, apart from the cluster's) and a static cluster's inline endpoints
    /// by the cluster's name.
    #[test]
    fn endpoints_named_apart_from_their_cluster_are_matched_by_their_own_name() {
        let cluster = "outbound|80||web.shop.svc.cluster.local";
        let endpoints = xds_types::names::outbound_endpoints("web", "shop", 80);
        let sent = ClientConfig {
            generic_xds_configs: vec![
                acked(XdsType::Cluster, cluster, "3"),
                acked(XdsType::Cluster, "inbound|8080", "3"),
                acked(XdsType::Endpoint, &endpoints, "7"),
            ],
            ..Default::default()
        };
        let dump = |eds_name: &str, eds_version: &str| {
            serde_json::json!({"configs": [
                {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                 "dynamic_active_clusters": [
                    {"cluster": {"name": cluster}, "version_info": "3"},
                    {"cluster": {"name": "inbound|8080"}, "version_info": "3"}]},
                {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                 "dynamic_endpoint_configs": [
                    {"endpoint_config": {"cluster_name": eds_name}, "version_info": eds_version},
                    {"endpoint_config": {"cluster_name": "inbound|8080"}}]}
            ]})
        };
        let none: Vec<String> = vec![];
        assert_eq!(
            drift(&sent, &envoy_holds(&dump(&endpoints, "7")), true),
            none
        );
        assert_eq!(
            drift(&sent, &envoy_holds(&dump(&endpoints, "6")), true),
            [format!(
                "EDS {endpoints}: Envoy holds version 6, Rudder sent 7"
            )]
        );
        // Endpoints held under the cluster's name (as before they were named apart) are
        // not the ones Rudder sent; an entry under a Cluster's name reads as that
        // cluster's inline endpoints.
        assert_eq!(
            drift(&sent, &envoy_holds(&dump(cluster, "7")), true),
            [format!("EDS {endpoints}: ACKed version 7 is not in Envoy")]
        );
    }
}
