//! The part of the ADS client both variants share: applying one response's resources
//! of a type as Envoy does (each valid resource applied, each invalid one refused with
//! its last good version kept, a duplicate name refusing the whole response), following
//! removals, dropping what is no longer referenced, Envoy's update stats, and whether
//! the initial configuration is complete.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::google::protobuf::Any;
use xds_types::{PerType, XdsType};

use super::held::{Change, Held, RawEntry};
use super::refs::Refs;
use crate::convert::{ConvertError, Converted};
use crate::stats::Stats;

/// Converts one resource (`convert::convert`, or a fake in tests).
pub type ConvertFn = fn(XdsType, &Any) -> Result<(String, Converted), ConvertError>;

/// The longest resource name accepted.
pub(crate) const MAX_NAME: usize = 4096;

/// One resource of a response.
#[derive(Clone, Debug)]
pub(crate) struct Incoming {
    /// The name the envelope gives it (delta's `Resource.name`); none in SotW.
    pub(crate) name: Option<String>,
    /// Its version.
    pub(crate) version: String,
    /// The resource.
    pub(crate) any: Option<Any>,
}

/// What applying a response did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// What to publish.
    pub(crate) changes: Vec<Change>,
    /// Each refused resource and why.
    pub(crate) refused: Vec<String>,
}

/// The accepted resources and what they reference.
#[derive(Debug)]
pub(crate) struct Core {
    convert: ConvertFn,
    stats: Arc<Stats>,
    pub(crate) held: PerType<BTreeMap<String, Held>>,
    pub(crate) refs: Refs,
    answered: PerType<BTreeSet<String>>,
    received: PerType<bool>,
    /// The initial configuration was complete once: Envoy initializes once, and
    /// checking every wanted name again per response cost O(names) at 10,000 clusters.
    initialized: bool,
}

impl Core {
    pub(crate) fn new(convert: ConvertFn, stats: Arc<Stats>) -> Self {
        // Envoy's xDS stats exist from the start, at zero.
        for prefix in ["listener_manager.lds", "cluster_manager.cds"] {
            for what in ["update_attempt", "update_success", "update_rejected"] {
                stats.counter(&format!("{prefix}.{what}"));
            }
        }
        stats.counter("control_plane.rudder_nacks_total");
        stats.gauge("control_plane.connected_state");
        stats.gauge("cluster_manager.active_clusters");
        stats.gauge("cluster_manager.warming_clusters");
        Core {
            convert,
            stats,
            held: PerType::default(),
            refs: Refs::default(),
            answered: PerType::default(),
            received: PerType::default(),
            initialized: false,
        }
    }

    /// Whether it takes every resource of `ty` (LDS and CDS), without naming them.
    pub(crate) fn wildcard(&self, ty: XdsType) -> bool {
        self.wanted(ty).is_none()
    }

