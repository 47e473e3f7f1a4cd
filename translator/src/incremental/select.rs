//! Which pods each Service selects, from the model's label index (a full build is linear
//! in pods and Services, not their product).

use std::collections::{BTreeMap, BTreeSet};

use super::state::NsName;
use crate::model::{MeshService, Model};

/// The pods `svc` selects now.
pub(super) fn selected(model: &Model, svc: &MeshService) -> BTreeSet<NsName> {
    model
        .pods_selected_by(svc)
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect()
}

/// For every pod, the Services selecting it (pods no Service selects map to nothing).
pub(super) fn selection(model: &Model) -> BTreeMap<NsName, BTreeSet<NsName>> {
    let mut out: BTreeMap<NsName, BTreeSet<NsName>> = model
        .pods()
        .map(|p| ((p.namespace.clone(), p.name.clone()), BTreeSet::new()))
        .collect();
    for svc in model.services() {
        for pod in model.pods_selected_by(svc) {
            if let Some(svcs) = out.get_mut(&(pod.namespace.clone(), pod.name.clone())) {
                svcs.insert((svc.namespace.clone(), svc.name.clone()));
            }
        }
    }
    out
}
