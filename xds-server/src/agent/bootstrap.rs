//! The Envoy bootstrap for one pod's sidecar: a pure function of its parameters. The
//! sidecar injector will call the same function.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};
use translator::identity::{
    META_APP_ADDRESS, META_NAMESPACE, META_OUTBOUND_PORT, META_POD, META_POD_IP,
    META_SERVICE_ACCOUNT,
};

/// The static cluster that points at the control plane.
pub(crate) const XDS_CLUSTER: &str = "rudder-xds";

/// Everything a bootstrap depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapParams {
    /// Node id; defaults to `POD.NAMESPACE`.
    pub node_id: Option<String>,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's service account.
    pub service_account: String,
    /// The pod IP the sidecar listens on (else the Pod's `status.podIP`).
    pub pod_ip: Option<IpAddr>,
    /// The app-facing outbound port (else 15001).
    pub outbound_port: Option<u16>,
    /// Where the local app listens (else 127.0.0.1).
    pub app_address: Option<IpAddr>,
    /// The control plane's xDS address, `HOST:PORT`.
    pub xds_host: String,
    /// The xDS port.
    pub xds_port: u16,
    /// Delta (incremental) ADS instead of state-of-the-world.
    pub delta: bool,
    /// Envoy's admin listener (port 0: any free port).
    pub admin: SocketAddr,
    /// TLS to the control plane (None: plain text).
    pub tls: Option<BootstrapTls>,
    /// The credential directory whose agent serves the workload certificate for mesh
    /// mTLS (its SDS socket); None: the sidecar gets none.
    pub agent_sds: Option<std::path::PathBuf>,
}

/// Files and identity for the sidecar's TLS connection to the control plane. Envoy
/// reads the certificate and bundle through file-based SDS watching `dir`, so the proxy
/// agent's renewals take effect without a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapTls {
    /// The credential directory (see [`crate::agent::files`]).
    pub dir: std::path::PathBuf,
    /// The sidecar's client certificate (its workload identity).
    pub cert_file: std::path::PathBuf,
    /// Its key.
    pub key_file: std::path::PathBuf,
    /// The trust bundle.
    pub ca_file: std::path::PathBuf,
    /// The control plane's SPIFFE ID, checked on connect.
    pub server_id: String,
}

/// Marks a bootstrap's node as intercepted (an injected pod, or a pod under iptables
/// rules): its listeners take traffic by original destination.
pub(crate) fn mark_intercepted(b: &mut Value, inbound_port: u16) {
    b["node"]["metadata"][translator::identity::META_INTERCEPTION] = "true".into();
    b["node"]["metadata"][translator::identity::META_INBOUND_PORT] =
        inbound_port.to_string().into();
}

/// The bootstrap as JSON (Envoy reads JSON and YAML alike).
pub fn bootstrap(p: &BootstrapParams) -> Value {
    let node_id = p
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{}.{}", p.pod, p.namespace));
    let metadata = node_metadata(p);
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    let mut b = json!({
        "node": {
            "id": node_id,
            "cluster": format!("{}.{}", p.service_account, p.namespace),
            "metadata": metadata,
        },
        "admin": {
            "address": {"socket_address": {"address": p.admin.ip().to_string(), "port_value": p.admin.port()}}
        },
        // No stats sinks: stats are read from the admin endpoint, so there is nothing to
        // flush on a timer. The default 5 s flush walks every stat on the main thread,
        // where xDS is applied too: with 10,000 clusters it holds an update back ~230 ms.
        "stats_flush_on_admin": true,
        "dynamic_resources": {
            "ads_config": {
                "api_type": if p.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": {
                        "cluster_name": XDS_CLUSTER,
                        // Reconnect quickly after a control-plane restart.
                        "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
                    }
                }]
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [xds_cluster(p)]
        }
    });
    // The workload certificate for mesh mTLS: from the agent's SDS server on a Unix
    // socket in the credential directory (the key never leaves the pod), whether or not
    // the xDS connection itself is TLS.
    if let (Some(dir), Some(clusters)) = (
        &p.agent_sds,
        b["static_resources"]["clusters"].as_array_mut(),
    ) {
        use crate::agent::files;
        clusters.push(agent_sds_cluster(&files::path(dir, files::SDS_SOCKET)));
    }
    if let Some(tls) = &p.tls {
        b["static_resources"]["clusters"][0]["transport_socket"] = xds_transport_socket(tls);
    }
    b
}

