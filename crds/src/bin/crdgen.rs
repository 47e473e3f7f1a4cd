//! Writes the CRD YAML generated from the Rust types into `charts/rudder/files/crds/`
//! (or the directory given as the first argument).

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/rudder/files/crds")
        });
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in crds::crd_documents() {
        std::fs::write(dir.join(name), yaml)?;
        println!("wrote {}", dir.join(name).display());
    }
    Ok(())
}
