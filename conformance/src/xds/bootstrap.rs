//! The Envoy bootstrap that `xds-server bootstrap` (and the agent) writes, read into what
//! the proxy needs: the node it announces, the admin address, SotW or delta ADS, where
//! the control plane is and how to reach it (mTLS from file-based SDS, or plain text),
//! and the agent's SDS socket. Every error names the JSON path that is wrong.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use serde_json::Value;

/// The static cluster that points at the control plane.
pub const XDS_CLUSTER: &str = "rudder-xds";
/// The static cluster of the agent's SDS server.
pub const AGENT_SDS_CLUSTER: &str = "rudder-agent-sds";

/// The largest bootstrap or SDS file read.
const MAX_FILE: u64 = 1 << 20;

/// Why a bootstrap cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A file cannot be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A value is missing or wrong.
    #[error("{file}: {field}: {message}")]
    Field {
        /// The file it is in.
        file: PathBuf,
        /// The JSON path (`static_resources.clusters[0].type`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What the proxy takes from its bootstrap.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The node announced on the ADS stream.
    pub node: Node,
    /// Where the admin server binds.
    pub admin: SocketAddr,
    /// Delta ADS (`DELTA_GRPC`) instead of state of the world (`GRPC`).
    pub delta: bool,
    /// The control plane.
    pub xds: XdsServer,
    /// The agent's SDS Unix socket, if the bootstrap has the agent's cluster.
    pub agent_sds: Option<PathBuf>,
}

/// The control plane's address and transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsServer {
    /// Host (an IP for `STATIC`, a name for `STRICT_DNS`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// mTLS, or plain text.
    pub tls: Option<XdsTls>,
}

/// mTLS to the control plane: files re-read at each connect (the agent renews them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsTls {
    /// The client certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The trust bundle (PEM).
    pub ca_file: PathBuf,
    /// The server's exact URI SAN.
    pub server_id: String,
}

/// Reads the bootstrap at `path` (and the SDS files its xDS cluster names).
pub fn load(path: &Path) -> Result<Bootstrap, BootstrapError> {
    let json = read_json(path)?;
    parse(&json, path)
}

fn read_json(path: &Path) -> Result<Value, BootstrapError> {
    let read = |message: String| BootstrapError::Read {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
    if meta.len() > MAX_FILE {
        return Err(read(format!("larger than {MAX_FILE} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| read(format!("not JSON: {e}")))
}

/// A JSON walker that remembers its path for errors.
struct At<'a> {
    file: &'a Path,
    path: String,
    value: &'a Value,
}

impl<'a> At<'a> {
    fn err(&self, message: impl Into<String>) -> BootstrapError {
        BootstrapError::Field {
            file: self.file.to_path_buf(),
            field: self.path.clone(),
            message: message.into(),
        }
    }
    fn get(&self, key: &str) -> At<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        At {
            file: self.file,
            path,
            value: &self.value[key],
        }
    }
    fn items(&self) -> Result<Vec<At<'a>>, BootstrapError> {
        let list = self
            .value
            .as_array()
            .ok_or_else(|| self.err("not a list"))?;
        Ok(list
            .iter()
            .enumerate()
            .map(|(i, value)| At {
                file: self.file,
                path: format!("{}[{i}]", self.path),
                value,
            })
            .collect())
    }
    fn str(&self) -> Result<&'a str, BootstrapError> {
        self.value
            .as_str()
            .ok_or_else(|| self.err("missing or not a string"))
    }
    fn opt_str(&self) -> Result<Option<&'a str>, BootstrapError> {
        match self.value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            _ => Err(self.err("not a string")),
        }
    }
    fn port(&self) -> Result<u16, BootstrapError> {
        self.value
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| self.err("missing or not a port number"))
    }
}

/// Parses a bootstrap already read from `file`.
pub fn parse(json: &Value, file: &Path) -> Result<Bootstrap, BootstrapError> {
    let root = At {
        file,
        path: String::new(),
        value: json,
    };
    let node = node(&root.get("node"))?;
    let admin = socket_address(&root.get("admin").get("address").get("socket_address"))?;
    let ads = root.get("dynamic_resources").get("ads_config");
    let delta = match ads.get("api_type").str()? {
        "GRPC" => false,
        "DELTA_GRPC" => true,
        other => {
            return Err(ads
                .get("api_type")
                .err(format!("{other} is not GRPC or DELTA_GRPC")));
        }
    };
    let services = ads.get("grpc_services").items()?;
    let first = services
        .first()
        .ok_or_else(|| ads.get("grpc_services").err("empty"))?;
    let cluster_name = first.get("envoy_grpc").get("cluster_name").str()?;
    if cluster_name != XDS_CLUSTER {
        return Err(first
            .get("envoy_grpc")
            .get("cluster_name")
            .err(format!("expected {XDS_CLUSTER}")));
    }
    let clusters = root.get("static_resources").get("clusters").items()?;
    let mut xds = None;
    let mut agent_sds = None;
    for c in &clusters {
        match c.get("name").str()? {
            XDS_CLUSTER => xds = Some(xds_server(c)?),
            AGENT_SDS_CLUSTER => agent_sds = Some(pipe_path(c)?),
            _ => {}
        }
    }
    let xds = xds.ok_or_else(|| {
        root.get("static_resources")
            .get("clusters")
            .err(format!("no cluster {XDS_CLUSTER}"))
    })?;
    Ok(Bootstrap {
        node,
        admin,
        delta,
        xds,
        agent_sds,
    })
}