/// The node metadata the translator reads: who the pod is and how it is reached.
fn node_metadata(p: &BootstrapParams) -> serde_json::Map<String, Value> {
    let mut metadata = serde_json::Map::new();
    metadata.insert(META_NAMESPACE.into(), json!(p.namespace));
    metadata.insert(META_POD.into(), json!(p.pod));
    metadata.insert(META_SERVICE_ACCOUNT.into(), json!(p.service_account));
    if let Some(ip) = p.pod_ip {
        metadata.insert(META_POD_IP.into(), json!(ip.to_string()));
    }
    if let Some(port) = p.outbound_port {
        metadata.insert(META_OUTBOUND_PORT.into(), json!(port.to_string()));
    }
    if let Some(ip) = p.app_address {
        metadata.insert(META_APP_ADDRESS.into(), json!(ip.to_string()));
    }
    metadata
}

/// The static cluster that points at the control plane (HTTP/2 with keepalives).
fn xds_cluster(p: &BootstrapParams) -> Value {
    // An IP is used as is; a name (a Kubernetes Service) is resolved by DNS.
    let discovery = if p.xds_host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    json!({
        "name": XDS_CLUSTER,
        "type": discovery,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "15s", "timeout": "5s"}
                }}
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": p.xds_host, "port_value": p.xds_port}
            }}}]}]
        }
    })
}

/// TLS to the control plane: the client certificate and the trust bundle from the
/// credential directory through file-based SDS, the server checked by its SPIFFE ID.
fn xds_transport_socket(tls: &BootstrapTls) -> Value {
    use crate::agent::files;
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [{
                    "name": xds_types::names::XDS_CLIENT_SECRET,
                    "sds_config": files::sds_source(&tls.dir, files::CERT_SDS),
                }],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": tls.server_id}}]
                    },
                    "validation_context_sds_secret_config": {
                        "name": xds_types::names::XDS_CA_SECRET,
                        "sds_config": files::sds_source(&tls.dir, files::BUNDLE_SDS),
                    }
                }
            }
        }
    })
}

/// The static cluster for the agent's SDS server at `socket`.
fn agent_sds_cluster(socket: &std::path::Path) -> Value {
    let name = translator::tls::AGENT_SDS_CLUSTER;
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "pipe": {"path": socket.display().to_string()}
            }}}]}]
        }
    })
}

/// How often a gRPC app re-reads its certificate files (the agent renews at half-life;
/// the shortest lifetime, 10 s, leaves 5 s).
pub(crate) const GRPC_REFRESH: &str = "2s";

