//! Writes `translator/descriptors/xds.binpb`: the part of envoy-types' descriptor set that
//! `translator::json` needs to render what Rudder emits as proto3 JSON.
//!
//!   cargo run -p translator --example gen_descriptors -- PATH/TO/envoy-types/src/generated/types.bin
//!
//! The `descriptors_match_envoy_types` test finds envoy-types itself and fails when the
//! committed file drifts from what this would write.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let input = args
        .next()
        .ok_or("usage: gen_descriptors ENVOY_TYPES_TYPES_BIN [OUTPUT]")?;
    let output = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(translator::json::DESCRIPTOR_FILE)
        });
    let full = std::fs::read(&input)?;
    let trimmed = translator::json::trim_descriptors(&full)?;
    std::fs::write(&output, &trimmed)?;
    println!(
        "wrote {} ({} of {} bytes)",
        output.display(),
        trimmed.len(),
        full.len()
    );
    Ok(())
}
