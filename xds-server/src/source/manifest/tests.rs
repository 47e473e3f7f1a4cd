use super::*;
use crate::source::manifest::run;

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

#[test]
fn a_duplicate_is_reported_once_when_it_appears_and_once_when_it_clears() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), SVC).expect("write");
    std::fs::write(dir.path().join("b.yaml"), SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    let first = src.scan();
    assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
    assert!(
        first.errors[0].to_string().contains("defined in"),
        "{}",
        first.errors[0]
    );
    for _ in 0..20 {
        let again = src.scan();
        assert!(again.errors.is_empty() && again.cleared.is_empty());
    }
    std::fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    let fixed = src.scan();
    assert!(fixed.errors.is_empty());
    assert_eq!(fixed.cleared.len(), 1, "{:?}", fixed.cleared);
    assert!(src.scan().cleared.is_empty());
}

#[test]
fn a_missing_directory_is_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m");
    let mut src = ManifestDir::new(&path);
    assert_eq!(src.scan().errors.len(), 1);
    assert!(src.scan().errors.is_empty());
    std::fs::create_dir(&path).expect("mkdir");
    assert_eq!(src.scan().cleared.len(), 1);
}

#[test]
fn symlinks_are_followed_only_inside_the_directory() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.yaml"), SVC).expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    // The ConfigMap volume layout: NAME -> ..data/NAME, ..data -> ..TIMESTAMP/
    let data = dir.path().join("..2026_11_26_10_00_00.1");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("mesh.yaml"), SVC.replace("name: a", "name: b")).expect("write");
    std::os::unix::fs::symlink("..2026_11_26_10_00_00.1", dir.path().join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/mesh.yaml", dir.path().join("mesh.yaml")).expect("link");
    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        dir.path().join("evil.yaml"),
    )
    .expect("link");
    let mut src = ManifestDir::new(dir.path());
    let scan = src.scan();
    assert_eq!(keys(&scan), ["+Service default/b"]);
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    assert!(
        matches!(&scan.errors[0], SourceError::Outside { file, .. } if file.ends_with("evil.yaml")),
        "{:?}",
        scan.errors
    );
}