fn node(at: &At<'_>) -> Result<Node, BootstrapError> {
    let metadata = match at.get("metadata").value {
        Value::Null => None,
        Value::Object(m) => Some(to_struct(m)),
        _ => return Err(at.get("metadata").err("not an object")),
    };
    let loc = at.get("locality");
    let locality = match loc.value {
        Value::Null => None,
        Value::Object(_) => Some(Locality {
            region: loc.get("region").opt_str()?.unwrap_or_default().into(),
            zone: loc.get("zone").opt_str()?.unwrap_or_default().into(),
            sub_zone: loc.get("sub_zone").opt_str()?.unwrap_or_default().into(),
        }),
        _ => return Err(loc.err("not an object")),
    };
    Ok(Node {
        id: at.get("id").str()?.to_string(),
        cluster: at.get("cluster").opt_str()?.unwrap_or_default().to_string(),
        metadata,
        locality,
        user_agent_name: "rudder-proxy".into(),
        ..Node::default()
    })
}

fn to_struct(m: &serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(to_struct(m)),
    };
    PbValue { kind: Some(kind) }
}

fn socket_address(at: &At<'_>) -> Result<SocketAddr, BootstrapError> {
    let ip: IpAddr = at
        .get("address")
        .str()?
        .parse()
        .map_err(|_| at.get("address").err("not an IP address"))?;
    Ok(SocketAddr::new(ip, at.get("port_value").port()?))
}

/// The one endpoint of a static cluster's load assignment.
fn only_endpoint<'a>(cluster: &At<'a>) -> Result<At<'a>, BootstrapError> {
    let groups = cluster.get("load_assignment").get("endpoints").items()?;
    let lbs = groups
        .first()
        .ok_or_else(|| cluster.get("load_assignment").get("endpoints").err("empty"))?
        .get("lb_endpoints")
        .items()?;
    let lb = lbs
        .into_iter()
        .next()
        .ok_or_else(|| cluster.get("load_assignment").err("no lb_endpoints"))?;
    Ok(lb.get("endpoint").get("address"))
}

fn xds_server(c: &At<'_>) -> Result<XdsServer, BootstrapError> {
    let kind = c.get("type").opt_str()?.unwrap_or("STATIC");
    let sa = only_endpoint(c)?.get("socket_address");
    let host = sa.get("address").str()?.to_string();
    match kind {
        "STATIC" => {
            host.parse::<IpAddr>().map_err(|_| {
                sa.get("address")
                    .err("a STATIC cluster needs an IP address")
            })?;
        }
        "STRICT_DNS" | "LOGICAL_DNS" => {}
        other => {
            return Err(c
                .get("type")
                .err(format!("{other} is not STATIC or STRICT_DNS")));
        }
    }
    let port = sa.get("port_value").port()?;
    let ts = c.get("transport_socket");
    let tls = if ts.value.is_null() {
        None
    } else {
        Some(xds_tls(&ts.get("typed_config"))?)
    };
    Ok(XdsServer { host, port, tls })
}

fn xds_tls(tc: &At<'_>) -> Result<XdsTls, BootstrapError> {
    let ty = tc.get("@type").str()?;
    if !ty.ends_with("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext") {
        return Err(tc.get("@type").err("not an UpstreamTlsContext"));
    }
    let common = tc.get("common_tls_context");
    let certs = common.get("tls_certificate_sds_secret_configs").items()?;
    let cert = certs.first().ok_or_else(|| {
        common
            .get("tls_certificate_sds_secret_configs")
            .err("empty")
    })?;
    let cert_doc = sds_file(&cert.get("sds_config"))?;
    let cert_secret = sds_secret(&cert_doc, cert.get("name").str()?)?;
    let tls_cert = cert_secret.get("tls_certificate");
    let cert_file = filename(&tls_cert.get("certificate_chain"))?;
    let key_file = filename(&tls_cert.get("private_key"))?;
    let cvc = common.get("combined_validation_context");
    let sans = cvc
        .get("default_validation_context")
        .get("match_typed_subject_alt_names")
        .items()?;
    let san = sans.first().ok_or_else(|| {
        cvc.get("default_validation_context")
            .get("match_typed_subject_alt_names")
            .err("no SAN to check the server by")
    })?;
    if san.get("san_type").str()? != "URI" {
        return Err(san.get("san_type").err("only URI SANs are checked"));
    }
    let server_id = san.get("matcher").get("exact").str()?.to_string();
    let ca = cvc.get("validation_context_sds_secret_config");
    let ca_doc = sds_file(&ca.get("sds_config"))?;
    let ca_secret = sds_secret(&ca_doc, ca.get("name").str()?)?;
    let ca_file = filename(&ca_secret.get("validation_context").get("trusted_ca"))?;
    Ok(XdsTls {
        cert_file,
        key_file,
        ca_file,
        server_id,
    })
}

