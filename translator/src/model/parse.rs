//! Parsing of Kubernetes YAML manifests (multi-document files) into model objects.
//! Syntax errors carry the line; schema and validation errors carry the document index
//! and the field path. Documents are dispatched through the kind table
//! ([`crds::kinds`], tied to the model's [`Kind`] by [`Kind::info`]): an accepted older
//! version reads as the stored one; an unaccepted version of a mesh kind, or an unknown
//! kind of Rudder's own group, is an error naming the accepted ones; other kinds
//! (Deployments, another controller's Gateway API kinds) are reported as skipped.

use crds::kinds::{self, KindInfo};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::objects::{Kind, Object};
use super::store::Model;

/// What one manifest file held.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedManifest {
    /// The objects the mesh uses, in file order.
    pub objects: Vec<Object>,
    /// Documents of other kinds: (document index, `apiVersion/kind`).
    pub skipped: Vec<(usize, String)>,
}

/// Why a manifest file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("YAML syntax error: {message}")]
    Syntax {
        /// The parser's message, with line and column.
        message: String,
    },
    /// One document is not a valid object.
    #[error("document {index}{}: {field}: {message}", object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Document {
        /// Zero-based index of the document in the file.
        index: usize,
        /// The object, when its kind and name could be read.
        object: Option<String>,
        /// The field path inside the document.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The largest manifest file read, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;

/// Parser budgets sized for `kubectl get -o yaml` exports up to [`MAX_MANIFEST_BYTES`]:
/// many documents, or `v1/List`s of tens of thousands of objects. They bound the work
/// a file can cause, whatever it holds.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 200_000,
            max_nodes: 20_000_000,
            max_events: 50_000_000,
            max_total_scalar_bytes: MAX_MANIFEST_BYTES,
            max_aliases: 10_000,
            max_anchors: 10_000,
        },
    }
}

/// Parses every document of a YAML file. Any error refuses the whole file, so that a
/// half-applied file never reaches a proxy.
pub fn parse_manifest(text: &str) -> Result<ParsedManifest, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::Syntax {
            message: format!(
                "the file is {} bytes; at most {MAX_MANIFEST_BYTES} are read",
                text.len()
            ),
        });
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, yaml_options()).map_err(|e| {
            ManifestError::Syntax {
                message: syntax_message(&e.to_string()),
            }
        })?;
    let mut out = ParsedManifest::default();
    for (index, doc) in docs.into_iter().enumerate() {
        parse_document(index, doc, "", &mut out)?;
    }
    Ok(out)
}

/// The parser's message without any quoted file contents beyond the offending line,
/// bounded in length.
fn syntax_message(raw: &str) -> String {
    crds::text::bound(raw.lines().take(3).collect::<Vec<_>>().join(" "))
}

fn doc_err(index: usize, object: Option<String>, field: String, message: String) -> ManifestError {
    ManifestError::Document {
        index,
        object: object.map(|o| crds::text::clip(&o, 320)),
        field: crds::text::clip(&field, 256),
        message: crds::text::bound(message),
    }
}

fn parse_document(
    index: usize,
    doc: Value,
    prefix: &str,
    out: &mut ParsedManifest,
) -> Result<(), ManifestError> {
    let mut map = match doc {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(doc_err(
                index,
                None,
                if prefix.is_empty() {
                    "(document)".into()
                } else {
                    prefix.to_string()
                },
                format!(
                    "expected a mapping with apiVersion and kind, found {}",
                    type_name(&other)
                ),
            ));
        }
    };
    let field = |f: &str| format!("{prefix}{f}");
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if api_version.is_empty() || kind.is_empty() {
        let missing = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(doc_err(index, None, field(missing), "is required".into()));
    }
    if (api_version.as_str(), kind.as_str()) == ("v1", "List") {
        let items = match map.remove("items") {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(doc_err(
                    index,
                    None,
                    field("items"),
                    format!("expected a list, found {}", type_name(&other)),
                ));
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            parse_document(index, item, &format!("{prefix}items[{i}]."), out)?;
        }
        return Ok(());
    }
    let Some(info) = kinds::by_api_version_kind(&api_version, &kind) else {
        return match refusal(&api_version, &kind) {
            Some((f, message)) => Err(doc_err(
                index,
                describe(&Value::Object(map)),
                field(f),
                message,
            )),
            None => {
                out.skipped.push((index, format!("{api_version}/{kind}")));
                Ok(())
            }
        };
    };
    let Some(model_kind) = Kind::of(info) else {
        return Err(doc_err(
            index,
            describe(&Value::Object(map)),
            field("kind"),
            format!("{kind} is in the kind table but the model has no kind for it"),
        ));
    };
    // Every accepted version reads as the stored one, as the API server serves them (one
    // schema, conversion None): only the version string differs.
    let stored = info.api_version();
    if api_version != stored {
        map.insert("apiVersion".into(), stored.into());
    }
    let object = read(model_kind, index, Value::Object(map), prefix)?;
    if let Err(e) = Model::validate(&object) {
        return Err(doc_err(index, Some(e.object), field(&e.field), e.message));
    }
    out.objects.push(object);
    Ok(())
}

