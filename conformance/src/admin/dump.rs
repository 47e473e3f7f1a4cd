//! `/config_dump` in Envoy's shape: one `envoy.admin.v3.*ConfigDump` per type with its
//! dynamic entries (version, last update, the resource as proto3 JSON with the proto
//! field names, as Envoy writes them), private keys
//! redacted; `?resource=FIELD` lists only that field's entries, each with its own
//! `@type`, as Envoy does; endpoints only with `?include_eds`.

use std::time::UNIX_EPOCH;

use serde_json::{Value, json};
use xds_types::XdsType;

use crate::xds::{Dump, RawEntry};

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// One section: its dump type, the field of its dynamic entries, the entry type, and
/// the key the resource goes under.
struct Section {
    ty: XdsType,
    dump: &'static str,
    field: &'static str,
    entry: &'static str,
    key: &'static str,
}

const SECTIONS: [Section; 5] = [
    Section {
        ty: XdsType::Cluster,
        dump: "ClustersConfigDump",
        field: "dynamic_active_clusters",
        entry: "ClustersConfigDump.DynamicCluster",
        key: "cluster",
    },
    Section {
        ty: XdsType::Endpoint,
        dump: "EndpointsConfigDump",
        field: "dynamic_endpoint_configs",
        entry: "EndpointsConfigDump.DynamicEndpointConfig",
        key: "endpoint_config",
    },
    Section {
        ty: XdsType::Listener,
        dump: "ListenersConfigDump",
        field: "dynamic_listeners",
        entry: "ListenersConfigDump.DynamicListener",
        key: "listener",
    },
    Section {
        ty: XdsType::Route,
        dump: "RoutesConfigDump",
        field: "dynamic_route_configs",
        entry: "RoutesConfigDump.DynamicRouteConfig",
        key: "route_config",
    },
    Section {
        ty: XdsType::Secret,
        dump: "SecretsConfigDump",
        field: "dynamic_active_secrets",
        entry: "SecretsConfigDump.DynamicSecret",
        key: "secret",
    },
];

/// Why a dump cannot be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    /// `?resource=` names no field.
    #[error("no resource field {0}")]
    UnknownResource(String),
}

/// The dump, all of it or one `resource` field's entries.
pub(crate) fn config_dump(
    dump: &Dump,
    resource: Option<&String>,
    include_eds: bool,
) -> Result<Value, DumpError> {
    if let Some(field) = resource {
        let s = SECTIONS
            .iter()
            .find(|s| s.field == field)
            .ok_or_else(|| DumpError::UnknownResource(field.clone()))?;
        let configs: Vec<Value> = dump
            .of(s.ty)
            .iter()
            .map(|(name, e)| {
                let mut v = entry(s, name, e);
                v["@type"] = format!("{ADMIN}{}", s.entry).into();
                v
            })
            .collect();
        return Ok(json!({ "configs": configs }));
    }
    let configs: Vec<Value> = SECTIONS
        .iter()
        .filter(|s| include_eds || s.ty != XdsType::Endpoint)
        .map(|s| {
            let entries = dump.of(s.ty);
            let items: Vec<Value> = entries.iter().map(|(n, e)| entry(s, n, e)).collect();
            let mut v = json!({ "@type": format!("{ADMIN}{}", s.dump) });
            if matches!(s.ty, XdsType::Listener | XdsType::Cluster)
                && let Some(newest) = entries.values().max_by_key(|e| e.updated)
            {
                v["version_info"] = newest.version.clone().into();
            }
            v[s.field] = items.into();
            v
        })
        .collect();
    Ok(json!({ "configs": configs }))
}

/// One dynamic entry in Envoy's shape.
fn entry(s: &Section, name: &str, e: &RawEntry) -> Value {
    let mut resource = translator::json::any_to_json_proto_names(&e.any)
        .unwrap_or_else(|err| json!({"@type": e.any.type_url, "error": err.to_string()}));
    if s.ty == XdsType::Secret {
        redact(&mut resource);
    }
    let since = e.updated.duration_since(UNIX_EPOCH).unwrap_or_default();
    let updated = rfc3339(
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_millis(),
    );
    match s.ty {
        XdsType::Listener => json!({
            "name": name,
            "active_state": {
                "version_info": e.version,
                "listener": resource,
                "last_updated": updated,
            }
        }),
        XdsType::Secret => json!({
            "name": name,
            "version_info": e.version,
            "last_updated": updated,
            "secret": resource,
        }),
        _ => {
            let mut v = json!({ "version_info": e.version, "last_updated": updated });
            v[s.key] = resource;
            v
        }
    }
}

/// Replaces a secret's private key as Envoy does.
fn redact(secret: &mut Value) {
    if let Some(cert) = secret.get_mut("tls_certificate")
        && cert.get("private_key").is_some()
    {
        cert["private_key"] = json!({"inline_string": "[redacted]"});
    }
}

/// `secs` since the epoch (and `millis`) as RFC 3339 UTC.
pub(crate) fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        Secret, TlsCertificate, secret,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    #[test]
    fn a_secrets_private_key_never_reaches_the_dump() {
        let inline = |s: &str| DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(s.as_bytes().to_vec())),
            ..Default::default()
        };
        // Assembled at run time: no key-shaped text is committed.
        let kind = "PRIVATE KEY";
        let key = format!("-----BEGIN {kind}-----\nSECRET-KEY-BYTES\n-----END {kind}-----\n");
        let s = Secret {
            name: "default".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline("CERT")),
                private_key: Some(inline(&key)),
                ..Default::default()
            })),
        };
        let raw = RawEntry {
            any: Any {
                type_url: XdsType::Secret.type_url().into(),
                value: s.encode_to_vec(),
            },
            version: "1".into(),
            updated: std::time::SystemTime::now(),
        };
        let section = SECTIONS
            .iter()
            .find(|s| s.ty == XdsType::Secret)
            .expect("a secrets section");
        let text = entry(section, "default", &raw).to_string();
        // Inline bytes render as base64, so look for both spellings.
        let b64 = "U0VDUkVULUtFWS1CWVRFUw";
        assert!(
            !text.contains("SECRET-KEY-BYTES") && !text.contains(b64),
            "{text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
        assert!(
            text.contains("certificate_chain"),
            "Envoy's field names: {text}"
        );
    }
}
