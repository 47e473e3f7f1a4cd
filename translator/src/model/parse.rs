//! Parsing of Kubernetes YAML manifests (multi-document files) into model objects.
//! Syntax errors carry the line; schema and validation errors carry the document index
//! and the field path. Kinds the mesh does not use are reported as skipped.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Model, Object};

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
    // Every SMI version Flagger and Argo Rollouts write reads as v1alpha4, as the API
    // server serves them (one schema, conversion None): only the version string differs.
    let smi = |group: &str| {
        ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]
            .iter()
            .any(|v| api_version == format!("{group}/{v}"))
    };
    let api_version = match kind.as_str() {
        "TrafficSplit" if smi("split.smi-spec.io") => {
            map.insert("apiVersion".into(), "split.smi-spec.io/v1alpha4".into());
            "split.smi-spec.io/v1alpha4".to_string()
        }
        // HTTPRoute is served as v1 and v1beta1 with one schema.
        "HTTPRoute" if api_version == "gateway.networking.k8s.io/v1beta1" => {
            map.insert("apiVersion".into(), "gateway.networking.k8s.io/v1".into());
            "gateway.networking.k8s.io/v1".to_string()
        }
        "HTTPRouteGroup" if smi("specs.smi-spec.io") => {
            map.insert("apiVersion".into(), "specs.smi-spec.io/v1alpha4".into());
            "specs.smi-spec.io/v1alpha4".to_string()
        }
        _ => api_version,
    };
    let doc = Value::Object(map);
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => Object::Service(Box::new(typed(index, doc, prefix)?)),
        ("v1", "Pod") => Object::Pod(Box::new(typed(index, doc, prefix)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Box::new(typed(index, doc, prefix)?))
        }
        ("split.smi-spec.io/v1alpha4", "TrafficSplit") => {
            Object::TrafficSplit(Box::new(typed(index, doc, prefix)?))
        }
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => {
            Object::HTTPRoute(Box::new(typed(index, doc, prefix)?))
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            Object::GRPCRoute(Box::new(typed(index, doc, prefix)?))
        }
        ("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup") => {
            Object::HTTPRouteGroup(Box::new(typed(index, doc, prefix)?))
        }
        ("policy.rudder.dev/v1alpha1", "RetryPolicy") => {
            Object::RetryPolicy(Box::new(typed(index, doc, prefix)?))
        }
        ("v1", "List") => {
            let Value::Object(mut map) = doc else {
                return Ok(());
            };
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
        _ => {
            out.skipped.push((index, format!("{api_version}/{kind}")));
            return Ok(());
        }
    };
    if let Err(e) = Model::validate(&object) {
        return Err(doc_err(index, Some(e.object), field(&e.field), e.message));
    }
    out.objects.push(object);
    Ok(())
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
