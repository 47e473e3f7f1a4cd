//! Who a proxy is: parsed once from the xDS `Node` it sends, then handed to the
//! translator. The node's metadata carries the pod it runs beside and, on one machine,
//! where it listens; `xds-server bootstrap` writes exactly these keys. Also the view
//! ([`ViewKey`]) a proxy belongs to.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};

use crate::model::{Model, NameRule, ViewKey};

/// Node metadata key: the pod's namespace (required).
pub const META_NAMESPACE: &str = "rudder.dev/namespace";
/// Node metadata key: the pod's name (required).
pub const META_POD: &str = "rudder.dev/pod";
/// Node metadata key: the pod's service account (default `default`).
pub const META_SERVICE_ACCOUNT: &str = "rudder.dev/service-account";
/// Node metadata key: the pod IP the sidecar listens on (default: the Pod's
/// `status.podIP` from the model).
pub const META_POD_IP: &str = "rudder.dev/pod-ip";
/// Node metadata key: the sidecar's outbound (app-facing) port (default 15001).
pub const META_OUTBOUND_PORT: &str = "rudder.dev/outbound-port";
/// Node metadata key: the address the local app listens on (default 127.0.0.1; for
/// an intercepted pod, [`POD_ADDRESS`]).
pub const META_APP_ADDRESS: &str = "rudder.dev/app-address";

/// The app address that stands for the pod's own address (`META_POD_IP`, else the
/// model's Pod): an intercepted pod's default. Its sidecar forwards inbound there, as
/// a peer's connection would arrive without the sidecar, from [`INBOUND_SOURCE_V4`]
/// (or [`INBOUND_SOURCE_V6`]): an app listening only on the pod IP is reachable, one
/// listening only on localhost is not exposed to the mesh.
pub const POD_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// Node metadata key: `"true"` when the pod's traffic is intercepted by iptables (an
/// injected pod), so listeners take traffic by original destination.
pub const META_INTERCEPTION: &str = "rudder.dev/interception";

/// Node metadata key: the port an intercepted pod's inbound traffic is redirected to
/// (default 15006).
pub const META_INBOUND_PORT: &str = "rudder.dev/inbound-port";

/// The default inbound port of an intercepted pod.
pub const DEFAULT_INBOUND_PORT: u16 = 15006;

/// The source address an intercepted pod's sidecar connects to its app from (IPv4;
/// any 127/8 address is the loopback's). The init container's rules let connections
/// from it to the pod's own address through, while the proxy's other connections to
/// its own pod go back to its inbound port (a call to itself through the mesh).
pub const INBOUND_SOURCE_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);
/// [`INBOUND_SOURCE_V4`] for IPv6 pods (`::6`; the init container adds it to `lo`).
pub const INBOUND_SOURCE_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Longest node id accepted.
pub const MAX_NODE_ID: usize = 256;

/// The default outbound port, as with transparent interception.
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;

/// What kind of client a proxy is; decides which resource shapes it can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// An Envoy sidecar.
    Envoy,
    /// A proxyless gRPC client or server.
    Grpc,
}

impl ProxyKind {
    /// Tells a proxyless gRPC client from Envoy: gRPC names itself in the user agent
    /// (`gRPC C-core linux Python`, `grpc-java-netty`, `gRPC Go`) and announces
    /// `xds.config.resource-in-sotw`; Envoy's user agent is `envoy`.
    pub fn of(node: &Node) -> Self {
        let agent = node.user_agent_name.to_ascii_lowercase();
        if agent.contains("grpc")
            || node
                .client_features
                .iter()
                .any(|f| f == "xds.config.resource-in-sotw")
        {
            ProxyKind::Grpc
        } else {
            ProxyKind::Envoy
        }
    }
}

/// The first Envoy release Rudder sends virtual hosts apart. 1.36 refuses VHDS over an
/// aggregated (ADS) stream; 1.37.0, 1.38.3, 1.39.3 and 1.40 pass `testbed/tests/vhds.rs`
/// (`RUDDER_ENVOY` pointed at each), a rollout that turns VHDS on and off under traffic
/// among it. Before the two shapes were tables of different names
/// ([`crate::names::OUTBOUND_ROUTE_APART`]), 1.38 and 1.39 answered requests 404 for
/// about a second on the way back to the whole table, and 1.40 a few on the way there.
pub const VHDS_SINCE: (u32, u32) = (1, 37);

/// Whether `node` is an Envoy that takes virtual hosts over its ADS stream (when the
/// stream is delta): `envoy` by user agent, at [`VHDS_SINCE`] or later by its build
/// version. Anything else (older Envoys, rudder-proxy, gRPC, a node that says no version)
/// gets every virtual host in the route table.
pub fn takes_vhds(node: &Node) -> bool {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    if node.user_agent_name != "envoy" {
        return false;
    }
    let Some(UserAgentVersionType::UserAgentBuildVersion(b)) = &node.user_agent_version_type else {
        return false;
    };
    b.version
        .as_ref()
        .is_some_and(|v| (v.major_number, v.minor_number) >= VHDS_SINCE)
}

