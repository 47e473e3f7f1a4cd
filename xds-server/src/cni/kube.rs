//! Asking the API server for the pod a call is for, with the kubeconfig the installer
//! wrote: one GET, bounded in time and in the size of what is read.

use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;

use crate::cni::spec::PodRef;

/// The largest kubeconfig and pod object read.
const MAX_KUBECONFIG_BYTES: u64 = 64 << 10;
const MAX_POD_BYTES: usize = 2 << 20;

/// Reads `path` if it is no larger than `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > max {
        return Err(format!("{}: larger than {max} bytes", path.display()));
    }
    Ok(text)
}

/// GETs the pod (its JSON object) within `timeout`.
pub(crate) async fn get_pod(
    kubeconfig: &Path,
    pod: &PodRef,
    timeout: Duration,
) -> Result<Value, String> {
    tokio::time::timeout(timeout, get(kubeconfig, pod, timeout))
        .await
        .map_err(|_| format!("the API server did not answer within {timeout:?}"))?
}

async fn get(kubeconfig: &Path, pod: &PodRef, timeout: Duration) -> Result<Value, String> {
    let text = read_bounded(kubeconfig, MAX_KUBECONFIG_BYTES)?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    let client = kube::Client::try_from(config).map_err(|e| format!("API client: {e}"))?;
    let uri = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
    let req = http::Request::get(&uri)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = client
        .send(req)
        .await
        .map_err(|e| format!("GET {uri}: {e}"))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_POD_BYTES)
        .collect()
        .await
        .map_err(|e| format!("GET {uri}: reading the answer (at most {MAX_POD_BYTES} bytes): {e}"))?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(format!("GET {uri}: {status} {message}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {uri}: not a pod: {e}"))
}