/// Why a document the table does not accept is refused, as (field, message), or `None`
/// when it is another controller's (a kind of a group Rudder does not own, or an
/// unaccepted version of a built-in kind): it is skipped.
fn refusal(api_version: &str, kind: &str) -> Option<(&'static str, String)> {
    let (group, _) = kinds::split_api_version(api_version);
    if let Some(info) = kinds::by_group_kind(group, kind) {
        if info.provider == kinds::Provider::BuiltIn {
            return None;
        }
        return Some((
            "apiVersion",
            format!(
                "{api_version} is not a version of {kind} Rudder reads; accepted: {}",
                info.api_versions().join(", ")
            ),
        ));
    }
    if !kinds::OWN_GROUPS.contains(&group) {
        return None;
    }
    let known: Vec<&str> = kinds::all()
        .filter(|k| k.group == group)
        .map(|k| k.kind)
        .collect();
    Some((
        "kind",
        format!(
            "{group} has no kind {kind}; its kinds: {}",
            known.join(", ")
        ),
    ))
}

impl Kind {
    /// This kind's row of the kind table.
    pub fn info(self) -> &'static KindInfo {
        match self {
            Kind::Service => &kinds::SERVICE,
            Kind::EndpointSlice => &kinds::ENDPOINT_SLICE,
            Kind::Pod => &kinds::POD,
            Kind::TrafficSplit => &kinds::TRAFFIC_SPLIT,
            Kind::RetryPolicy => &kinds::RETRY_POLICY,
            Kind::HTTPRouteGroup => &kinds::HTTP_ROUTE_GROUP,
            Kind::HTTPRoute => &kinds::HTTP_ROUTE,
            Kind::GRPCRoute => &kinds::GRPC_ROUTE,
            Kind::TrafficTarget => &kinds::TRAFFIC_TARGET,
            Kind::TCPRoute => &kinds::TCP_ROUTE,
        }
    }

    /// The model's kind of a table row.
    pub fn of(info: &KindInfo) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.info() == info)
    }
}

/// Reads a document at its kind's stored version as a model object.
fn read(kind: Kind, index: usize, doc: Value, prefix: &str) -> Result<Object, ManifestError> {
    Ok(match kind {
        Kind::Service => Object::Service(Box::new(typed(index, doc, prefix)?)),
        Kind::EndpointSlice => Object::EndpointSlice(Box::new(typed(index, doc, prefix)?)),
        Kind::Pod => Object::Pod(Box::new(typed(index, doc, prefix)?)),
        Kind::TrafficSplit => Object::TrafficSplit(Box::new(typed(index, doc, prefix)?)),
        Kind::RetryPolicy => Object::RetryPolicy(Box::new(typed(index, doc, prefix)?)),
        Kind::HTTPRouteGroup => Object::HTTPRouteGroup(Box::new(typed(index, doc, prefix)?)),
        Kind::HTTPRoute => Object::HTTPRoute(Box::new(typed(index, doc, prefix)?)),
        Kind::GRPCRoute => Object::GRPCRoute(Box::new(typed(index, doc, prefix)?)),
        Kind::TrafficTarget => Object::TrafficTarget(Box::new(typed(index, doc, prefix)?)),
        Kind::TCPRoute => Object::TCPRoute(Box::new(typed(index, doc, prefix)?)),
    })
}