#[tokio::test]
async fn the_watch_is_rearmed_when_the_directory_comes_back() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("manifests");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("a.yaml"), SVC).expect("write");
    let cache = crate::xds::store::Store::new(
        crate::xds::store::StoreConfig::default(),
        Default::default(),
        None,
    );
    let mut src = ManifestDir::new(&dir);
    apply(&cache, src.scan());
    let task = tokio::spawn(run(src, cache.clone()));
    let has = |name: &'static str| {
        let cache = cache.clone();
        move || cache.read(|m| m.service("default", name).is_some())
    };
    let within = |d: Duration, f: Box<dyn Fn() -> bool>| async move {
        let start = std::time::Instant::now();
        while start.elapsed() < d {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    std::fs::remove_dir_all(&dir).expect("rm -r");
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::create_dir(&dir).expect("mkdir again");
    std::fs::write(dir.join("b.yaml"), SVC.replace("name: a", "name: b")).expect("write");
    assert!(within(Duration::from_secs(3), Box::new(has("b"))).await);
    // The new directory is watched, not polled: a change lands well before POLL.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.join("c.yaml"), SVC.replace("name: a", "name: c")).expect("write");
    assert!(
        within(POLL / 5, Box::new(has("c"))).await,
        "a change in the recreated directory was not seen within {:?}",
        POLL / 5
    );
    task.abort();
}

/// Writes a file so its stamp differs from the last one even within a second.
fn write_new(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn a_scan_of_named_files_equals_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = |n: &str| SVC.replace("name: a", &format!("name: {n}"));
    for n in ["a", "b", "c"] {
        std::fs::write(dir.path().join(format!("{n}.yaml")), svc(n)).expect("write");
    }
    let mut targeted = ManifestDir::new(dir.path());
    assert_eq!(targeted.scan().changes.len(), 3);
    let names =
        |ns: &[&str]| -> BTreeSet<PathBuf> { ns.iter().map(|n| dir.path().join(n)).collect() };
    // Changed, removed and new files, each named by an event.
    write_new(
        &dir.path().join("a.yaml"),
        &svc("a").replace("port: 80", "port: 81"),
    );
    std::fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    std::fs::write(
        dir.path().join("d.yaml"),
        format!("{}---\n{}", svc("d"), svc("c")),
    )
    .expect("write");
    let scan = targeted.scan_names(&names(&["a.yaml", "b.yaml", "d.yaml"]));
    assert_eq!(
        keys(&scan),
        [
            "-Service default/b",
            "+Service default/a",
            "+Service default/d"
        ],
        "c is now defined twice with the same contents: nothing to apply"
    );
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    assert!(
        matches!(&scan.errors[0], SourceError::Duplicate { file, .. } if file.ends_with("d.yaml"))
    );
    // The same directory read from scratch gives the same objects.
    let mut fresh = ManifestDir::new(dir.path());
    fresh.scan();
    assert_eq!(targeted.applied, fresh.applied);
    assert_eq!(targeted.problems, fresh.problems);
    // Losing the later definition hands the object back to the earlier file.
    std::fs::write(
        dir.path().join("c.yaml"),
        svc("c").replace("port: 80", "port: 90"),
    )
    .expect("write");
    targeted.scan_names(&names(&["c.yaml"]));
    std::fs::remove_file(dir.path().join("d.yaml")).expect("rm");
    let scan = targeted.scan_names(&names(&["d.yaml"]));
    assert_eq!(keys(&scan), ["-Service default/d", "+Service default/c"]);
    assert_eq!(scan.cleared.len(), 1, "{:?}", scan.cleared);
}

#[test]
fn names_a_scan_cannot_judge_fall_back_to_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    src.scan();
    std::fs::write(dir.path().join("b.yaml"), SVC.replace("name: a", "name: b")).expect("write");
    // An event on a name that is not a manifest (ConfigMap volumes swap `..data`).
    std::fs::create_dir(dir.path().join("..x")).expect("mkdir");
    std::os::unix::fs::symlink("..x", dir.path().join("..data")).expect("link");
    let scan = src.scan_names(&[dir.path().join("..data")].into_iter().collect());
    assert_eq!(keys(&scan), ["+Service default/b"]);
    // A path outside the directory.
    std::fs::write(dir.path().join("c.yaml"), SVC.replace("name: a", "name: c")).expect("write");
    let scan = src.scan_names(&[PathBuf::from("/elsewhere/c.yaml")].into_iter().collect());
    assert_eq!(keys(&scan), ["+Service default/c"]);
}

#[test]
fn an_object_defined_twice_in_one_file_is_reported_and_the_later_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("{SVC}---\n{}", SVC.replace("port: 80", "port: 81")),
    )
    .expect("write");
    let mut src = ManifestDir::new(dir.path());
    let scan = src.scan();
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    let Some(Change::Apply(o)) = scan.changes.first() else {
        panic!("{:?}", scan.changes)
    };
    assert!(format!("{o:?}").contains("81"), "{o:?}");
}

#[test]
fn a_regular_file_swapped_for_a_link_after_listing_is_not_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.yaml"), SVC).expect("write");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    std::os::unix::fs::symlink(outside.path().join("secret.yaml"), &file).expect("link");
    let err = read_checked(&file, None).expect_err("O_NOFOLLOW refuses the link");
    assert!(!err.is_empty());
}

#[test]
fn temporary_files_of_write_then_rename_are_not_a_reason_for_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    src.scan();
    // b.yaml appears without an event naming it: only a full scan would find it.
    std::fs::write(dir.path().join("b.yaml"), SVC.replace("name: a", "name: b")).expect("write");
    std::fs::write(dir.path().join(".a.yaml.tmp"), "x").expect("write");
    let events: BTreeSet<PathBuf> = [dir.path().join(".a.yaml.tmp")].into_iter().collect();
    assert!(src.scan_names(&events).changes.is_empty(), "no full scan");
    // With a manifest that is a symlink, any other name may be its target: full scan.
    std::os::unix::fs::symlink("b.yaml", dir.path().join("c.yml")).expect("link");
    src.scan();
    std::fs::write(dir.path().join("d.yaml"), SVC.replace("name: a", "name: d")).expect("write");
    assert_eq!(keys(&src.scan_names(&events)), ["+Service default/d"]);
}

fn event(kind: notify::EventKind, path: &str) -> notify::Event {
    notify::Event::new(kind).add_path(PathBuf::from(path))
}

