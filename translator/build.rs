//! Finds the FileDescriptorSet that the envoy-types package ships, so that
//! `translator::json` can render any xDS message as proto3 JSON.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let src = locate().expect(
        "could not find envoy-types' src/generated/types.bin (cargo metadata found no envoy-types package)",
    );
    println!("cargo::rerun-if-changed={}", src.display());
    std::fs::copy(&src, out.join("envoy_descriptors.bin")).expect("copy descriptor set");
}

fn locate() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(std::env::var("CARGO_MANIFEST_DIR").ok()?)
        .output()
        .ok()?;
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    meta["packages"].as_array()?.iter().find_map(|p| {
        if p["name"] != "envoy-types" {
            return None;
        }
        let manifest = PathBuf::from(p["manifest_path"].as_str()?);
        let bin = manifest.parent()?.join("src/generated/types.bin");
        bin.exists().then_some(bin)
    })
}