/// An SDS file named by `path_config_source`: (its path, its JSON).
fn sds_file(cfg: &At<'_>) -> Result<(PathBuf, Value), BootstrapError> {
    let p = cfg.get("path_config_source").get("path");
    let path = PathBuf::from(p.str()?);
    let json = read_json(&path)?;
    Ok((path, json))
}

/// The resource `name` of an SDS file.
fn sds_secret<'a>(doc: &'a (PathBuf, Value), name: &str) -> Result<At<'a>, BootstrapError> {
    let root = At {
        file: &doc.0,
        path: String::new(),
        value: &doc.1,
    };
    let resources = root.get("resources").items()?;
    resources
        .into_iter()
        .find(|r| r.get("name").value.as_str() == Some(name))
        .ok_or_else(|| root.get("resources").err(format!("no secret {name}")))
}

fn filename(at: &At<'_>) -> Result<PathBuf, BootstrapError> {
    Ok(PathBuf::from(at.get("filename").str()?))
}

fn pipe_path(c: &At<'_>) -> Result<PathBuf, BootstrapError> {
    Ok(PathBuf::from(
        only_endpoint(c)?.get("pipe").get("path").str()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the committed fixture (made by `xds-server bootstrap --delta`, its
    /// credential directory replaced by `{DIR}`) into `dir`.
    fn fixture(dir: &Path) -> PathBuf {
        let d = dir.display().to_string();
        let put = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text.replace("{DIR}", &d)).unwrap();
            path
        };
        put(
            "xds-ca-sds.json",
            include_str!("../../tests/fixtures/xds-ca-sds.json"),
        );
        put(
            "xds-client-sds.json",
            include_str!("../../tests/fixtures/xds-client-sds.json"),
        );
        put(
            "bootstrap.json",
            include_str!("../../tests/fixtures/bootstrap-delta.json"),
        )
    }

    #[test]
    fn reads_what_xds_server_bootstrap_writes() {
        let dir = tempfile::tempdir().unwrap();
        let b = load(&fixture(dir.path())).unwrap();
        assert_eq!(b.node.id, "p0.ns");
        assert_eq!(b.node.cluster, "default.ns");
        let meta = b.node.metadata.as_ref().unwrap();
        assert_eq!(
            meta.fields["rudder.dev/namespace"].kind,
            Some(Kind::StringValue("ns".into()))
        );
        assert_eq!(b.admin, "127.0.0.1:0".parse().unwrap());
        assert!(b.delta);
        assert_eq!(b.xds.host, "127.0.0.1");
        assert_eq!(b.xds.port, 15010);
        let tls = b.xds.tls.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("xds-client.crt"));
        assert_eq!(tls.key_file, dir.path().join("xds-client.key"));
        assert_eq!(tls.ca_file, dir.path().join("xds-ca.crt"));
        assert_eq!(
            tls.server_id,
            "spiffe://cluster.local/ns/rudder-system/sa/rudder"
        );
        assert_eq!(b.agent_sds, Some(dir.path().join("sds.sock")));
    }

    #[test]
    fn plain_text_sotw_and_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(dir.path());
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["dynamic_resources"]["ads_config"]["api_type"] = "GRPC".into();
        json["static_resources"]["clusters"][0]
            .as_object_mut()
            .unwrap()
            .remove("transport_socket");
        let b = parse(&json, &path).unwrap();
        assert!(!b.delta);
        assert_eq!(b.xds.tls, None);

        json["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"]["socket_address"]["port_value"] = 70000.into();
        let e = parse(&json, &path).unwrap_err().to_string();
        assert!(
            e.contains("static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"),
            "{e}"
        );
        json["dynamic_resources"]["ads_config"]["api_type"] = "REST".into();
        let e = parse(&json, &path).unwrap_err().to_string();
        assert!(e.contains("dynamic_resources.ads_config.api_type"), "{e}");
    }
}
