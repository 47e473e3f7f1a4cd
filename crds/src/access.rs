//! SMI access control: `TrafficTarget` (`access.smi-spec.io`, stored as v1alpha3, served
//! at v1alpha1 to v1alpha3) says which service accounts may call a destination service
//! account, and on which rules; `TCPRoute` (`specs.smi-spec.io`) names the ports a rule
//! covers on non-HTTP traffic.
//!
//! Versions: v1alpha2 and v1alpha3 put `destination`, `rules` and `sources` under
//! `spec` (v1alpha2's destination may name a `port`); v1alpha1, as Flagger-era manifests
//! write it, puts `destination`, `specs` (the rules) and `sources` at the top level, with
//! a string port. One schema serves all three (conversion `None`, so the API server never
//! needs Rudder to serve them), and [`TrafficTarget::effective`] reads either shape.
//!
//! The root type is written by hand (kube's derive insists on `spec`); the CRD is
//! generated from the derived [`TrafficTargetShape`] and widened by
//! [`traffic_target_crd`] with the v1alpha1 fields.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::status::MeshStatus;

/// The access group.
pub const ACCESS_GROUP: &str = "access.smi-spec.io";
/// The TrafficTarget versions served; the last is stored.
pub const ACCESS_VERSIONS: [&str; 3] = ["v1alpha1", "v1alpha2", "v1alpha3"];
/// Kind of a rule naming an HTTPRouteGroup.
pub const RULE_HTTP: &str = "HTTPRouteGroup";
/// Kind of a rule naming a TCPRoute.
pub const RULE_TCP: &str = "TCPRoute";
/// The only subject kind.
pub const SERVICE_ACCOUNT: &str = "ServiceAccount";
/// Annotation that makes a TrafficTarget a dry run: proxies record what it would deny
/// (shadow rules) and deny nothing for it.
pub const DRY_RUN_ANNOTATION: &str = "rudder.dev/dry-run";

/// Most rules one TrafficTarget may list.
pub const MAX_RULES: usize = 32;
/// Most sources one TrafficTarget may list.
pub const MAX_SOURCES: usize = 256;
/// Most match names one rule may list.
pub const MAX_RULE_MATCHES: usize = 64;
/// Most ports one TCPRoute may list.
pub const MAX_TCP_PORTS: usize = 64;

/// Who may call whom, on what (the `spec` of v1alpha2 and v1alpha3).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "access.smi-spec.io",
    version = "v1alpha3",
    kind = "TrafficTarget",
    root = "TrafficTargetShape",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "tt",
    doc = "SMI TrafficTarget: the service accounts allowed to call a destination service account, and on which rules",
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destination.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTargetSpec {
    /// The service account whose pods are called.
    pub destination: IdentitySubject,
    /// What the sources may do: HTTPRouteGroup matches, TCPRoute ports.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub rules: Vec<TrafficTargetRule>,
    /// The service accounts allowed to call.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub sources: Vec<IdentitySubject>,
}

/// A service account, in a namespace (v1alpha1 and v1alpha2: and a port).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySubject {
    /// Always `ServiceAccount`.
    pub kind: String,
    /// The service account's name.
    pub name: String,
    /// Its namespace (the TrafficTarget's when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// v1alpha1 and v1alpha2 destinations: only this port of the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
}

/// A reference to a traffic spec: an HTTPRouteGroup (some or all of its matches) or a
/// TCPRoute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTargetRule {
    /// `HTTPRouteGroup` or `TCPRoute`.
    pub kind: String,
    /// The object's name, in the TrafficTarget's namespace.
    pub name: String,
    /// HTTPRouteGroup match names; empty: every match of the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub matches: Vec<String>,
}

/// `TrafficTarget` in any served version: v1alpha2/3 with `spec`, or v1alpha1 with the
/// same fields at the top level (`specs` for the rules).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficTarget {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// v1alpha2 and v1alpha3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<TrafficTargetSpec>,
    /// v1alpha1: the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<IdentitySubject>,
    /// v1alpha1: the rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<TrafficTargetRule>,
    /// v1alpha1: the sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<IdentitySubject>,
    /// What Rudder reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MeshStatus>,
}

