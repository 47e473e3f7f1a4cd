//! What a status is made of: the conditions one object carries ([`PolicyStatus`]) and
//! the `Accepted` and `ResolvedRefs` conditions every kind shares.

use crds::{ConditionReason, MeshCondition};

/// The conditions one object should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStatus {
    /// `metadata.generation` they describe.
    pub generation: Option<i64>,
    /// `Accepted`, then `ResolvedRefs`. For a route: conditions for every Service parent
    /// (when it was refused as a whole), else empty.
    pub conditions: Vec<MeshCondition>,
    /// For a route: each Service parent, as the route names it, with its conditions.
    pub parents: Vec<(crds::ParentReference, Vec<MeshCondition>)>,
}

pub(crate) fn accepted(ok: Result<(), (ConditionReason, String)>) -> MeshCondition {
    match ok {
        Ok(()) => MeshCondition::new("Accepted", true, ConditionReason::Accepted, "accepted"),
        Err((reason, message)) => MeshCondition::new("Accepted", false, reason, message),
    }
}

pub(crate) fn resolved(missing: Vec<String>) -> MeshCondition {
    if missing.is_empty() {
        MeshCondition::new(
            "ResolvedRefs",
            true,
            ConditionReason::ResolvedRefs,
            "all references resolved",
        )
    } else {
        MeshCondition::new(
            "ResolvedRefs",
            false,
            ConditionReason::BackendNotFound,
            missing.join("; "),
        )
    }
}