/// The bootstrap of a proxyless gRPC app (`GRPC_XDS_BOOTSTRAP`): the same node identity
/// as a sidecar's, the xDS server with TLS channel credentials from `tls` (gRFC A65;
/// plain text without it), the certificate provider [`translator::grpc::CERT_PROVIDER`]
/// reading the same files for mesh mTLS (gRFC A29), and the server listener template
/// for xDS-enabled servers (gRFC A36). gRPC re-reads the files, so renewals need no
/// restart. The node carries a `locality` (empty): grpc-js refuses a node without one
/// (`locality field missing in node element`), C-core takes it either way.
pub(crate) fn grpc_bootstrap(p: &BootstrapParams, tls: &BootstrapTls) -> Value {
    let mut b = bootstrap(&BootstrapParams {
        tls: None,
        agent_sds: None,
        ..p.clone()
    });
    b["node"]["locality"] = json!({});
    let files = json!({
        "certificate_file": tls.cert_file.display().to_string(),
        "private_key_file": tls.key_file.display().to_string(),
        "ca_certificate_file": tls.ca_file.display().to_string(),
        "refresh_interval": GRPC_REFRESH,
    });
    let creds = if p.tls.is_some() {
        json!([{"type": "tls", "config": files}])
    } else {
        json!([{"type": "insecure"}])
    };
    json!({
        "xds_servers": [{
            "server_uri": if p.xds_host.contains(':') {
                format!("[{}]:{}", p.xds_host, p.xds_port)
            } else {
                format!("{}:{}", p.xds_host, p.xds_port)
            },
            "channel_creds": creds,
            "server_features": ["xds_v3"],
        }],
        "node": b["node"].take(),
        "certificate_providers": {
            translator::grpc::CERT_PROVIDER: {"plugin_name": "file_watcher", "config": files},
        },
        "server_listener_resource_name_template": translator::grpc::SERVER_LISTENER_TEMPLATE,
    })
}

