//! `RetryPolicy`, `policy.rudder.dev/v1alpha1`: how calls to one Service (or one of its
//! ports) are retried and timed out, with a budget so retries cannot become a storm.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration;
use crate::error::FieldError;
use crate::status::MeshStatus;

/// HTTP retry conditions (plus any 3-digit status code).
pub const HTTP_RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
];
/// gRPC retry conditions.
pub const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const RETRY_ON_PATTERN: &str = r"^(5xx|gateway-error|reset|connect-failure|retriable-4xx|cancelled|deadline-exceeded|internal|resource-exhausted|unavailable|[1-5][0-9][0-9])$";

/// Retries and timeouts for calls to one Service.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "policy.rudder.dev",
    version = "v1alpha1",
    kind = "RetryPolicy",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "rp",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Retries","type":"integer","jsonPath":".spec.numRetries"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[x_kube(validation = Rule::new("!has(self.perTryTimeout) || !has(self.timeout) || duration(self.perTryTimeout) <= duration(self.timeout)").message("perTryTimeout must not exceed timeout"))]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicySpec {
    /// The Service (and optionally the port) the policy applies to.
    pub target_ref: PolicyTargetRef,
    /// Conditions that trigger a retry: HTTP `5xx`, `gateway-error`, `reset`,
    /// `connect-failure`, `retriable-4xx`, a status code such as `503`; gRPC `cancelled`,
    /// `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = RETRY_ON_PATTERN)))]
    pub retry_on: Vec<String>,
    /// Retries after the first attempt (0-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub num_retries: Option<u32>,
    /// Timeout of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub per_try_timeout: Option<String>,
    /// Backoff between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Overall request timeout, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub timeout: Option<String>,
    /// Caps retries so they cannot grow into a retry storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
}

/// What a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// Always `Service`.
    #[serde(default = "service_kind")]
    #[schemars(regex(pattern = r"^Service$"))]
    pub kind: String,
    /// The Service, in the policy's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Only this Service port, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u32>,
}

fn service_kind() -> String {
    "Service".into()
}

/// Exponential backoff between attempts.
#[derive(Clone, Debug, PartialEq, Eq, KubeSchema, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!has(self.maxInterval) || duration(self.maxInterval) >= duration(self.baseInterval)").message("maxInterval must be at least baseInterval"))]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// First interval.
    #[schemars(regex(pattern = duration::PATTERN))]
    pub base_interval: String,
    /// Largest interval (default 10 x baseInterval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = duration::PATTERN))]
    pub max_interval: Option<String>,
}

/// The retry budget: concurrent retries may be at most `retryPercent` of active
/// requests, but `minRetryConcurrency` are always allowed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Percent of active requests that may be retries (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub retry_percent: Option<u32>,
    /// Retries always allowed at once (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

impl RetryPolicySpec {
    /// Checks what the schema checks, for sources without an API server.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.target_ref.kind != "Service" {
            return Err(FieldError::new(
                "spec.targetRef.kind",
                format!(
                    "{} is not supported; only Service",
                    crate::text::quote(&self.target_ref.kind)
                ),
            ));
        }
        if self.target_ref.name.is_empty() {
            return Err(FieldError::new("spec.targetRef.name", "is required"));
        }
        if let Some(p) = self.target_ref.port
            && !(1..=65535).contains(&p)
        {
            return Err(FieldError::new(
                "spec.targetRef.port",
                format!("{p} is not a port number"),
            ));
        }
        for (i, cond) in self.retry_on.iter().enumerate() {
            let code = cond.len() == 3
                && cond.starts_with(['1', '2', '3', '4', '5'])
                && cond.bytes().all(|b| b.is_ascii_digit());
            if !code
                && !HTTP_RETRY_ON.contains(&cond.as_str())
                && !GRPC_RETRY_ON.contains(&cond.as_str())
            {
                return Err(FieldError::new(
                    format!("spec.retryOn[{i}]"),
                    format!("{} is not a retry condition", crate::text::quote(cond)),
                ));
            }
        }
        if let Some(n) = self.num_retries
            && n > 10
        {
            return Err(FieldError::new(
                "spec.numRetries",
                format!("{n} is above 10"),
            ));
        }
        let dur =
            |field: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, FieldError> {
                v.as_deref()
                    .map(|s| duration::parse(s).map_err(|m| FieldError::new(field, m)))
                    .transpose()
            };
        let per_try = dur("spec.perTryTimeout", &self.per_try_timeout)?;
        let timeout = dur("spec.timeout", &self.timeout)?;
        if let (Some(p), Some(t)) = (per_try, timeout)
            && p > t
        {
            return Err(FieldError::new(
                "spec.perTryTimeout",
                "must not exceed spec.timeout",
            ));
        }
        if let Some(b) = &self.backoff {
            let base = dur("spec.backoff.baseInterval", &Some(b.base_interval.clone()))?;
            let max = dur("spec.backoff.maxInterval", &b.max_interval)?;
            if base.is_some_and(|d| d < std::time::Duration::from_millis(1)) {
                return Err(FieldError::new(
                    "spec.backoff.baseInterval",
                    "must be at least 1ms",
                ));
            }
            if let (Some(base), Some(max)) = (base, max)
                && max < base
            {
                return Err(FieldError::new(
                    "spec.backoff.maxInterval",
                    "must be at least baseInterval",
                ));
            }
        }
        if let Some(p) = self.budget.as_ref().and_then(|b| b.retry_percent)
            && p > 100
        {
            return Err(FieldError::new(
                "spec.budget.retryPercent",
                format!("{p} is above 100"),
            ));
        }
        Ok(())
    }
}
