//! The committed descriptor set (`descriptors/xds.binpb`) is exactly what
//! `examples/gen_descriptors.rs` makes from the envoy-types version in use.

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(clippy::disallowed_methods, reason = "the cargo that runs the test")]
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string())
}

/// envoy-types' `src/generated/types.bin`, found through `cargo metadata` for this
/// platform (the cache holds every package the build of this test needed).
fn envoy_types_descriptors() -> PathBuf {
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let out = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types is a dependency");
    Path::new(manifest)
        .parent()
        .expect("package dir")
        .join("src/generated/types.bin")
}

#[test]
fn descriptors_match_envoy_types() {
    let full = std::fs::read(envoy_types_descriptors()).expect("envoy-types ships types.bin");
    let fresh = translator::json::trim_descriptors(&full).expect("trims");
    let committed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(translator::json::DESCRIPTOR_FILE),
    )
    .expect("committed descriptors");
    assert!(
        fresh == committed,
        "{} is stale: run `cargo run -p translator --example gen_descriptors -- {}`",
        translator::json::DESCRIPTOR_FILE,
        envoy_types_descriptors().display()
    );
}