impl kube::Resource for TrafficTarget {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "TrafficTarget".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        ACCESS_GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha3".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "traffictargets".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl TrafficTarget {
    /// The spec whichever version wrote it: `spec` when given, else v1alpha1's
    /// top-level fields.
    pub fn effective(&self) -> Cow<'_, TrafficTargetSpec> {
        match &self.spec {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(TrafficTargetSpec {
                destination: self.destination.clone().unwrap_or_default(),
                rules: self.specs.clone(),
                sources: self.sources.clone(),
            }),
        }
    }

    /// Where the spec's fields are (`spec.` or, for v1alpha1, the top level), and the
    /// name its rules have there.
    pub fn field_prefix(&self) -> (&'static str, &'static str) {
        if self.spec.is_some() {
            ("spec.", "rules")
        } else {
            ("", "specs")
        }
    }

    /// Whether the object is a dry run ([`DRY_RUN_ANNOTATION`] `"true"`).
    pub fn dry_run(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRY_RUN_ANNOTATION))
            .is_some_and(|v| v == "true")
    }

    /// Checks what the schema cannot (either version's shape).
    pub fn validate(&self) -> Result<(), FieldError> {
        let (p, rules) = self.field_prefix();
        if self.spec.is_none() && self.destination.is_none() {
            return Err(FieldError::new(
                "spec",
                "is required (v1alpha1: destination at the top level)",
            ));
        }
        if let Some(v) = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRY_RUN_ANNOTATION))
            .filter(|v| *v != "true" && *v != "false")
        {
            return Err(FieldError::new(
                format!("metadata.annotations[{DRY_RUN_ANNOTATION:?}]"),
                format!("{} is not \"true\" or \"false\"", crate::text::quote(v)),
            ));
        }
        self.effective().check(p, rules)
    }
}

impl TrafficTargetSpec {
    /// Checks the fields under `p` (`spec.` or empty), the rules being called `rules`.
    fn check(&self, p: &str, rules: &str) -> Result<(), FieldError> {
        subject(&format!("{p}destination"), &self.destination, true)?;
        if self.rules.is_empty() {
            return Err(FieldError::new(
                format!("{p}{rules}"),
                "at least one rule is required",
            ));
        }
        if self.rules.len() > MAX_RULES {
            return Err(FieldError::new(
                format!("{p}{rules}"),
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("{p}{rules}[{i}]");
            match r.kind.as_str() {
                RULE_HTTP | RULE_TCP => {}
                "UDPRoute" => {
                    return Err(FieldError::unsupported(
                        format!("{at}.kind"),
                        "UDPRoute is not supported; only HTTPRouteGroup and TCPRoute",
                    ));
                }
                other => {
                    return Err(FieldError::new(
                        format!("{at}.kind"),
                        format!(
                            "{} is not HTTPRouteGroup or TCPRoute",
                            crate::text::quote(other)
                        ),
                    ));
                }
            }
            if !crate::text::is_dns_subdomain(&r.name) {
                return Err(FieldError::new(
                    format!("{at}.name"),
                    format!("{} is not an object name", crate::text::quote(&r.name)),
                ));
            }
            if r.kind == RULE_TCP && !r.matches.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.matches"),
                    "a TCPRoute rule has no match names (its ports are the TCPRoute's)",
                ));
            }
            if r.matches.len() > MAX_RULE_MATCHES {
                return Err(FieldError::new(
                    format!("{at}.matches"),
                    format!("at most {MAX_RULE_MATCHES} match names"),
                ));
            }
        }
        if self.sources.is_empty() {
            return Err(FieldError::new(
                format!("{p}sources"),
                "at least one source is required",
            ));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(FieldError::new(
                format!("{p}sources"),
                format!("at most {MAX_SOURCES} sources"),
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            subject(&format!("{p}sources[{i}]"), s, false)?;
        }
        Ok(())
    }
}

/// A subject: a service account by a valid name; a port only on the destination.
fn subject(at: &str, s: &IdentitySubject, destination: bool) -> Result<(), FieldError> {
    if s.kind != SERVICE_ACCOUNT {
        return Err(FieldError::new(
            format!("{at}.kind"),
            format!("{} is not ServiceAccount", crate::text::quote(&s.kind)),
        ));
    }
    if !crate::text::is_dns_subdomain(&s.name) {
        return Err(FieldError::new(
            format!("{at}.name"),
            format!(
                "{} is not a service account name",
                crate::text::quote(&s.name)
            ),
        ));
    }
    if let Some(ns) = s.namespace.as_deref().filter(|ns| !ns.is_empty())
        && !crate::text::is_dns_label(ns)
    {
        return Err(FieldError::new(
            format!("{at}.namespace"),
            format!("{} is not a namespace", crate::text::quote(ns)),
        ));
    }
    match (&s.port, destination) {
        (None, _) => Ok(()),
        (Some(_), false) => Err(FieldError::new(
            format!("{at}.port"),
            "only the destination names a port",
        )),
        (Some(p), true) => port_of(p)
            .map(drop)
            .ok_or_else(|| FieldError::new(format!("{at}.port"), "is not a port (1-65535)")),
    }
}

/// A port given as a number or a decimal string (v1alpha1 wrote `"80"`).
pub fn port_of(p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n > 0),
        IntOrString::String(s) => s.parse::<u16>().ok().filter(|n| *n > 0),
    }
}

