//! `HTTPRouteGroup`, `specs.smi-spec.io/v1alpha4`: named HTTP request matches that a
//! TrafficSplit can reference so that only matching requests are split (A/B tests).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Named groups of HTTP request matches.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "HTTPRouteGroup",
    namespaced,
    derive = "PartialEq",
    shortname = "htr"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteGroupSpec {
    /// The matches; a request matching any of them is selected.
    #[serde(default)]
    pub matches: Vec<HTTPMatch>,
}

/// One request match: every condition given must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPMatch {
    /// Name of the match.
    pub name: String,
    /// HTTP methods (`*` or empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// RE2 regular expression the whole path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path_regex: Option<String>,
    /// Header name -> RE2 regular expression its value must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// At most this many matches in a group.
pub const MAX_GROUP_MATCHES: usize = 256;
/// At most this many methods, and this many headers, in one match.
pub const MAX_MATCH_ITEMS: usize = 16;

impl HTTPRouteGroupSpec {
    /// Checks what the schema cannot, and bounds what one object can make proxies hold.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.matches.len() > MAX_GROUP_MATCHES {
            return Err(FieldError::new(
                "spec.matches",
                format!("at most {MAX_GROUP_MATCHES} matches"),
            ));
        }
        for (i, m) in self.matches.iter().enumerate() {
            if m.methods.len() > MAX_MATCH_ITEMS || m.headers.len() > MAX_MATCH_ITEMS {
                return Err(FieldError::new(
                    format!("spec.matches[{i}]"),
                    format!("at most {MAX_MATCH_ITEMS} methods and {MAX_MATCH_ITEMS} headers"),
                ));
            }
            if m.name.is_empty() {
                return Err(FieldError::new(
                    format!("spec.matches[{i}].name"),
                    "is required",
                ));
            }
            for (j, method) in m.methods.iter().enumerate() {
                let ok = method == "*"
                    || (!method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()));
                if !ok {
                    return Err(FieldError::new(
                        format!("spec.matches[{i}].methods[{j}]"),
                        format!("{} is not an HTTP method", crate::text::quote(method)),
                    ));
                }
            }
            if let Some(re) = &m.path_regex {
                crate::re2::check(re)
                    .map_err(|msg| FieldError::new(format!("spec.matches[{i}].pathRegex"), msg))?;
            }
            for (name, re) in &m.headers {
                if name.is_empty()
                    || name.len() > 256
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(FieldError::new(
                        format!("spec.matches[{i}].headers"),
                        format!("{} is not a header name", crate::text::quote(name)),
                    ));
                }
                crate::re2::check(re).map_err(|msg| {
                    FieldError::new(
                        format!("spec.matches[{i}].headers[{}]", crate::text::quote(name)),
                        msg,
                    )
                })?;
            }
        }
        Ok(())
    }
}