/// A proxy's identity and placement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyIdentity {
    /// The xDS node id.
    pub node_id: String,
    /// What kind of client it is.
    pub kind: ProxyKind,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's service account: its workload identity.
    pub service_account: String,
    /// The pod IP, when the node says; otherwise the model's Pod decides.
    pub pod_ip: Option<IpAddr>,
    /// The app-facing outbound port.
    pub outbound_port: u16,
    /// Where the local app listens ([`POD_ADDRESS`]: the pod's own address).
    pub app_address: IpAddr,
    /// Its pod's traffic is intercepted by iptables (an injected pod): listeners take
    /// traffic by original destination.
    pub intercepted: bool,
    /// Where an intercepted pod's inbound traffic arrives.
    pub inbound_port: u16,
    /// It takes the outbound table's virtual hosts apart, over VHDS on its delta ADS
    /// stream ([`takes_vhds`]); set by the server, which knows the stream. A change to
    /// one Service then sends that Service's virtual hosts, not the whole table.
    pub vhds: bool,
}

/// Why a node could not be identified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The request carried no node.
    #[error("the first request on a stream must carry a node")]
    NoNode,
    /// A required metadata key is missing.
    #[error("node {node}: metadata.{key} is required")]
    Missing {
        /// Node id.
        node: String,
        /// Metadata key.
        key: &'static str,
    },
    /// The node id is empty, too long or not printable.
    #[error("node id {message}")]
    NodeId {
        /// What is wrong.
        message: String,
    },
    /// A metadata value is malformed.
    #[error("node {node}: metadata.{key}: {message}")]
    Invalid {
        /// Node id.
        node: String,
        /// Metadata key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ProxyIdentity {
    /// Whether its outbound table's virtual hosts come apart: [`Self::vhds`], for an
    /// Envoy sidecar.
    pub fn hosts_apart(&self) -> bool {
        self.vhds && self.kind == ProxyKind::Envoy
    }

    /// The name of its outbound route table, whose shape it names
    /// ([`crate::names::outbound_route`]).
    pub fn outbound_route(&self) -> &'static str {
        crate::names::outbound_route(self.hosts_apart())
    }

    /// Reads the identity from a node.
    pub fn from_node(node: Option<&Node>) -> Result<Self, IdentityError> {
        let node = node.ok_or(IdentityError::NoNode)?;
        let id = node.id.clone();
        let meta = Meta {
            fields: node.metadata.as_ref(),
            // For messages: the id as given may be anything.
            shown: crds::text::clip(&id, 80),
        };
        let pod_ip = meta.ip(META_POD_IP)?;
        let outbound_port = meta
            .port(META_OUTBOUND_PORT)?
            .unwrap_or(DEFAULT_OUTBOUND_PORT);
        let kind = ProxyKind::of(node);
        let namespace = meta.required(META_NAMESPACE)?;
        let pod = meta.required(META_POD)?;
        let service_account = meta
            .get(META_SERVICE_ACCOUNT)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        for (key, value, rule) in [
            (META_NAMESPACE, &namespace, NameRule::Label),
            (META_POD, &pod, NameRule::Subdomain),
            (META_SERVICE_ACCOUNT, &service_account, NameRule::Subdomain),
        ] {
            rule.check(value).map_err(|m| meta.invalid(key, m))?;
        }
        if id.is_empty() || id.len() > MAX_NODE_ID || id.chars().any(char::is_control) {
            return Err(IdentityError::NodeId {
                message: format!(
                    "{} must be 1 to {MAX_NODE_ID} printable characters",
                    crds::text::quote(&id)
                ),
            });
        }
        let intercepted = meta.get(META_INTERCEPTION).is_some_and(|v| v == "true");
        let app_address = meta.ip(META_APP_ADDRESS)?.unwrap_or(if intercepted {
            POD_ADDRESS
        } else {
            IpAddr::from([127, 0, 0, 1])
        });
        let inbound_port = meta
            .port(META_INBOUND_PORT)?
            .unwrap_or(DEFAULT_INBOUND_PORT);
        Ok(ProxyIdentity {
            inbound_port,
            intercepted,
            kind,
            namespace,
            pod,
            service_account,
            pod_ip,
            outbound_port,
            app_address,
            node_id: id,
            vhds: false,
        })
    }
}

/// A node's metadata, read by the keys Rudder defines.
struct Meta<'a> {
    fields: Option<&'a Struct>,
    /// The node id, clipped, for messages.
    shown: String,
}

