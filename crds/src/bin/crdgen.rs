//! Writes the CRD YAML generated from the Rust types into every chart that ships it
//! ([`crds::CHART_CRD_DIRS`]: `charts/rudder` and `charts/rudder-crds`), or into the
//! directory given as the first argument.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs: Vec<std::path::PathBuf> = match std::env::args().nth(1) {
        Some(dir) => vec![dir.into()],
        None => crds::CHART_CRD_DIRS.iter().map(|d| root.join(d)).collect(),
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in crds::crd_documents() {
            std::fs::write(dir.join(name), &yaml)?;
            println!("wrote {}", dir.join(name).display());
        }
    }
    Ok(())
}
