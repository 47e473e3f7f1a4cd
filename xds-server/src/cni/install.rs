//! The node installer (`rudder-cni install`, run by the chart's DaemonSet): copies the
//! plugin into the host's CNI bin directory, writes the kubeconfig it asks the API server
//! with, and chains it last in the node's active network configuration (the first file
//! of the CNI conf directory by name, as the kubelet picks it; a single `.conf` becomes a
//! `.conflist`). It keeps that true (the network plugin may rewrite its file, the token
//! is renewed) and undoes it on SIGTERM. The edits are pure functions ([`chain`],
//! [`unchain`], [`kubeconfig`]); [`Installer`] does the file work, idempotently.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};

/// The plugin's `type` (and its binary's name in the CNI bin directory).
pub(crate) const PLUGIN_TYPE: &str = "rudder-cni";
/// The kubeconfig's file name in the CNI conf directory (not a network configuration:
/// the runtime reads only `.conf`, `.conflist` and `.json`).
pub(crate) const KUBECONFIG_NAME: &str = "rudder-cni.kubeconfig";
/// The largest network configuration file read.
const MAX_CONF_BYTES: u64 = 1 << 20;

/// What the installer is told (the DaemonSet's flags).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The host's CNI bin and conf directories as mounted here.
    pub(crate) bin_dir: PathBuf,
    pub(crate) conf_dir: PathBuf,
    /// The conf directory as the host sees it (the kubeconfig's path in the plugin entry).
    pub(crate) host_conf_dir: PathBuf,
    /// The plugin binary to copy (this program).
    pub(crate) binary: PathBuf,
    /// Namespaces passed through.
    pub(crate) exclude_namespaces: Vec<String>,
    /// `https://HOST:PORT` of the API server.
    pub(crate) api_server: String,
    /// The ServiceAccount token and the cluster CA, as mounted here.
    pub(crate) token_file: PathBuf,
    pub(crate) ca_file: PathBuf,
}

/// The plugin's entry in a conflist.
pub(crate) fn plugin_entry(s: &Settings) -> Value {
    json!({"type": PLUGIN_TYPE,
           "kubeconfig": s.host_conf_dir.join(KUBECONFIG_NAME),
           "excludeNamespaces": s.exclude_namespaces})
}

/// `doc` (a conflist, or a single plugin's `.conf`) with `entry` last in its plugins and
/// no other entry of this plugin. A `.conf` becomes a conflist of it and the entry.
pub(crate) fn chain(doc: &Value, entry: &Value) -> Result<Value, String> {
    let mut out = if doc["plugins"].is_array() {
        doc.clone()
    } else if doc["type"].is_string() {
        let mut first = doc.clone();
        if let Some(o) = first.as_object_mut() {
            o.remove("cniVersion");
            o.remove("name");
        }
        json!({"cniVersion": doc["cniVersion"], "name": doc["name"], "plugins": [first]})
    } else {
        return Err("neither a conflist (plugins) nor a plugin configuration (type)".into());
    };
    if !out["name"].is_string() {
        return Err("name: missing".into());
    }
    let plugins = out["plugins"].as_array_mut().ok_or("plugins: not a list")?;
    plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    plugins.push(entry.clone());
    Ok(out)
}

/// `doc` without this plugin's entries.
pub(crate) fn unchain(doc: &Value) -> Value {
    let mut out = doc.clone();
    if let Some(plugins) = out["plugins"].as_array_mut() {
        plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    }
    out
}

/// The network configuration the runtime uses: the first `.conf`, `.conflist` or `.json`
/// file of `names` in byte order.
pub(crate) fn active_conf(names: &[String]) -> Option<&str> {
    names
        .iter()
        .filter(|n| !n.starts_with('.'))
        .filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))
        .min()
        .map(String::as_str)
}

/// A kubeconfig for the plugin: the API server, its CA, the DaemonSet's token.
pub(crate) fn kubeconfig(api_server: &str, ca_pem: &[u8], token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": api_server,
                                                   "certificate-authority-data": ca}}],
        "users": [{"name": PLUGIN_TYPE, "user": {"token": token.trim()}}],
        "contexts": [{"name": PLUGIN_TYPE, "context": {"cluster": "local", "user": PLUGIN_TYPE}}],
        "current-context": PLUGIN_TYPE,
    });
    // JSON is YAML.
    format!("{doc:#}\n")
}