impl Meta<'_> {
    /// The value of `key` as text (a number is written out).
    fn get(&self, key: &'static str) -> Option<String> {
        match self.fields?.fields.get(key)? {
            Value {
                kind: Some(ValueKind::StringValue(s)),
            } => Some(s.clone()),
            Value {
                kind: Some(ValueKind::NumberValue(n)),
            } => Some(n.to_string()),
            _ => None,
        }
    }

    /// The value of `key`, which must be there and not empty.
    fn required(&self, key: &'static str) -> Result<String, IdentityError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| IdentityError::Missing {
                node: self.shown.clone(),
                key,
            })
    }

    fn invalid(&self, key: &'static str, message: String) -> IdentityError {
        IdentityError::Invalid {
            node: self.shown.clone(),
            key,
            message,
        }
    }

    /// The IP address at `key`, if given.
    fn ip(&self, key: &'static str) -> Result<Option<IpAddr>, IdentityError> {
        self.get(key)
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    self.invalid(
                        key,
                        format!("{} is not an IP address", crds::text::quote(&s)),
                    )
                })
            })
            .transpose()
    }

    /// The port (not 0) at `key`, if given.
    fn port(&self, key: &'static str) -> Result<Option<u16>, IdentityError> {
        self.get(key)
            .map(|s| {
                s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    self.invalid(key, format!("{} is not a port", crds::text::quote(&s)))
                })
            })
            .transpose()
    }
}

/// The view a proxy belongs to: its namespace, its pod's declared egress and its client
/// kind.
pub fn view_key(model: &Model, proxy: &ProxyIdentity) -> ViewKey {
    ViewKey {
        egress: model
            .pod(&proxy.namespace, &proxy.pod)
            .map(|p| p.egress.clone())
            .unwrap_or_default(),
        ..view_key_without_pod(proxy)
    }
}

/// [`view_key`] before its pod is known (egress: everything).
pub fn view_key_without_pod(proxy: &ProxyIdentity) -> ViewKey {
    ViewKey {
        namespace: proxy.namespace.clone(),
        egress: Default::default(),
        grpc: proxy.kind == ProxyKind::Grpc,
        vhds: proxy.hosts_apart(),
        variant: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_clients_are_told_from_envoy_by_user_agent_or_feature() {
        let node = |agent: &str, features: &[&str]| Node {
            user_agent_name: agent.into(),
            client_features: features.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            ProxyKind::of(&node(
                "envoy",
                &["envoy.lb.does_not_support_overprovisioning"]
            )),
            ProxyKind::Envoy
        );
        assert_eq!(
            ProxyKind::of(&node("gRPC C-core linux Python", &[])),
            ProxyKind::Grpc
        );
        assert_eq!(
            ProxyKind::of(&node("grpc-java-netty", &[])),
            ProxyKind::Grpc
        );
        assert_eq!(
            ProxyKind::of(&node("", &["xds.config.resource-in-sotw"])),
            ProxyKind::Grpc
        );
    }

    #[test]
    fn an_intercepted_pods_app_is_at_its_own_address_unless_the_node_says() {
        let node = |extra: &[(&str, &str)]| {
            let fields = [(META_NAMESPACE, "default"), (META_POD, "web-0")]
                .iter()
                .chain(extra)
                .map(|(k, v)| {
                    let v = Value {
                        kind: Some(ValueKind::StringValue(v.to_string())),
                    };
                    (k.to_string(), v)
                })
                .collect();
            Node {
                id: "web-0.default".into(),
                metadata: Some(Struct { fields }),
                ..Default::default()
            }
        };
        let app = |extra: &[(&str, &str)]| {
            ProxyIdentity::from_node(Some(&node(extra)))
                .map(|p| p.app_address)
                .expect("identity")
        };
        // One machine, explicit proxy: the app on the loopback.
        assert_eq!(app(&[]), IpAddr::from([127, 0, 0, 1]));
        // Intercepted: the pod's own address, as a peer reaches it without a sidecar.
        assert_eq!(app(&[(META_INTERCEPTION, "true")]), POD_ADDRESS);
        // Said explicitly: as said.
        assert_eq!(
            app(&[(META_INTERCEPTION, "true"), (META_APP_ADDRESS, "127.0.0.1")]),
            IpAddr::from([127, 0, 0, 1])
        );
    }

    #[test]
    fn virtual_hosts_apart_go_to_envoy_1_40_and_later() {
        use envoy_types::pb::envoy::config::core::v3::BuildVersion;
        use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
        use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
        let node = |agent: &str, version: Option<(u32, u32)>| Node {
            user_agent_name: agent.into(),
            user_agent_version_type: version.map(|(major_number, minor_number)| {
                UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
                    version: Some(SemanticVersion {
                        major_number,
                        minor_number,
                        patch: 3,
                    }),
                    ..Default::default()
                })
            }),
            ..Default::default()
        };
        for (agent, version, want) in [
            ("envoy", Some((1, 40)), true),
            ("envoy", Some((1, 41)), true),
            ("envoy", Some((2, 0)), true),
            ("envoy", Some((1, 39)), true),
            ("envoy", Some((1, 38)), true),
            ("envoy", Some((1, 37)), true),
            // 1.36 refuses VHDS over ADS.
            ("envoy", Some((1, 36)), false),
            ("envoy", Some((0, 99)), false),
            ("envoy", None, false),
            ("rudder-proxy", Some((1, 40)), false),
            ("grpc-python", Some((1, 40)), false),
        ] {
            assert_eq!(
                takes_vhds(&node(agent, version)),
                want,
                "{agent} {version:?}"
            );
        }
    }
}