#[test]
fn files_are_mid_write_from_create_or_write_until_closed_renamed_or_removed() {
    use notify::EventKind::{Access, Create, Modify, Remove};
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
    };
    let closed = Access(AccessKind::Close(AccessMode::Write));
    let mut p = crate::source::manifest::watch::Pending::default();
    p.track_writes(&event(Create(CreateKind::File), "/d/a.yaml"));
    assert!(p.mid_write(), "created, not closed");
    p.track_writes(&event(
        Modify(ModifyKind::Data(DataChange::Any)),
        "/d/a.yaml",
    ));
    p.track_writes(&event(closed, "/d/a.yaml"));
    assert!(!p.mid_write(), "closed after writing");
    // Write-and-rename: the temporary file is written and closed, then renamed.
    p.track_writes(&event(Create(CreateKind::File), "/d/.b.tmp"));
    p.track_writes(&event(
        Modify(ModifyKind::Name(RenameMode::From)),
        "/d/.b.tmp",
    ));
    p.track_writes(&event(
        Modify(ModifyKind::Name(RenameMode::To)),
        "/d/b.yaml",
    ));
    assert!(!p.mid_write(), "renamed into place");
    p.track_writes(&event(
        Modify(ModifyKind::Data(DataChange::Any)),
        "/d/c.yaml",
    ));
    p.track_writes(&event(Remove(RemoveKind::File), "/d/c.yaml"));
    assert!(!p.mid_write(), "removed");
    p.track_writes(&event(
        Modify(ModifyKind::Data(DataChange::Any)),
        "/d/e.yaml",
    ));
    p.track_writes(&event(
        Access(AccessKind::Open(AccessMode::Any)),
        "/d/e.yaml",
    ));
    assert!(p.mid_write(), "an open is not a close");
}

#[tokio::test]
async fn complete_files_are_read_at_once_and_open_ones_when_closed() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = crate::xds::store::Store::new(
        crate::xds::store::StoreConfig::default(),
        Default::default(),
        None,
    );
    let src = ManifestDir::new(dir.path());
    // An hour of quiet before a file still open for writing is read anyway: only the
    // writer's close (or a rename) can make the watcher read it within the test.
    let task = tokio::spawn(crate::source::manifest::run_with(
        src,
        cache.clone(),
        Duration::from_secs(3600),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let has = |name: &str| cache.read(|m| m.service("default", name).is_some());
    let until = |name: &'static str| {
        let cache = cache.clone();
        async move {
            for _ in 0..250 {
                if cache.read(|m| m.service("default", name).is_some()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    write_new(&dir.path().join("a.yaml"), SVC);
    assert!(
        until("a").await,
        "a renamed-in file is read without waiting"
    );
    // A file written in two parts: the first part alone is a valid manifest.
    let mut file = std::fs::File::create(dir.path().join("b.yaml")).expect("create");
    file.write_all(SVC.replace("name: a", "name: b").as_bytes())
        .expect("write");
    file.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!has("b"), "a file still open for writing is not read yet");
    file.write_all(format!("---\n{}", SVC.replace("name: a", "name: c")).as_bytes())
        .expect("write");
    drop(file);
    assert!(until("c").await, "the writer's close makes it read");
    assert!(has("b"));
    task.abort();
}

#[test]
fn a_file_rewritten_to_the_same_objects_changes_nothing_and_keeps_one_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.yaml");
    std::fs::write(&file, SVC).expect("write");
    let mut src = ManifestDir::new(dir.path());
    assert_eq!(keys(&src.scan()), ["+Service default/a"]);
    // Other bytes (a comment), the same object: parsed again, applied as before.
    std::fs::write(&file, format!("# reformatted\n{SVC}")).expect("write");
    let scan = src.scan();
    assert!(scan.changes.is_empty(), "{:?}", keys(&scan));
    let key = ObjectKey::new(translator::model::Kind::Service, "default", "a");
    let parsed = src.files[OsStr::new("a.yaml")]
        .objects
        .as_ref()
        .and_then(|o| o.get(&key))
        .expect("parsed");
    assert!(
        Arc::ptr_eq(parsed, &src.applied[&key]),
        "what is applied is the file's copy, not a second one"
    );
}
