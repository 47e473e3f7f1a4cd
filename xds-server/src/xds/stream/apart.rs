//! Virtual hosts apart (VHDS, delta only) and the route table each belongs to
//! (`ROUTE/NAME`; only [`OUTBOUND_ROUTE_APART`] has any). Envoy takes a table's hosts
//! through a watch the table makes once it is taken, and routes by them until the table
//! goes (its VHDS subscription, though, keeps their versions and claims them again on
//! reconnect). The stream follows that:
//! - a host is sent only while the proxy holds its table (sent before, Envoy's watch
//!   for it does not exist yet and the host is lost);
//! - hosts the proxy claims, on reconnect, for a table it does not hold are left from
//!   an earlier table: once it takes the table they are forgotten and sent, since the new
//!   watch never saw them; a table claimed on reconnect has every host looked at again;
//! - a held host whose table the view no longer has is not removed on its own: a
//!   listener still draining may route by it until its table goes.
//!
//! A stream's shape is fixed (the view's `vhds`) and its listener always names its table
//! (the explicit chain does), so a table is not dropped and taken again within a stream:
//! hosts this stream sent went to the watch its table made.

use xds_types::XdsType;
use xds_types::names::{OUTBOUND_ROUTE_APART, asks_hosts_apart, vhds_table};

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
    /// sends them all): they are all [`OUTBOUND_ROUTE_APART`]'s.
    pub(super) fn tables_held(&self) -> bool {
        self.desired
            .all(XdsType::VirtualHost)
            .next()
            .is_none_or(|_| {
                self.types[XdsType::Route]
                    .held
                    .contains_key(OUTBOUND_ROUTE_APART)
            })
    }

    /// Whether held virtual host `host` leaves with a table the view no longer has.
    pub(super) fn goes_with_its_table(&self, host: &str) -> bool {
        self.desired.get(XdsType::Route, vhds_table(host)).is_none()
    }

    /// After the proxy accepted the route tables in `sent`: if it did not hold the table
    /// apart before, the hosts it claimed for it are forgotten, and every host is looked
    /// at again (those waiting for the table go now). Other tables (a sidecar's per-port
    /// ones, which every new Service adds) cost nothing here.
    pub(super) fn took_tables(&mut self, sent: &Sent) {
        let routes = &self.types[XdsType::Route].held;
        let taken = sent
            .resources
            .iter()
            .any(|r| asks_hosts_apart(&r.name) && !routes.contains_key(&r.name));
        if !taken {
            return;
        }
        let hosts = &mut self.types[XdsType::VirtualHost];
        let claimed: Vec<_> = hosts
            .held
            .claimed()
            .filter(|n| asks_hosts_apart(vhds_table(n)))
            .cloned()
            .collect();
        for name in claimed {
            hosts.held.remove(&name);
        }
        hosts.resync = true;
    }

    /// After the proxy claimed route tables at connect (`names`): if the table apart is
    /// among them, every host is looked at again, since some may have waited for it
    /// (the host request can come first).
    pub(super) fn claimed_tables<'a>(&mut self, mut names: impl Iterator<Item = &'a String>) {
        if names.any(|n| asks_hosts_apart(n)) {
            self.types[XdsType::VirtualHost].resync = true;
        }
    }
}
