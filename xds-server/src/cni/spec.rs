//! The CNI protocol (spec 1.0) as this chained plugin speaks it: the command and its
//! environment, the network configuration on stdin (with `prevResult`), the error
//! format, and what ADD and VERSION print. Pure: strings in, values out.

use serde_json::{Value, json};

/// The spec versions this plugin accepts (a chained plugin that passes the previous
/// result through reads and writes every one of these alike).
pub(crate) const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The most stdin (the network configuration) that is read.
pub(crate) const MAX_CONFIG_BYTES: usize = 256 << 10;

/// Error codes the spec defines (and the plugin's own, 100 and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// Incompatible CNI version.
    IncompatibleVersion = 1,
    /// Invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// I/O failure.
    Io = 5,
    /// Failed to decode content.
    Decode = 6,
    /// Invalid network config.
    InvalidConfig = 7,
    /// Try again later (the API server could not be asked).
    TryAgainLater = 11,
    /// The pod's interception rules could not be installed.
    Intercept = 100,
    /// The pod says it is meshed but its interception settings are wrong.
    PodSettings = 101,
}

/// A failure, printed on stdout in the spec's error format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub(crate) struct CniError {
    pub(crate) code: Code,
    pub(crate) msg: String,
    pub(crate) details: String,
}

impl CniError {
    pub(crate) fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub(crate) fn to_json(&self, cni_version: &str) -> Value {
        json!({"cniVersion": cni_version, "code": self.code as u32,
               "msg": self.msg, "details": self.details})
    }
}

/// CNI_COMMAND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub(crate) fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    "unknown CNI_COMMAND",
                    format!("CNI_COMMAND={other:?}; expected ADD, DEL, CHECK or VERSION"),
                ));
            }
        })
    }
}

/// The pod a call is for, from CNI_ARGS (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// The Kubernetes pod CNI_ARGS names, if it names one (another runtime's call names
/// none). A name that is no Kubernetes name is an error: it goes into an API path.
pub(crate) fn pod_ref(cni_args: &str) -> Result<Option<PodRef>, CniError> {
    let mut namespace = None;
    let mut name = None;
    for kv in cni_args.split(';').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("K8S_POD_NAMESPACE", v)) => namespace = Some(v),
            Some(("K8S_POD_NAME", v)) => name = Some(v),
            _ => {}
        }
    }
    let (Some(namespace), Some(name)) = (namespace, name) else {
        return Ok(None);
    };
    for (field, v, max) in [
        ("K8S_POD_NAMESPACE", namespace, 63),
        ("K8S_POD_NAME", name, 253),
    ] {
        let ok = !v.is_empty()
            && v.len() <= max
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !v.starts_with(['-', '.']);
        if !ok {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                "invalid CNI_ARGS",
                format!("{field}={v:?} is not a Kubernetes name"),
            ));
        }
    }
    Ok(Some(PodRef {
        namespace: namespace.into(),
        name: name.into(),
    }))
}

/// The plugin's network configuration (its entry in the conflist, as the runtime passes
/// it, with `prevResult`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NetConf {
    pub(crate) cni_version: String,
    /// The kubeconfig the plugin asks the API server with (the installer writes it).
    pub(crate) kubeconfig: Option<String>,
    /// Namespaces whose pods are passed through without asking (`kube-system`).
    pub(crate) exclude_namespaces: Vec<String>,
    /// Seconds one API request and one rule installation may take.
    pub(crate) timeout_seconds: u64,
    /// The `iptables-restore` and `ip6tables-restore` to run (found on PATH by default).
    pub(crate) iptables_restore: String,
    pub(crate) ip6tables_restore: String,
    /// The mesh's proxy UID (default 1337). A pod's interception annotation must name
    /// this one: the annotation can be edited after admission, and another UID would let
    /// that UID's traffic bypass the proxy while the pod looks meshed.
    pub(crate) proxy_uid: u32,
    pub(crate) prev_result: Option<Value>,
}

fn invalid(details: String) -> CniError {
    CniError::new(
        Code::InvalidConfig,
        "invalid network configuration",
        details,
    )
}