    /// The names of `ty` wanted; none: all (wildcard LDS and CDS).
    pub(crate) fn wanted(&self, ty: XdsType) -> Option<&BTreeSet<String>> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        match ty {
            XdsType::Listener | XdsType::Cluster => None,
            XdsType::VirtualHost => Some(&NONE),
            XdsType::Route => Some(&self.refs.routes),
            XdsType::Endpoint => Some(&self.refs.endpoints),
            XdsType::Secret => Some(&self.refs.ads_secrets),
        }
    }

    /// The versions held of `ty`, by name.
    pub(crate) fn versions(&self, ty: XdsType) -> impl Iterator<Item = (&String, &String)> {
        self.held[ty].iter().map(|(n, h)| (n, &h.raw.version))
    }

    /// Whether the initial configuration has been complete: LDS and CDS answered, and
    /// every route configuration, endpoint set and secret they name answered (accepted
    /// or refused), as Envoy's initialization waits. Once true, it stays true.
    pub(crate) fn ready(&self) -> bool {
        self.initialized
    }

    fn complete(&self) -> bool {
        self.received[XdsType::Listener]
            && self.received[XdsType::Cluster]
            && [XdsType::Route, XdsType::Endpoint, XdsType::Secret]
                .into_iter()
                .all(|ty| {
                    self.wanted(ty)
                        .into_iter()
                        .flatten()
                        .all(|n| self.answered[ty].contains(n))
                })
    }

    /// Applies the resources of one response of `ty`. `full_set`: a held name the
    /// response lacks is removed; `removed`: names removed explicitly. Err: the whole
    /// response is refused (nothing applied), with why.
    pub(crate) fn apply(
        &mut self,
        ty: XdsType,
        items: Vec<Incoming>,
        removed: &[String],
        full_set: bool,
        now: SystemTime,
    ) -> Result<Outcome, String> {
        self.type_stat(ty, "update_attempt");
        let mut accepted: BTreeMap<String, Held> = BTreeMap::new();
        let mut refused: BTreeMap<String, String> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for item in items {
            let (name, result) = self.convert_one(ty, &item);
            if let Some(name) = &name
                && !seen.insert(name.clone())
            {
                self.type_stat(ty, "update_rejected");
                return Err(format!("duplicate resource name {name} in one response"));
            }
            match result {
                Ok(value) => {
                    let Some(name) = name else { continue };
                    let raw = RawEntry {
                        any: item.any.unwrap_or_default(),
                        version: item.version,
                        updated: now,
                    };
                    accepted.insert(name, Held { raw, value });
                }
                Err(message) => {
                    // A resource that cannot even be named (the wrong type, undecodable)
                    // refuses the whole response, as Envoy's mux does: in a full set, its
                    // absence must not read as a removal.
                    let Some(name) = name else {
                        self.type_stat(ty, "update_rejected");
                        return Err(message);
                    };
                    refused.insert(name, message);
                }
            }
        }
        if let Some(wanted) = self.wanted(ty) {
            accepted.retain(|n, _| wanted.contains(n));
        }
        let mut changes = Vec::new();
        let gone: Vec<String> = if full_set {
            self.held[ty]
                .keys()
                .filter(|n| !accepted.contains_key(*n) && !refused.contains_key(*n))
                .cloned()
                .collect()
        } else {
            removed
                .iter()
                .filter(|n| self.held[ty].contains_key(*n) && !accepted.contains_key(*n))
                .cloned()
                .collect()
        };
        for name in gone {
            self.held[ty].remove(&name);
            changes.push(Change {
                ty,
                name,
                value: None,
            });
        }
        // Whether the warming count can have moved: a name answered for the first time,
        // a removal, or a new set of references.
        let mut recount = !changes.is_empty() || ty == XdsType::Cluster;
        for (name, held) in &accepted {
            if ty == XdsType::Cluster {
                // As Envoy: a cluster's main counters exist (at zero) from its creation.
                for what in ["upstream_cx_total", "upstream_rq_total"] {
                    self.stats.counter(&format!("cluster.{name}.{what}"));
                }
            }
            self.held[ty].insert(name.clone(), held.clone());
            recount |= self.answered[ty].insert(name.clone());
            self.resource_stat(ty, name, "update_success");
            changes.push(Change {
                ty,
                name: name.clone(),
                value: Some(held.clone()),
            });
        }
        for name in refused.keys() {
            recount |= self.answered[ty].insert(name.clone());
            self.resource_stat(ty, name, "update_rejected");
        }
        self.received[ty] = true;
        if matches!(ty, XdsType::Listener | XdsType::Cluster) {
            self.follow_refs(&mut changes);
        }
        self.type_stat(
            ty,
            if refused.is_empty() {
                "update_success"
            } else {
                "update_rejected"
            },
        );
        if recount {
            self.cluster_gauges();
        }
        if !self.initialized {
            self.initialized = self.complete();
        }
        Ok(Outcome {
            changes,
            refused: refused.into_values().collect(),
        })
    }

    /// Converts one item: (its name if known, the value or why it is refused).
    fn convert_one(
        &self,
        ty: XdsType,
        item: &Incoming,
    ) -> (Option<String>, Result<Converted, String>) {
        let envelope = item.name.clone();
        if let Some(n) = &envelope
            && n.len() > MAX_NAME
        {
            let short: String = n.chars().take(64).collect();
            return (
                None,
                Err(format!("{short}...: name longer than {MAX_NAME} bytes")),
            );
        }
        let Some(any) = &item.any else {
            let n = envelope.clone().unwrap_or_default();
            return (envelope, Err(format!("{n}: no resource")));
        };
        if any.type_url != ty.type_url() {
            let n = envelope.clone().unwrap_or_default();
            return (
                envelope,
                Err(format!("{n}: type {} in a {ty} response", any.type_url)),
            );
        }
        match (self.convert)(ty, any) {
            Ok((name, _)) if name.len() > MAX_NAME => (
                None,
                Err(format!(
                    "{}...: name longer than {MAX_NAME} bytes",
                    name.chars().take(64).collect::<String>()
                )),
            ),
            Ok((name, _)) if envelope.as_ref().is_some_and(|e| *e != name) => (
                envelope.clone(),
                Err(format!(
                    "{}: the resource is named {name}",
                    envelope.unwrap_or_default()
                )),
            ),
            Ok((name, value)) => (Some(name), Ok(value)),
            Err(e) => {
                let name = envelope.or_else(|| {
                    (e.resource != any.type_url && e.resource.len() <= MAX_NAME)
                        .then(|| e.resource.clone())
                });
                (name, Err(e.to_string()))
            }
        }
    }

    /// Recomputes what the listeners and clusters reference and drops what is no
    /// longer referenced.
    fn follow_refs(&mut self, changes: &mut Vec<Change>) {
        let listeners = self.held[XdsType::Listener]
            .values()
            .filter_map(|h| match &h.value {
                Converted::Listener(l) => Some(l),
                _ => None,
            });
        let clusters = self.held[XdsType::Cluster]
            .values()
            .filter_map(|h| match &h.value {
                Converted::Cluster(c) => Some(c),
                _ => None,
            });
        self.refs = Refs::of(listeners, clusters);
        for ty in [XdsType::Route, XdsType::Endpoint, XdsType::Secret] {
            let wanted = self.wanted(ty).cloned().unwrap_or_default();
            let drop: Vec<String> = self.held[ty]
                .keys()
                .filter(|n| !wanted.contains(*n))
                .cloned()
                .collect();
            for name in drop {
                self.held[ty].remove(&name);
                self.answered[ty].remove(&name);
                changes.push(Change {
                    ty,
                    name,
                    value: None,
                });
            }
        }
    }

    fn type_stat(&self, ty: XdsType, what: &str) {
        let prefix = match ty {
            XdsType::Listener => "listener_manager.lds",
            XdsType::Cluster => "cluster_manager.cds",
            _ => return,
        };
        self.stats.counter(&format!("{prefix}.{what}")).inc();
    }

    fn resource_stat(&self, ty: XdsType, name: &str, what: &str) {
        match ty {
            XdsType::Route => {
                for prefix in self.refs.route_prefixes.get(name).into_iter().flatten() {
                    self.stats
                        .counter(&format!("http.{prefix}.rds.{name}.{what}"))
                        .inc();
                }
            }
            XdsType::Endpoint => {
                for c in self.refs.endpoint_clusters.get(name).into_iter().flatten() {
                    self.stats.counter(&format!("cluster.{c}.{what}")).inc();
                }
            }
            XdsType::Secret => self.stats.counter(&format!("sds.{name}.{what}")).inc(),
            XdsType::Listener | XdsType::Cluster | XdsType::VirtualHost => {}
        }
    }

    fn cluster_gauges(&self) {
        let clusters = &self.held[XdsType::Cluster];
        let warming = self
            .refs
            .endpoint_clusters
            .iter()
            .filter(|(svc, _)| !self.answered[XdsType::Endpoint].contains(*svc))
            .map(|(_, cs)| cs.len())
            .sum::<usize>();
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.stats
            .gauge("cluster_manager.active_clusters")
            .set(n(clusters.len().saturating_sub(warming)));
        self.stats
            .gauge("cluster_manager.warming_clusters")
            .set(n(warming));
    }
}

/// The `error_detail` of a NACK: `INVALID_ARGUMENT` naming every refused resource.
pub(crate) fn nack_status(ty: &str, reasons: &[String]) -> envoy_types::pb::google::rpc::Status {
    envoy_types::pb::google::rpc::Status {
        code: 3,
        message: format!("{ty}: {}", reasons.join("; ")),
        details: Vec::new(),
    }
}
