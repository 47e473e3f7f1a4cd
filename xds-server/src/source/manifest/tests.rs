use super::*;

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: 80}]\n";

fn keys(scan: &Scan) -> Vec<String> {
    scan.changes
        .iter()
        .map(|c| match c {
            Change::Apply(o) => format!("+{}", o.key()),
            Change::Delete(k) => format!("-{k}"),
        })
        .collect()
}

#[test]
fn reads_yaml_and_yml_and_ignores_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), SVC).expect("write");
    std::fs::write(dir.path().join("b.yml"), SVC.replace("name: a", "name: b")).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
    let mut src = ManifestDir::new(dir.path());
    let scan = src.scan();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(keys(&scan), ["+Service default/a", "+Service default/b"]);
    assert!(
        src.scan().changes.is_empty(),
        "an unchanged directory yields nothing"
    );
}

#[test]
fn a_broken_file_keeps_its_last_good_contents_and_is_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    assert_eq!(src.scan().changes.len(), 1);
    std::fs::write(&file, format!("{SVC}---\napiVersion: v1\nkind: Service\nmetadata: {{name: b}}\nspec:\n  ports: [{{port: 99999}}]\n")).expect("write");
    let scan = src.scan();
    assert!(
        scan.changes.is_empty(),
        "nothing of the broken file applies"
    );
    let msg = scan.errors[0].to_string();
    assert!(msg.contains("mesh.yaml"), "{msg}");
    assert!(msg.contains("document 1"), "{msg}");
    assert!(msg.contains("spec.ports[0].port"), "{msg}");
    assert!(msg.contains("keeping its last good contents"), "{msg}");
    assert!(
        src.scan().errors.is_empty(),
        "the same bad contents are not reported again"
    );
    std::fs::write(&file, SVC.replace("port: 80", "port: 81")).expect("write");
    let scan = src.scan();
    assert_eq!(keys(&scan), ["+Service default/a"]);
}

#[test]
fn deleting_a_file_deletes_its_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    src.scan();
    std::fs::remove_file(&file).expect("rm");
    assert_eq!(keys(&src.scan()), ["-Service default/a"]);
}

#[test]
fn a_missing_directory_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    src.scan();
    let path = dir.path().to_path_buf();
    drop(dir);
    let scan = ManifestDir::scan(&mut src);
    assert!(scan.changes.is_empty());
    assert!(
        scan.errors[0]
            .to_string()
            .contains(&path.display().to_string())
    );
}

#[test]
fn unknown_kinds_are_skipped_not_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n---\n{SVC}"),
    )
    .expect("write");
    let mut src = ManifestDir::new(dir.path());
    let scan = src.scan();
    assert!(scan.errors.is_empty());
    assert_eq!(scan.skipped.len(), 1);
    assert_eq!(scan.changes.len(), 1);
}