/// `TCPRoute`, `specs.smi-spec.io/v1alpha4`: the ports a TrafficTarget rule covers on
/// non-HTTP traffic (none listed: every port).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "TCPRoute",
    namespaced,
    doc = "SMI TCPRoute: the ports a TrafficTarget rule covers on non-HTTP traffic",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct TCPRouteSpec {
    /// The ports matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<TCPMatch>,
}

/// A TCPRoute's match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TCPMatch {
    /// Destination ports; empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i64>,
}

impl TCPRouteSpec {
    /// The ports, checked: none means every port.
    pub fn ports(&self) -> Result<Vec<u16>, FieldError> {
        let ports = self.matches.as_ref().map(|m| &m.ports[..]).unwrap_or(&[]);
        if ports.len() > MAX_TCP_PORTS {
            return Err(FieldError::new(
                "spec.matches.ports",
                format!("at most {MAX_TCP_PORTS} ports"),
            ));
        }
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| {
                    FieldError::new(
                        format!("spec.matches.ports[{i}]"),
                        "is not a port (1-65535)",
                    )
                })
            })
            .collect()
    }
}

/// The TrafficTarget CRD: the derived schema, served at every access version, with
/// `spec` optional and v1alpha1's top-level fields beside it.
pub fn traffic_target_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    let mut crd = TrafficTargetShape::crd();
    let Some(mut template) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    if let Some(root) = template
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
    {
        let props = root.properties.get_or_insert_with(Default::default);
        let field = |name: &str| -> Option<JSONSchemaProps> {
            props
                .get("spec")
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get(name))
                .cloned()
        };
        let legacy = [
            ("destination", field("destination")),
            ("specs", field("rules")),
            ("sources", field("sources")),
        ];
        for (name, schema) in legacy {
            if let Some(schema) = schema {
                props.insert(name.to_string(), schema);
            }
        }
        if let Some(req) = root.required.as_mut() {
            req.retain(|r| r != "spec");
        }
    }
    crd.spec.versions = vec![template];
    crate::served::at_versions(crd, &ACCESS_VERSIONS, "v1alpha3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> TrafficTarget {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn v1alpha1_and_v1alpha3_read_the_same() {
        let old = parse(
            "metadata: {name: t, namespace: shop}\ndestination: {kind: ServiceAccount, name: api, namespace: shop, port: \"80\"}\nspecs: [{kind: HTTPRouteGroup, name: g, matches: [m]}]\nsources: [{kind: ServiceAccount, name: web, namespace: shop}]\n",
        );
        let new = parse(
            "metadata: {name: t, namespace: shop}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: shop, port: 80}\n  rules: [{kind: HTTPRouteGroup, name: g, matches: [m]}]\n  sources: [{kind: ServiceAccount, name: web, namespace: shop}]\n",
        );
        assert!(old.validate().is_ok() && new.validate().is_ok());
        let (o, n) = (old.effective(), new.effective());
        assert_eq!(o.rules, n.rules);
        assert_eq!(o.sources, n.sources);
        assert_eq!(o.destination.port.as_ref().and_then(port_of), Some(80));
        assert_eq!(n.destination.port.as_ref().and_then(port_of), Some(80));
    }

    #[test]
    fn errors_name_the_field_in_the_version_written() {
        let old = parse(
            "metadata: {name: t}\ndestination: {kind: ServiceAccount, name: api}\nspecs: [{kind: UDPRoute, name: u}]\nsources: [{kind: ServiceAccount, name: web}]\n",
        );
        let e = old.validate().expect_err("UDPRoute");
        assert_eq!(e.field, "specs[0].kind");
        assert!(e.unsupported);
        let new = parse(
            "metadata: {name: t}\nspec:\n  destination: {kind: ServiceAccount, name: api}\n  rules: [{kind: HTTPRouteGroup, name: g}]\n  sources: [{kind: User, name: web}]\n",
        );
        assert_eq!(
            new.validate().expect_err("kind").field,
            "spec.sources[0].kind"
        );
        let no_rules = parse(
            "metadata: {name: t}\nspec:\n  destination: {kind: ServiceAccount, name: api}\n  sources: [{kind: ServiceAccount, name: web}]\n",
        );
        assert_eq!(no_rules.validate().expect_err("rules").field, "spec.rules");
        let source_port = parse(
            "metadata: {name: t}\nspec:\n  destination: {kind: ServiceAccount, name: api}\n  rules: [{kind: TCPRoute, name: p}]\n  sources: [{kind: ServiceAccount, name: web, port: 80}]\n",
        );
        assert_eq!(
            source_port.validate().expect_err("port").field,
            "spec.sources[0].port"
        );
        let dry = parse(
            "metadata: {name: t, annotations: {rudder.dev/dry-run: \"yes\"}}\nspec:\n  destination: {kind: ServiceAccount, name: api}\n  rules: [{kind: TCPRoute, name: p}]\n  sources: [{kind: ServiceAccount, name: web}]\n",
        );
        assert!(dry.validate().is_err());
    }

    #[test]
    fn the_crd_serves_three_versions_with_spec_optional_and_the_v1alpha1_fields() {
        let crd = traffic_target_crd();
        let names: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ACCESS_VERSIONS);
        assert_eq!(
            crd.spec.versions.iter().filter(|v| v.storage).count(),
            1,
            "one stored version"
        );
        let v = serde_json::to_value(&crd).expect("json");
        let root = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for f in ["spec", "destination", "specs", "sources", "status"] {
            assert!(root["properties"][f].is_object(), "{f}");
        }
        assert!(
            !root["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == "spec")),
            "spec is optional"
        );
    }

    #[test]
    fn tcp_route_ports_are_checked() {
        let ok = TCPRouteSpec {
            matches: Some(TCPMatch {
                ports: vec![5432, 6379],
            }),
        };
        assert_eq!(ok.ports().expect("ok"), vec![5432, 6379]);
        assert!(TCPRouteSpec::default().ports().expect("ok").is_empty());
        let bad = TCPRouteSpec {
            matches: Some(TCPMatch {
                ports: vec![80, 70000],
            }),
        };
        assert_eq!(
            bad.ports().expect_err("range").field,
            "spec.matches.ports[1]"
        );
    }
}
