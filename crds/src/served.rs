//! One CRD schema served at several versions: what the SMI CRDs share.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition,
};

/// `crd` (its first version a template) served at every one of `versions` with the same
/// schema, `stored` the storage version, and conversion `None`: the versions differ only
/// in what the one schema accepts, so the API server never depends on Rudder to serve
/// these objects.
pub(crate) fn at_versions(
    mut crd: CustomResourceDefinition,
    versions: &[&str],
    stored: &str,
) -> CustomResourceDefinition {
    let Some(template) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    crd.spec.versions = versions
        .iter()
        .map(|v| {
            let mut version = template.clone();
            version.name = v.to_string();
            version.storage = *v == stored;
            version.served = true;
            version
        })
        .collect();
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "None".into(),
        webhook: None,
    });
    crd
}
