//! Virtual hosts apart (VHDS, delta only) and the route table each belongs to
//! (`ROUTE/NAME`). Envoy takes a table's hosts through a watch the table makes once it is
//! taken, and drops them with the table; the stream follows that:
//! - a host is sent only while the proxy holds its table (sent before, Envoy's watch
//!   for it does not exist yet and the host is lost);
//! - hosts the proxy claims, on reconnect, for a table it does not hold are left from
//!   an earlier table (Envoy's VHDS subscription outlives a table): once it takes the
//!   table they are forgotten and sent, since the new watch never saw them;
//! - a held host whose table the view no longer has is not removed on its own: a
//!   listener still draining may route by it, and Envoy drops it with its table.

use xds_types::XdsType;
use xds_types::names::vhds_table;

use crate::xds::stream::core::Sent;
use crate::xds::stream::delta::DeltaStream;

impl DeltaStream {
    /// Whether the proxy holds the table of virtual host `host`.
    pub(super) fn table_held(&self, host: &str) -> bool {
        self.types[XdsType::Route]
            .held
            .contains_key(vhds_table(host))
    }

    /// Whether the proxy holds the table of every desired virtual host (a first answer
    /// sends them all). Hosts come sorted, a table's together: one lookup per table.
    pub(super) fn tables_held(&self) -> bool {
        let mut last: Option<&str> = None;
        for r in self.desired.all(XdsType::VirtualHost) {
            let table = vhds_table(&r.name);
            if last != Some(table) {
                if !self.table_held(&r.name) {
                    return false;
                }
                last = Some(table);
            }
        }
        true
    }

    /// Whether held virtual host `host` leaves with a table the view no longer has.
    pub(super) fn goes_with_its_table(&self, host: &str) -> bool {
        self.desired.get(XdsType::Route, vhds_table(host)).is_none()
    }

    /// After the proxy accepted the route tables in `sent`: for each it did not hold
    /// before, the hosts it claimed for that table are forgotten, and every host is
    /// looked at again (those waiting for the table go now).
    pub(super) fn took_tables(&mut self, sent: &Sent) {
        let routes = &self.types[XdsType::Route].held;
        let taken: Vec<&str> = sent
            .resources
            .iter()
            .filter(|r| !routes.contains_key(&r.name))
            .map(|r| &*r.name)
            .collect();
        if taken.is_empty() {
            return;
        }
        let hosts = &mut self.types[XdsType::VirtualHost];
        let claimed: Vec<_> = hosts
            .held
            .claimed()
            .filter(|n| taken.contains(&vhds_table(n)))
            .cloned()
            .collect();
        for name in claimed {
            hosts.held.remove(&name);
        }
        hosts.resync = true;
    }
}