/// Parses stdin. The version is checked first, so an unsupported one is named as such.
pub(crate) fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    if stdin.len() > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "{} bytes on stdin, more than {MAX_CONFIG_BYTES}",
            stdin.len()
        )));
    }
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            Code::Decode,
            "network configuration is not JSON",
            e.to_string(),
        )
    })?;
    let version = v["cniVersion"]
        .as_str()
        .ok_or_else(|| invalid("cniVersion: missing or not a string".into()))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            "incompatible CNI version",
            format!(
                "cniVersion {version:?}; this plugin supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let string = |field: &str| -> Result<Option<String>, CniError> {
        match &v[field] {
            Value::Null => Ok(None),
            Value::String(s) if !s.is_empty() && s.len() <= 4096 => Ok(Some(s.clone())),
            _ => Err(invalid(format!("{field}: expected a non-empty path"))),
        }
    };
    let exclude_namespaces = match &v["excludeNamespaces"] {
        Value::Null => vec!["kube-system".to_string()],
        Value::Array(a) if a.len() <= 1024 => a
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("excludeNamespaces[{i}]: not a string")))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                "excludeNamespaces: expected at most 1024 names".into(),
            ));
        }
    };
    let timeout_seconds = match &v["timeoutSeconds"] {
        Value::Null => 10,
        t => t
            .as_u64()
            .filter(|t| (1..=60).contains(t))
            .ok_or_else(|| invalid("timeoutSeconds: expected 1 to 60".into()))?,
    };
    let proxy_uid = match &v["proxyUid"] {
        Value::Null => 1337,
        u => u
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())
            .filter(|u| *u != 0)
            .ok_or_else(|| invalid("proxyUid: expected a UID other than 0".into()))?,
    };
    let prev_result = match &v["prevResult"] {
        Value::Null => None,
        r @ Value::Object(_) => Some(r.clone()),
        _ => return Err(invalid("prevResult: not an object".into())),
    };
    Ok(NetConf {
        cni_version: version.to_string(),
        kubeconfig: string("kubeconfig")?,
        exclude_namespaces,
        timeout_seconds,
        iptables_restore: string("iptablesRestore")?.unwrap_or_else(|| "iptables-restore".into()),
        ip6tables_restore: string("ip6tablesRestore")?
            .unwrap_or_else(|| "ip6tables-restore".into()),
        proxy_uid,
        prev_result,
    })
}

/// The best version to answer in when the configuration could not be read.
pub(crate) fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".into())
}

/// What VERSION prints.
pub(crate) fn version_result(cni_version: &str) -> Value {
    json!({"cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS})
}

/// What a chained ADD prints: the previous plugin's result, passed on unchanged (in the
/// configuration's version, which the runtime parses it by).
pub(crate) fn add_result(conf: &NetConf) -> Result<Value, CniError> {
    let mut r = conf.prev_result.clone().ok_or_else(|| {
        invalid(
            "prevResult: missing; rudder-cni is a chained plugin and must follow the \
                 network plugin in a conflist"
                .into(),
        )
    })?;
    r["cniVersion"] = json!(conf.cni_version);
    Ok(r)
}

/// Whether the previous result gives the pod an IPv6 address.
pub(crate) fn has_ipv6(conf: &NetConf) -> bool {
    conf.prev_result
        .as_ref()
        .and_then(|r| r["ips"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .any(|a| a.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: Value) -> Vec<u8> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "k8s", "type": "rudder-cni"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v.to_string().into_bytes()
    }

    #[test]
    fn configuration_defaults_and_prev_result() {
        let prev = json!({"interfaces": [{"name": "eth0"}],
                          "ips": [{"address": "10.1.0.5/24"}, {"address": "fd00::5/64"}]});
        let c = parse_conf(&conf(json!({"prevResult": prev, "kubeconfig": "/k"}))).expect("parses");
        assert_eq!(c.exclude_namespaces, ["kube-system"]);
        assert_eq!(c.kubeconfig.as_deref(), Some("/k"));
        assert_eq!(c.iptables_restore, "iptables-restore");
        assert!(has_ipv6(&c));
        let out = add_result(&c).expect("chained");
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(out["ips"], prev["ips"]);
        assert_eq!(out["interfaces"], prev["interfaces"]);
    }

    #[test]
    fn bad_configurations_are_named() {
        let e = parse_conf(br#"{"cniVersion": "2.0.0"}"#).expect_err("version");
        assert_eq!(e.code, Code::IncompatibleVersion);
        let e = parse_conf(b"not json").expect_err("json");
        assert_eq!(e.code, Code::Decode);
        let e = parse_conf(&conf(json!({"timeoutSeconds": 0}))).expect_err("timeout");
        assert!(e.details.contains("timeoutSeconds"), "{e}");
        let e = parse_conf(&conf(json!({"excludeNamespaces": [1]}))).expect_err("ns");
        assert!(e.details.contains("excludeNamespaces[0]"), "{e}");
        let e = parse_conf(&vec![b' '; MAX_CONFIG_BYTES + 1]).expect_err("size");
        assert_eq!(e.code, Code::InvalidConfig);
        let c = parse_conf(&conf(json!({}))).expect("no prevResult");
        assert!(
            add_result(&c)
                .expect_err("not chained")
                .details
                .contains("prevResult")
        );
        let j = e.to_json("1.0.0");
        assert_eq!(j["code"], 7);
        assert!(j["msg"].is_string() && j["details"].is_string());
    }

    #[test]
    fn cni_args_name_a_pod_or_none() {
        let p = pod_ref("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=x")
            .expect("valid")
            .expect("a pod");
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("shop", "web-0"));
        assert_eq!(pod_ref("IgnoreUnknown=1").expect("valid"), None);
        for bad in [
            "K8S_POD_NAMESPACE=../x;K8S_POD_NAME=a",
            "K8S_POD_NAMESPACE=a;K8S_POD_NAME=",
            "K8S_POD_NAMESPACE=a;K8S_POD_NAME=a/b",
        ] {
            assert_eq!(
                pod_ref(bad).expect_err(bad).code,
                Code::InvalidEnvironment,
                "{bad}"
            );
        }
        assert_eq!(Command::parse("VERSION").expect("known"), Command::Version);
        assert!(Command::parse("GC").is_err());
    }
}