/// The file work, on the directories in [`Settings`].
pub(crate) struct Installer {
    pub(crate) settings: Settings,
}

impl Installer {
    fn conf_names(&self) -> Result<Vec<String>, String> {
        let dir = &self.settings.conf_dir;
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn read_conf(path: &Path) -> Result<Value, String> {
        let text = crate::cni::kube::read_bounded(path, MAX_CONF_BYTES)?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Makes the node hold the plugin: binary, kubeconfig, chained entry. Returns what it
    /// changed (empty when all was in place). Waits (returns an error) while the conf
    /// directory has no network configuration yet.
    pub(crate) fn ensure(&self) -> Result<Vec<String>, String> {
        let s = &self.settings;
        let mut changed = Vec::new();
        let bin = s.bin_dir.join(PLUGIN_TYPE);
        if !same_content(&s.binary, &bin).map_err(|e| format!("{}: {e}", s.binary.display()))? {
            copy_file(&s.binary, &bin, 0o755)?;
            changed.push(bin.display().to_string());
        }
        let token = crate::cni::kube::read_bounded(&s.token_file, 64 << 10)?;
        let ca = crate::cni::kube::read_bounded(&s.ca_file, 1 << 20)?;
        let kc = kubeconfig(&s.api_server, ca.as_bytes(), &token);
        let kc_path = s.conf_dir.join(KUBECONFIG_NAME);
        if std::fs::read_to_string(&kc_path).ok().as_deref() != Some(kc.as_str()) {
            write_file(&kc_path, kc.as_bytes(), 0o600)?;
            changed.push(kc_path.display().to_string());
        }
        let names = self.conf_names()?;
        let name = active_conf(&names)
            .ok_or_else(|| format!("no network configuration in {} yet", s.conf_dir.display()))?;
        let path = s.conf_dir.join(name);
        let doc = Self::read_conf(&path)?;
        let chained =
            chain(&doc, &plugin_entry(s)).map_err(|e| format!("{}: {e}", path.display()))?;
        if name.ends_with(".conflist") {
            if chained != doc {
                write_file(&path, format!("{chained:#}\n").as_bytes(), 0o644)?;
                changed.push(path.display().to_string());
            }
        } else {
            // A .conf (or .json) sorts before the .conflist of the same stem: the new
            // file replaces it.
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            let list = s.conf_dir.join(format!("{stem}.conflist"));
            write_file(&list, format!("{chained:#}\n").as_bytes(), 0o644)?;
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            changed.push(format!("{} -> {}", path.display(), list.display()));
        }
        Ok(changed)
    }

    /// Undoes [`Installer::ensure`]: the entry leaves the conflist first (no new pod
    /// calls the plugin), then the kubeconfig and the binary go.
    pub(crate) fn remove(&self) -> Result<(), String> {
        let s = &self.settings;
        for name in self.conf_names()? {
            if !name.ends_with(".conflist") {
                continue;
            }
            let path = s.conf_dir.join(&name);
            let Ok(doc) = Self::read_conf(&path) else {
                continue;
            };
            let out = unchain(&doc);
            if out != doc {
                write_file(&path, format!("{out:#}\n").as_bytes(), 0o644)?;
            }
        }
        for path in [
            s.conf_dir.join(KUBECONFIG_NAME),
            s.bin_dir.join(PLUGIN_TYPE),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(())
    }
}

/// Whether `b` exists and holds what `a` holds (read in pieces: the binary is large and
/// the installer's memory small).
fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let fa = std::fs::File::open(a)?;
    let Ok(fb) = std::fs::File::open(b) else {
        return Ok(false);
    };
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (
        std::io::BufReader::with_capacity(64 << 10, fa),
        std::io::BufReader::with_capacity(64 << 10, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = ra.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        rb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Copies `from` to `to` atomically with `mode` (see [`write_file`]).
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let err = |e: std::io::Error| format!("copying {} to {}: {e}", from.display(), to.display());
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(from, &tmp).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, to).map_err(err)
}

/// Writes `path` atomically with `mode` (a temporary file beside it, renamed over it), so
/// the runtime never reads or executes half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let err = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