fn typed<T: DeserializeOwned>(index: usize, doc: Value, prefix: &str) -> Result<T, ManifestError> {
    let object = describe(&doc);
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        doc_err(
            index,
            object,
            format!(
                "{prefix}{}",
                if path == "." {
                    "(document)".into()
                } else {
                    path
                }
            ),
            e.into_inner().to_string(),
        )
    })
}

fn describe(doc: &Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    Some(format!("{kind} {ns}/{name}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_kind_has_a_row_and_every_row_a_model_kind() {
        assert_eq!(Kind::ALL.len(), kinds::KINDS.len());
        for kind in Kind::ALL {
            assert_eq!(Kind::of(kind.info()), Some(kind));
            assert_eq!(kind.to_string(), kind.info().kind);
            // What the model restates of the table agrees with it.
            let status = kind.info().status;
            assert_eq!(
                kind.is_route(),
                status == Some(kinds::StatusWrite::RouteParents),
                "{kind}"
            );
            // A TrafficTarget has a status but is never left out of a proxy's config:
            // leaving out an authorization would open what it closes.
            assert_eq!(
                crate::model::ObjectKey::new(kind, "ns", "n").is_policy(),
                status.is_some() && kind != Kind::TrafficTarget,
                "{kind}"
            );
        }
        for row in kinds::all() {
            assert!(Kind::of(row).is_some(), "{} has no model kind", row.kind);
        }
    }

    /// Every row is read at every version it accepts (none is skipped or refused for its
    /// apiVersion or kind; an empty object may still fail validation).
    #[test]
    fn every_row_is_read_at_every_accepted_version() {
        for row in kinds::all() {
            for api_version in row.api_versions() {
                let yaml = format!(
                    "apiVersion: {api_version}\nkind: {}\nmetadata: {{name: x}}\n",
                    row.kind
                );
                match parse_manifest(&yaml) {
                    Ok(parsed) => {
                        assert!(parsed.skipped.is_empty(), "{api_version} {}", row.kind);
                        assert_eq!(parsed.objects.len(), 1, "{api_version} {}", row.kind);
                        let kind = parsed.objects[0].key().kind;
                        assert_eq!(kind.info(), row);
                    }
                    Err(ManifestError::Document { field, .. }) => {
                        assert!(
                            field != "apiVersion" && field != "kind",
                            "{api_version} {}: {field}",
                            row.kind
                        );
                    }
                    Err(e) => panic!("{api_version} {}: {e}", row.kind),
                }
            }
        }
    }

    #[test]
    fn an_unaccepted_version_or_an_unknown_kind_of_rudders_group_is_an_error() {
        let doc = |api: &str, kind: &str| {
            format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: s, namespace: shop}}\nspec: {{}}\n"
            )
        };
        let err = parse_manifest(&doc("gateway.networking.k8s.io/v1alpha2", "HTTPRoute"))
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "document 0 (HTTPRoute shop/s): apiVersion: gateway.networking.k8s.io/v1alpha2 is not a version of HTTPRoute Rudder reads; accepted: gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1"
        );
        let err = parse_manifest(&doc("policy.rudder.dev/v1alpha1", "TimeoutPolicy"))
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "document 0 (TimeoutPolicy shop/s): kind: policy.rudder.dev has no kind TimeoutPolicy; its kinds: RetryPolicy"
        );
        // Other controllers' kinds, and old versions of built-in kinds, stay skipped.
        for (api, kind) in [
            ("apps/v1", "Deployment"),
            ("gateway.networking.k8s.io/v1", "Gateway"),
            ("specs.smi-spec.io/v1alpha4", "UDPRoute"),
            ("discovery.k8s.io/v1beta1", "EndpointSlice"),
            ("v1", "ConfigMap"),
        ] {
            let parsed = parse_manifest(&doc(api, kind)).expect(kind);
            assert_eq!(parsed.skipped, vec![(0, format!("{api}/{kind}"))]);
        }
    }
}