/// The bootstrap of a proxyless gRPC app that reaches the control plane through its
/// agent's xDS bridge ([`crate::agent::xds_proxy`]) on the Unix socket `socket`: plain
/// text to the agent (`insecure`, the only creds grpc-js has besides google_default),
/// which forwards over mTLS with the pod's certificate. Everything else as
/// [`grpc_bootstrap`]: the files stay the app's certificates for mesh mTLS (gRFC A29).
pub(crate) fn grpc_bootstrap_via_agent(
    p: &BootstrapParams,
    tls: &BootstrapTls,
    socket: &std::path::Path,
) -> Value {
    let mut b = grpc_bootstrap(p, tls);
    b["xds_servers"] = json!([{
        "server_uri": format!("unix://{}", socket.display()),
        "channel_creds": [{"type": "insecure"}],
        "server_features": ["xds_v3"],
    }]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootstrapParams {
        BootstrapParams {
            node_id: None,
            namespace: "shop".into(),
            pod: "api-0".into(),
            service_account: "api".into(),
            pod_ip: Some("127.0.0.12".parse().expect("ip")),
            outbound_port: Some(15001),
            app_address: None,
            xds_host: "127.0.0.1".into(),
            xds_port: 4242,
            delta: true,
            admin: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
            agent_sds: None,
        }
    }

    /// Credential files under `/creds`.
    fn creds() -> BootstrapTls {
        BootstrapTls {
            dir: "/creds".into(),
            cert_file: "/creds/xds-client.crt".into(),
            key_file: "/creds/xds-client.key".into(),
            ca_file: "/creds/xds-ca.crt".into(),
            server_id: "spiffe://cluster.local/ns/rudder-system/sa/rudder".into(),
        }
    }

    #[test]
    fn carries_identity_and_picks_the_stream_type() {
        let b = bootstrap(&params());
        assert_eq!(b["node"]["id"], "api-0.shop");
        assert_eq!(b["node"]["metadata"][META_SERVICE_ACCOUNT], "api");
        assert_eq!(b["node"]["metadata"][META_POD_IP], "127.0.0.12");
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        let sotw = bootstrap(&BootstrapParams {
            delta: false,
            ..params()
        });
        assert_eq!(sotw["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    }

    #[test]
    fn stats_are_flushed_only_when_read() {
        let b = bootstrap(&params());
        assert_eq!(b["stats_flush_on_admin"], true);
        assert!(
            b.get("stats_flush_interval").is_none(),
            "the two exclude each other"
        );
    }

    #[test]
    fn a_dns_name_for_the_control_plane_uses_dns_discovery() {
        let b = bootstrap(&BootstrapParams {
            xds_host: "rudder.rudder-system.svc".into(),
            ..params()
        });
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
        assert_eq!(
            bootstrap(&params())["static_resources"]["clusters"][0]["type"],
            "STATIC"
        );
    }

    #[test]
    fn with_credentials_the_workload_certificate_comes_from_the_agent() {
        let tls = creds();
        let b = bootstrap(&BootstrapParams {
            tls: Some(tls),
            agent_sds: Some("/creds".into()),
            ..params()
        });
        let clusters = b["static_resources"]["clusters"]
            .as_array()
            .expect("clusters");
        let sds = clusters
            .iter()
            .find(|c| c["name"] == translator::tls::AGENT_SDS_CLUSTER)
            .expect("the agent's SDS cluster");
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
                ["path"],
            "/creds/sds.sock"
        );
        assert!(bootstrap(&params())["static_resources"]["clusters"][1].is_null());
        // Plain-text xDS (local experiments) still takes the certificate from the agent.
        let plain = bootstrap(&BootstrapParams {
            agent_sds: Some("/creds".into()),
            ..params()
        });
        assert_eq!(
            plain["static_resources"]["clusters"][1]["name"],
            translator::tls::AGENT_SDS_CLUSTER
        );
    }

    #[test]
    fn a_grpc_bootstrap_names_the_identity_the_files_and_the_server_template() {
        let tls = creds();
        let p = BootstrapParams {
            tls: Some(tls.clone()),
            xds_host: "fd00::1".into(),
            ..params()
        };
        let b = grpc_bootstrap(&p, &tls);
        assert_eq!(b["xds_servers"][0]["server_uri"], "[fd00::1]:4242");
        let creds = &b["xds_servers"][0]["channel_creds"][0];
        assert_eq!(creds["type"], "tls");
        assert_eq!(creds["config"]["certificate_file"], "/creds/xds-client.crt");
        let provider = &b["certificate_providers"][translator::grpc::CERT_PROVIDER];
        assert_eq!(provider["plugin_name"], "file_watcher");
        assert_eq!(
            provider["config"]["ca_certificate_file"],
            "/creds/xds-ca.crt"
        );
        assert_eq!(b["node"]["metadata"][META_SERVICE_ACCOUNT], "api");
        assert_eq!(
            b["server_listener_resource_name_template"],
            "grpc/server?xds.resource.listening_address=%s"
        );
        assert!(b.get("dynamic_resources").is_none(), "no Envoy keys: {b}");
        // Plain text to the control plane, still the files for mesh mTLS.
        let plain = grpc_bootstrap(&BootstrapParams { tls: None, ..p }, &tls);
        assert_eq!(
            plain["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        assert!(plain["certificate_providers"].is_object());
    }

    #[test]
    fn every_grpc_bootstrap_names_a_locality() {
        let tls = creds();
        let direct = grpc_bootstrap(&params(), &tls);
        assert!(direct["node"]["locality"].is_object(), "{direct}");
        let bridged = grpc_bootstrap_via_agent(&params(), &tls, "/creds/xds.sock".as_ref());
        assert!(bridged["node"]["locality"].is_object(), "{bridged}");
    }

    #[test]
    fn through_the_agent_the_xds_server_is_its_socket_in_plain_text() {
        let tls = creds();
        let b = grpc_bootstrap_via_agent(
            &BootstrapParams {
                tls: Some(tls.clone()),
                ..params()
            },
            &tls,
            "/creds/xds.sock".as_ref(),
        );
        let servers = b["xds_servers"].as_array().expect("xds_servers");
        assert_eq!(servers.len(), 1, "{b}");
        assert_eq!(servers[0]["server_uri"], "unix:///creds/xds.sock");
        assert_eq!(
            servers[0]["channel_creds"],
            json!([{"type": "insecure"}]),
            "no client certificate for the app to present: the agent presents its own"
        );
        // The files are still the app's mesh certificates.
        assert_eq!(
            b["certificate_providers"][translator::grpc::CERT_PROVIDER]["config"]["certificate_file"],
            "/creds/xds-client.crt"
        );
        assert_eq!(b["node"]["metadata"][META_SERVICE_ACCOUNT], "api");
    }
}
