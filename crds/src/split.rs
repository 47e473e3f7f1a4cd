//! `TrafficSplit`, `split.smi-spec.io/v1alpha4`: requests for the apex `spec.service`
//! are shared among `spec.backends` by weight.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::status::MeshStatus;

/// The only match kind Rudder implements.
pub const HTTP_ROUTE_GROUP: &str = "HTTPRouteGroup";

/// Most backends one TrafficSplit may list.
pub const MAX_BACKENDS: usize = 64;

/// Splits traffic for one Service among backend Services by weight.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha4",
    kind = "TrafficSplit",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "ts",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The apex Service clients call.
    #[schemars(length(min = 1))]
    pub service: String,
    /// The Services that share its traffic.
    #[schemars(length(min = 1, max = 64))]
    pub backends: Vec<TrafficSplitBackend>,
    /// Optional HTTPRouteGroup references: only matching requests are split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TrafficSplitMatch>,
}

/// One backend and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    /// A Service in the same namespace.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Relative weight; 0 drains the backend. An integer (v1alpha2 and later), or a
    /// quantity as v1alpha1 wrote them (`1`, `500m`).
    pub weight: SplitWeight,
}

/// A backend's weight in any SMI version: an integer, or a Kubernetes quantity string
/// (`split.smi-spec.io/v1alpha1`). The CRD serves every version with one schema (an
/// int-or-string), so an object created as v1alpha1 reads the same as v1alpha4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SplitWeight {
    /// An integer weight.
    Int(i64),
    /// A quantity: digits with an optional fraction and an optional suffix (`m`, `k`,
    /// `M`, `G`, `Ki`, `Mi`, `Gi`).
    Quantity(String),
}

impl From<i64> for SplitWeight {
    fn from(w: i64) -> Self {
        SplitWeight::Int(w)
    }
}

/// What a quantity weight may look like.
pub const QUANTITY_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|Ki|Mi|Gi)?$";

impl JsonSchema for SplitWeight {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SplitWeight".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // An int-or-string: the API server applies `minimum`/`maximum` to integers and
        // `pattern` to strings.
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "minimum": 0,
            "maximum": 4294967295_i64,
            "pattern": QUANTITY_PATTERN,
        })
    }
}

/// A quantity in thousandths: `500m` -> 500, `1` -> 1000, `0.5` -> 500, `2k` ->
/// 2,000,000. None for anything else, finer than a thousandth, or too large.
fn quantity_millis(s: &str) -> Option<i64> {
    // Each suffix's value in thousandths.
    let (num, mult): (&str, i128) = [
        ("Ki", 1024 * 1000),
        ("Mi", 1024 * 1024 * 1000),
        ("Gi", 1024 * 1024 * 1024 * 1000),
        ("m", 1),
        ("k", 1_000_000),
        ("M", 1_000_000_000),
        ("G", 1_000_000_000_000),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1000));
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 15
        || frac.len() > 12
    {
        return None;
    }
    // The number as an integer over 10^frac_len, times the multiplier in thousandths.
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let scale = 10_i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let total = digits.checked_mul(mult)?;
    if total % scale != 0 {
        return None;
    }
    i64::try_from(total / scale).ok()
}

/// A typed reference to a match definition (SMI: `TypedLocalObjectReference`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    /// API group of the referenced object (`specs.smi-spec.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
}

impl TrafficSplitSpec {
    /// The backends' weights as integers, in order. Integers stay as they are; when any
    /// weight is a quantity (v1alpha1), every weight is counted in thousandths, so
    /// `1` and `500m` share 2:1. Errors name the backend's field.
    pub fn weights(&self) -> Result<Vec<i64>, FieldError> {
        let milli = self
            .backends
            .iter()
            .any(|b| matches!(b.weight, SplitWeight::Quantity(_)));
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let field = || format!("spec.backends[{i}].weight");
                match &b.weight {
                    SplitWeight::Int(n) if *n < 0 => {
                        Err(FieldError::new(field(), format!("{n} is negative")))
                    }
                    SplitWeight::Int(n) if milli => n.checked_mul(1000).ok_or_else(|| {
                        FieldError::new(field(), format!("{n} is too large"))
                    }),
                    SplitWeight::Int(n) => Ok(*n),
                    SplitWeight::Quantity(q) => quantity_millis(q).ok_or_else(|| {
                        FieldError::new(
                            field(),
                            format!(
                                "{} is not a quantity Rudder reads (digits, an optional fraction to thousandths, an optional suffix m, k, M, G, Ki, Mi or Gi)",
                                crate::text::quote(q)
                            ),
                        )
                    }),
                }
            })
            .collect()
    }

    /// `(backend service, weight)` with weights as [`TrafficSplitSpec::weights`] reads
    /// them (0 for one that does not parse: validation refuses such objects).
    pub fn weighted(&self) -> Vec<(&str, i64)> {
        let weights = self.weights().unwrap_or_default();
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.service.as_str(), weights.get(i).copied().unwrap_or(0)))
            .collect()
    }

    /// Checks what the schema checks, for sources without an API server.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.service.is_empty() {
            return Err(FieldError::new("spec.service", "is required"));
        }
        if self.backends.is_empty() {
            return Err(FieldError::new(
                "spec.backends",
                "needs at least one backend",
            ));
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(FieldError::new(
                "spec.backends",
                format!("{} backends; at most {MAX_BACKENDS}", self.backends.len()),
            ));
        }
        let weights = self.weights()?;
        let mut sum: i64 = 0;
        for (i, (b, w)) in self.backends.iter().zip(&weights).enumerate() {
            if b.service.is_empty() {
                return Err(FieldError::new(
                    format!("spec.backends[{i}].service"),
                    "is required",
                ));
            }
            if *w > i64::from(u32::MAX) {
                return Err(FieldError::new(
                    format!("spec.backends[{i}].weight"),
                    format!("{w} is above {} (Envoy's limit)", u32::MAX),
                ));
            }
            sum += w;
        }
        if sum > i64::from(u32::MAX) {
            return Err(FieldError::new(
                "spec.backends",
                format!(
                    "the weights sum to {sum}, above {} (Envoy's limit)",
                    u32::MAX
                ),
            ));
        }
        Ok(())
    }

    /// Whether every weight is 0: nothing to route to. The object is kept (so its
    /// status can say so) but the last good routing stays in effect.
    pub fn all_weights_zero(&self) -> bool {
        self.weighted().iter().all(|(_, w)| *w == 0)
    }

    /// Match references of a kind Rudder does not implement: (index, kind).
    pub fn unsupported_matches(&self) -> Vec<(usize, String)> {
        self.matches
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind != HTTP_ROUTE_GROUP)
            .map(|(i, m)| (i, m.kind.clone()))
            .collect()
    }
}
