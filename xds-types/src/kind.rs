//! [`XdsType`] and [`FACTS`]: each served type and the one row of facts about it.

use std::fmt;

/// The xDS resource types Rudder serves, in push order (make-before-break: Clusters
/// before the Listeners and Routes that name them; a Cluster's endpoints follow it, as
/// Envoy warms a Cluster with them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XdsType {
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`
    Secret,
    /// CDS: `envoy.config.cluster.v3.Cluster`
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`
    Route,
    /// VHDS: `envoy.config.route.v3.VirtualHost`, the virtual hosts of a route table
    /// whose `vhds` asks for them apart (delta only; after the table that names them).
    VirtualHost,
}

/// What is true of one xDS type, whoever serves or consumes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeFacts {
    /// The type.
    pub kind: XdsType,
    /// The type URL.
    pub type_url: &'static str,
    /// The short name used in logs and by `xdsctl` (`CDS`, `EDS`, ...).
    pub short: &'static str,
    /// Whether a client that names no resources wants all of them (LDS and CDS, as Envoy
    /// subscribes).
    pub wildcard_by_default: bool,
    /// Whether a state-of-the-world response carries the whole set, so that a name
    /// missing from it is a removal (LDS and CDS); for the others it carries only what
    /// changed among the subscribed names.
    pub full_set: bool,
    /// The type a resource's references name, if any (route and listener -> cluster,
    /// cluster -> its endpoints).
    pub refers_to: Option<XdsType>,
}

/// The facts of every type, in push order (`FACTS[t.index()].kind == t`).
pub const FACTS: [TypeFacts; XdsType::COUNT] = [
    TypeFacts {
        kind: XdsType::Secret,
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        short: "SDS",
        wildcard_by_default: false,
        full_set: false,
        refers_to: None,
    },
    TypeFacts {
        kind: XdsType::Cluster,
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        short: "CDS",
        wildcard_by_default: true,
        full_set: true,
        refers_to: Some(XdsType::Endpoint),
    },
    TypeFacts {
        kind: XdsType::Endpoint,
        type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        short: "EDS",
        wildcard_by_default: false,
        full_set: false,
        refers_to: None,
    },
    TypeFacts {
        kind: XdsType::Listener,
        type_url: "type.googleapis.com/envoy.config.listener.v3.Listener",
        short: "LDS",
        wildcard_by_default: true,
        full_set: true,
        refers_to: Some(XdsType::Cluster),
    },
    TypeFacts {
        kind: XdsType::Route,
        type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        short: "RDS",
        wildcard_by_default: false,
        full_set: false,
        refers_to: Some(XdsType::Cluster),
    },
    TypeFacts {
        kind: XdsType::VirtualHost,
        type_url: "type.googleapis.com/envoy.config.route.v3.VirtualHost",
        short: "VHDS",
        // Envoy's first VHDS request names nothing: every virtual host of the table.
        wildcard_by_default: true,
        full_set: false,
        refers_to: Some(XdsType::Cluster),
    },
];

impl XdsType {
    /// How many types there are.
    pub const COUNT: usize = 6;

    /// All types, in push order.
    pub const ALL: [XdsType; XdsType::COUNT] = [
        XdsType::Secret,
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::VirtualHost,
    ];

    /// Its place in push order, `0..COUNT`: the slot of a [`PerType`](crate::PerType).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Everything known about the type.
    pub const fn facts(self) -> &'static TypeFacts {
        &FACTS[self.index()]
    }

    /// The type URL.
    pub const fn type_url(self) -> &'static str {
        self.facts().type_url
    }

    /// The type for a type URL.
    pub fn from_type_url(url: &str) -> Option<Self> {
        FACTS.iter().find(|f| f.type_url == url).map(|f| f.kind)
    }

    /// The type for its short name, in any case (`cds`, `EDS`).
    pub fn from_short(short: &str) -> Option<Self> {
        FACTS
            .iter()
            .find(|f| f.short.eq_ignore_ascii_case(short))
            .map(|f| f.kind)
    }

    /// The short name used in logs (`CDS`, `EDS`, `LDS`, `RDS`, `SDS`, `VHDS`).
    pub const fn short(self) -> &'static str {
        self.facts().short
    }

    /// Whether a client that names no resources wants all of them (LDS, CDS).
    pub const fn wildcard_by_default(self) -> bool {
        self.facts().wildcard_by_default
    }

    /// Whether a state-of-the-world response of this type carries the whole set.
    pub const fn full_set(self) -> bool {
        self.facts().full_set
    }

    /// Where a resource points: the type its references name, if any.
    pub const fn refers_to(self) -> Option<XdsType> {
        self.facts().refers_to
    }
}

impl fmt::Display for XdsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_agree_with_the_enum() {
        for (i, t) in XdsType::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i, "ALL is in declaration order");
            assert_eq!(FACTS[i].kind, t, "FACTS row {i} describes {t:?}");
            assert_eq!(XdsType::from_type_url(t.type_url()), Some(t));
            assert_eq!(XdsType::from_short(&t.short().to_lowercase()), Some(t));
        }
        assert!(XdsType::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn references_end_at_endpoints() {
        // Listener and Route -> Cluster -> Endpoint: no type refers to itself or loops.
        for t in XdsType::ALL {
            let mut at = t;
            for _ in 0..XdsType::COUNT {
                match at.refers_to() {
                    Some(next) => at = next,
                    None => break,
                }
            }
            assert_eq!(at.refers_to(), None, "{t}'s references loop");
        }
    }

    #[test]
    fn unknown_urls_and_names_are_not_types() {
        assert_eq!(
            XdsType::from_type_url("type.googleapis.com/unknown.Thing"),
            None
        );
        assert_eq!(XdsType::from_short("XDS"), None);
    }
}
