//! Whether a pod is meshed, and the interception it asked for: read from the pod the API
//! server returned (the injector's status annotation and sidecar container, and the
//! interception annotation it writes in CNI mode). Pure.

use serde::Deserialize;
use serde_json::Value;

use crate::cni::spec::{CniError, Code};
use crate::k8s::inject::iptables::{Interception, parse_cidr};
use crate::k8s::inject::{INIT, INTERCEPTION_ANNOTATION, PROXY, STATUS_ANNOTATION};

/// The longest interception annotation read, and the most entries of each list in it.
const MAX_ANNOTATION_BYTES: usize = 16 << 10;
const MAX_ENTRIES: usize = 256;

/// What ADD does for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Leave the pod's network alone (why, for the log).
    PassThrough(&'static str),
    /// Install these rules in its namespace.
    Intercept(Interception),
}

/// The interception annotation as the injector writes it (every field named, so a
/// misspelt one is an error, not a silent default).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Annotation {
    outbound_port: u16,
    inbound_port: u16,
    proxy_uid: u32,
    agent_status_port: u16,
    #[serde(default)]
    exclude_outbound_ports: Vec<u16>,
    #[serde(default)]
    exclude_inbound_ports: Vec<u16>,
    #[serde(default)]
    exclude_cidrs: Vec<String>,
}

/// Decides for `pod` (the API object). A meshed pod's settings that cannot be read are an
/// error: it must not start with rules other than those it asked for.
pub(crate) fn decide(pod: &Value) -> Result<Decision, CniError> {
    let has = |list: &str, name: &str| {
        pod["spec"][list]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
    };
    let annotations = &pod["metadata"]["annotations"];
    let meshed = annotations[STATUS_ANNOTATION].is_string()
        || has("containers", PROXY)
        || has("initContainers", PROXY);
    if !meshed {
        return Ok(Decision::PassThrough("not injected"));
    }
    if has("initContainers", INIT) {
        return Ok(Decision::PassThrough(
            "injected in init-container mode: its init container installs the rules",
        ));
    }
    match annotations[INTERCEPTION_ANNOTATION].as_str() {
        None => Ok(Decision::Intercept(Interception::default())),
        Some(text) => parse_annotation(text)
            .map(Decision::Intercept)
            .map_err(|e| {
                CniError::new(
                    Code::PodSettings,
                    format!("pod annotation {INTERCEPTION_ANNOTATION} is invalid"),
                    e,
                )
            }),
    }
}

/// Parses and checks the interception annotation; the error names the field.
pub(crate) fn parse_annotation(text: &str) -> Result<Interception, String> {
    if text.len() > MAX_ANNOTATION_BYTES {
        return Err(format!(
            "{} bytes, more than {MAX_ANNOTATION_BYTES}",
            text.len()
        ));
    }
    let a: Annotation = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for (field, port) in [
        ("outboundPort", a.outbound_port),
        ("inboundPort", a.inbound_port),
        ("agentStatusPort", a.agent_status_port),
    ] {
        if port == 0 {
            return Err(format!("{field}: 0 is not a port"));
        }
    }
    if a.outbound_port == a.inbound_port {
        return Err("inboundPort: the same as outboundPort".into());
    }
    if a.proxy_uid == 0 {
        return Err("proxyUid: 0 would let every root process's traffic bypass the proxy".into());
    }
    for (field, len) in [
        ("excludeOutboundPorts", a.exclude_outbound_ports.len()),
        ("excludeInboundPorts", a.exclude_inbound_ports.len()),
        ("excludeCidrs", a.exclude_cidrs.len()),
    ] {
        if len > MAX_ENTRIES {
            return Err(format!("{field}: {len} entries, more than {MAX_ENTRIES}"));
        }
    }
    for (field, ports) in [
        ("excludeOutboundPorts", &a.exclude_outbound_ports),
        ("excludeInboundPorts", &a.exclude_inbound_ports),
    ] {
        if let Some(i) = ports.iter().position(|p| *p == 0) {
            return Err(format!("{field}[{i}]: 0 is not a port"));
        }
    }
    let exclude_cidrs = a
        .exclude_cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| parse_cidr(c).map_err(|e| format!("excludeCidrs[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Interception {
        outbound_port: a.outbound_port,
        inbound_port: a.inbound_port,
        proxy_uid: a.proxy_uid,
        agent_status_port: a.agent_status_port,
        exclude_outbound_ports: a.exclude_outbound_ports,
        exclude_inbound_ports: a.exclude_inbound_ports,
        exclude_cidrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::inject::interception_annotation;
    use serde_json::json;

    fn pod(annotations: Value, inits: &[&str], containers: &[&str]) -> Value {
        let names = |l: &[&str]| l.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
        json!({"metadata": {"name": "p", "annotations": annotations},
               "spec": {"initContainers": names(inits), "containers": names(containers)}})
    }

    #[test]
    fn only_injected_pods_without_an_init_container_are_intercepted() {
        let plain = pod(json!({}), &[], &["app"]);
        assert!(matches!(decide(&plain), Ok(Decision::PassThrough(_))));
        let init_mode = pod(
            json!({STATUS_ANNOTATION: "injected"}),
            &[INIT, PROXY],
            &["app"],
        );
        assert!(matches!(decide(&init_mode), Ok(Decision::PassThrough(_))));
        let bare = pod(json!({}), &[PROXY], &["app"]);
        assert_eq!(
            decide(&bare),
            Ok(Decision::Intercept(Interception::default()))
        );
    }

    #[test]
    fn the_injectors_annotation_round_trips() {
        let i = Interception {
            outbound_port: 16001,
            exclude_outbound_ports: vec![15010, 15012],
            exclude_inbound_ports: vec![9090],
            exclude_cidrs: vec![
                parse_cidr("169.254.169.254/32").expect("cidr"),
                parse_cidr("fd00::/8").expect("cidr"),
            ],
            ..Default::default()
        };
        let p = pod(
            json!({STATUS_ANNOTATION: "injected",
                   INTERCEPTION_ANNOTATION: interception_annotation(&i)}),
            &[PROXY],
            &["app"],
        );
        assert_eq!(decide(&p), Ok(Decision::Intercept(i)));
    }

    #[test]
    fn a_bad_annotation_fails_naming_the_field() {
        let base = json!({"outboundPort": 15001, "inboundPort": 15006, "proxyUid": 1337,
                          "agentStatusPort": 15021});
        let with = |k: &str, v: Value| {
            let mut a = base.clone();
            a[k] = v;
            a.to_string()
        };
        for (text, field) in [
            (
                with("excludeCidrs", json!(["10.0.0.0/8", "10.0.0.0/40"])),
                "excludeCidrs[1]",
            ),
            (
                with("excludeOutboundPorts", json!([80, 0])),
                "excludeOutboundPorts[1]",
            ),
            (with("proxyUid", json!(0)), "proxyUid"),
            (with("inboundPort", json!(15001)), "inboundPort"),
            (with("outbondPort", json!(1)), "outbondPort"),
            (
                with("excludeInboundPorts", json!(vec![1; 300])),
                "excludeInboundPorts",
            ),
            ("x".repeat(MAX_ANNOTATION_BYTES + 1), "bytes"),
        ] {
            let p = pod(
                json!({STATUS_ANNOTATION: "injected", INTERCEPTION_ANNOTATION: text}),
                &[PROXY],
                &[],
            );
            let e = decide(&p).expect_err(field);
            assert_eq!(e.code, Code::PodSettings);
            assert!(e.details.contains(field), "{field}: {e}");
        }
    }
}
