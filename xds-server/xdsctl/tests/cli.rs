//! The built `xdsctl` runs without a control plane for what needs none (its help), and
//! tests of other crates find it next to their binaries.

use std::process::Command;

#[test]
fn help_names_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_xdsctl"))
        .arg("--help")
        .output()
        .expect("xdsctl runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status") && text.contains("dump"), "{text}");
}

#[test]
fn an_unreachable_control_plane_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xdsctl"))
        .args(["--server", "127.0.0.1:1", "--insecure", "status"])
        .output()
        .expect("xdsctl runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
