use super::*;

struct Node {
    _dir: tempfile::TempDir,
    installer: Installer,
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path();
    for d in ["bin", "net.d", "sa"] {
        std::fs::create_dir(p.join(d)).expect("mkdir");
    }
    std::fs::write(p.join("rudder-cni-build"), b"\x7fELF plugin").expect("binary");
    std::fs::write(p.join("sa/token"), "tok-1\n").expect("token");
    std::fs::write(p.join("sa/ca.crt"), "-----BEGIN CERTIFICATE-----\n").expect("ca");
    let settings = Settings {
        bin_dir: p.join("bin"),
        conf_dir: p.join("net.d"),
        host_conf_dir: "/etc/cni/net.d".into(),
        binary: p.join("rudder-cni-build"),
        exclude_namespaces: vec!["kube-system".into()],
        api_server: "https://10.96.0.1:443".into(),
        token_file: p.join("sa/token"),
        ca_file: p.join("sa/ca.crt"),
    };
    Node {
        _dir: dir,
        installer: Installer { settings },
    }
}

fn read(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json")
}

const CALICO: &str = r#"{"cniVersion": "1.0.0", "name": "k8s-pod-network",
  "plugins": [{"type": "calico", "ipam": {"type": "calico-ipam"}},
              {"type": "portmap", "capabilities": {"portMappings": true}}]}"#;

#[test]
fn the_plugin_is_chained_last_once_and_removed_again() {
    let n = node();
    let s = &n.installer.settings;
    let list = s.conf_dir.join("10-calico.conflist");
    std::fs::write(&list, CALICO).expect("write");
    // A later file is not the active one and is left alone.
    std::fs::write(s.conf_dir.join("99-other.conflist"), CALICO).expect("write");
    let changed = n.installer.ensure().expect("installed");
    assert_eq!(changed.len(), 3, "{changed:?}");
    let doc = read(list.clone());
    let types: Vec<&str> = doc["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["calico", "portmap", PLUGIN_TYPE]);
    let entry = &doc["plugins"][2];
    assert_eq!(entry["kubeconfig"], "/etc/cni/net.d/rudder-cni.kubeconfig");
    assert_eq!(entry["excludeNamespaces"], json!(["kube-system"]));
    assert_eq!(
        read(s.conf_dir.join("99-other.conflist")),
        serde_json::from_str::<Value>(CALICO).expect("json")
    );
    // The plugin binary is executable, the kubeconfig private and readable by kube.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(s.bin_dir.join(PLUGIN_TYPE)), 0o755);
    assert_eq!(mode(s.conf_dir.join(KUBECONFIG_NAME)), 0o600);
    let kc = std::fs::read_to_string(s.conf_dir.join(KUBECONFIG_NAME)).expect("kc");
    let kc = kube::config::Kubeconfig::from_yaml(&kc).expect("a kubeconfig");
    assert_eq!(kc.current_context.as_deref(), Some(PLUGIN_TYPE));

    // Idempotent; a renewed token and a rewritten conflist are caught up with.
    assert_eq!(n.installer.ensure().expect("again"), Vec::<String>::new());
    std::fs::write(&s.token_file, "tok-2\n").expect("token");
    std::fs::write(&list, CALICO).expect("rewritten by the network plugin");
    assert_eq!(n.installer.ensure().expect("again").len(), 2);
    assert_eq!(
        read(list.clone())["plugins"].as_array().map(Vec::len),
        Some(3)
    );
    // A new version of the plugin (same size, other bytes) replaces the old one.
    std::fs::write(&s.binary, b"\x7fELF plugon").expect("new binary");
    let bin = s.bin_dir.join(PLUGIN_TYPE);
    assert_eq!(
        n.installer.ensure().expect("again"),
        [bin.display().to_string()]
    );
    assert_eq!(std::fs::read(&bin).expect("copied"), b"\x7fELF plugon");
    assert_eq!(mode(bin), 0o755);

    n.installer.remove().expect("removed");
    assert_eq!(
        read(list),
        serde_json::from_str::<Value>(CALICO).expect("json")
    );
    assert!(!s.bin_dir.join(PLUGIN_TYPE).exists());
    assert!(!s.conf_dir.join(KUBECONFIG_NAME).exists());
    n.installer.remove().expect("removing twice is fine");
}

#[test]
fn a_single_conf_becomes_a_conflist() {
    let n = node();
    let s = &n.installer.settings;
    let conf = s.conf_dir.join("10-flannel.conf");
    std::fs::write(
        &conf,
        r#"{"cniVersion": "0.4.0", "name": "cbr0", "type": "flannel", "delegate": {"isDefaultGateway": true}}"#,
    )
    .expect("write");
    n.installer.ensure().expect("installed");
    assert!(!conf.exists(), "the .conf would still win");
    let doc = read(s.conf_dir.join("10-flannel.conflist"));
    assert_eq!(doc["cniVersion"], "0.4.0");
    assert_eq!(doc["name"], "cbr0");
    assert_eq!(
        doc["plugins"][0],
        json!({"type": "flannel", "delegate": {"isDefaultGateway": true}})
    );
    assert_eq!(doc["plugins"][1]["type"], PLUGIN_TYPE);
    assert_eq!(n.installer.ensure().expect("again"), Vec::<String>::new());
}

#[test]
fn no_configuration_yet_or_a_broken_one_is_an_error() {
    let n = node();
    let s = &n.installer.settings;
    let e = n.installer.ensure().expect_err("nothing to chain into");
    assert!(e.contains("no network configuration"), "{e}");
    std::fs::write(s.conf_dir.join("05-x.conflist"), "{").expect("write");
    assert!(
        n.installer
            .ensure()
            .expect_err("not JSON")
            .contains("05-x.conflist")
    );
    assert!(chain(&json!({"name": "x"}), &json!({})).is_err());
    assert_eq!(
        active_conf(&[
            "b.conf".into(),
            "a.conflist".into(),
            ".hidden.conf".into(),
            "0-readme.txt".into()
        ]),
        Some("a.conflist")
    );
}
