//! What the xDS clients hold and how it reaches the data path: the accepted resources
//! (the raw `Any` with its version and time, for `/config_dump`, and the converted
//! value), the changes a response makes, and [`Publisher`], which applies changes to
//! [`Live`] (touching only the type maps that changed) and to the [`Dump`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::google::protobuf::Any;
use parking_lot::{Mutex, RwLock};
use xds_types::{PerType, XdsType};

use crate::config::{Snapshot, TypeMap};
use crate::convert::Converted;
use crate::live::Live;

/// One accepted resource as it arrived.
#[derive(Clone, Debug)]
pub struct RawEntry {
    /// The resource.
    pub any: Any,
    /// Its version (SotW: the response's `version_info`; delta: the resource's).
    pub version: String,
    /// When it was accepted.
    pub updated: SystemTime,
}

/// An accepted resource: raw and converted.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) raw: RawEntry,
    pub(crate) value: Converted,
}

/// One change to publish: `name` of `ty` set to a value, or removed.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) ty: XdsType,
    pub(crate) name: String,
    pub(crate) value: Option<Held>,
}

/// The raw accepted resources per type, for `/config_dump`.
#[derive(Debug, Default)]
pub struct Dump {
    entries: RwLock<PerType<BTreeMap<String, RawEntry>>>,
}

impl Dump {
    /// The entries of `ty`, by name.
    pub fn of(&self, ty: XdsType) -> BTreeMap<String, RawEntry> {
        self.entries.read()[ty].clone()
    }
}

/// Applies changes to [`Live`] and the [`Dump`]; the ADS client and the agent's SDS
/// client both write through it, one at a time.
#[derive(Debug)]
pub struct Publisher {
    live: Arc<Live>,
    dump: Arc<Dump>,
    one_writer: Mutex<()>,
    /// The ADS side's initial configuration is complete, and the agent's secrets the
    /// listeners and clusters name (Envoy warms a listener until its secrets arrive).
    init: Mutex<(bool, BTreeSet<String>)>,
}

impl Publisher {
    /// A publisher into `live` and `dump`.
    pub fn new(live: Arc<Live>, dump: Arc<Dump>) -> Self {
        Publisher {
            live,
            dump,
            one_writer: Mutex::new(()),
            init: Mutex::new((false, BTreeSet::new())),
        }
    }

    /// The published configuration.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Applies `changes` (nothing is published when there are none); the publication's
    /// number, if there was one.
    pub(crate) fn apply(&self, changes: &[Change]) -> Option<u64> {
        if changes.is_empty() {
            return None;
        }
        let _one = self.one_writer.lock();
        {
            let mut dump = self.dump.entries.write();
            for c in changes {
                match &c.value {
                    Some(h) => dump[c.ty].insert(c.name.clone(), h.raw.clone()),
                    None => dump[c.ty].remove(&c.name),
                };
            }
        }
        let version = self.live.update(|current| next_snapshot(current, changes));
        self.check_ready();
        Some(version)
    }

    /// Records the ADS side's initial state and the agent secrets it names; the proxy
    /// is ready once the ADS side is and every such secret is held.
    pub(crate) fn set_init(&self, ads_ready: bool, agent_names: BTreeSet<String>) {
        *self.init.lock() = (ads_ready, agent_names);
        self.check_ready();
    }

    fn check_ready(&self) {
        if self.live.is_ready() {
            return;
        }
        let init = self.init.lock();
        let snapshot = self.live.load();
        if init.0 && init.1.iter().all(|n| snapshot.secrets.contains_key(n)) {
            self.live.set_ready();
        }
    }
}

/// `current` with `changes` applied; maps of types without changes are shared.
pub(crate) fn next_snapshot(current: &Snapshot, changes: &[Change]) -> Snapshot {
    let mut next = current.clone();
    for ty in XdsType::ALL {
        let mine: Vec<&Change> = changes.iter().filter(|c| c.ty == ty).collect();
        if mine.is_empty() {
            continue;
        }
        match ty {
            XdsType::Listener => edit(&mut next.listeners, &mine, |v| match v {
                Converted::Listener(l) => Some(l.clone()),
                _ => None,
            }),
            XdsType::Route => edit(&mut next.routes, &mine, |v| match v {
                Converted::Route(r) => Some(r.clone()),
                _ => None,
            }),
            XdsType::Cluster => edit(&mut next.clusters, &mine, |v| match v {
                Converted::Cluster(c) => Some(c.clone()),
                _ => None,
            }),
            XdsType::Endpoint => edit(&mut next.endpoints, &mine, |v| match v {
                Converted::Endpoints(e) => Some(e.clone()),
                _ => None,
            }),
            // Never held (see `wanted`).
            XdsType::VirtualHost => {}
            XdsType::Secret => edit(&mut next.secrets, &mine, |v| match v {
                Converted::Secret(s) => Some(s.clone()),
                _ => None,
            }),
        }
    }
    next
}

fn edit<T>(map: &mut TypeMap<T>, changes: &[&Change], pick: impl Fn(&Converted) -> Option<T>) {
    let mut m = BTreeMap::clone(map);
    for c in changes {
        match c.value.as_ref().and_then(|h| pick(&h.value)) {
            Some(v) => m.insert(c.name.clone(), Arc::new(v)),
            None => m.remove(&c.name),
        };
    }
    *map = Arc::new(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::fake;

    fn change(ty: XdsType, text: &str) -> Change {
        let any = fake::any(ty, text);
        let (name, value) = fake::convert(ty, &any).expect("fake");
        let raw = RawEntry {
            any,
            version: "1".into(),
            updated: SystemTime::now(),
        };
        Change {
            ty,
            name,
            value: Some(Held { raw, value }),
        }
    }

    #[test]
    fn ready_waits_for_the_agents_secrets_and_types_share_untouched_maps() {
        let live = Arc::new(Live::default());
        let p = Publisher::new(live.clone(), Arc::new(Dump::default()));
        p.apply(&[change(XdsType::Listener, "L")]);
        let before = live.load();
        p.set_init(true, ["default".to_string()].into());
        assert!(!live.is_ready(), "the workload certificate is outstanding");
        p.apply(&[change(XdsType::Secret, "default")]);
        assert!(live.is_ready());
        let after = live.load();
        assert!(Arc::ptr_eq(&before.listeners, &after.listeners));
        assert!(!Arc::ptr_eq(&before.secrets, &after.secrets));
        p.apply(&[Change {
            ty: XdsType::Secret,
            name: "default".into(),
            value: None,
        }]);
        assert!(live.load().secrets.is_empty());
    }
}
