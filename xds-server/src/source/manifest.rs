//! The manifest-directory source: every `*.yaml` / `*.yml` in one directory
//! (multi-document files), watched and applied live.
//!
//! Each file is parsed as a whole. A file that fails to parse or validate is reported
//! (file, document index, field) and its last good contents keep serving; a file that
//! is deleted takes its objects with it. [`ManifestDir::scan`] is synchronous and does
//! the diffing; [`run`] adds the watching and the debounce.
//!
//! A scan reads only files whose size, modification time or inode changed. Problems are
//! conditions: each is reported once when it appears and once when it clears, however
//! many scans see it. Symlinks (as ConfigMap volumes use) are followed only to files
//! inside the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::Watcher;
use tokio::sync::mpsc;
use translator::model::{MAX_MANIFEST_BYTES, ManifestError, Object, ObjectKey, parse_manifest};

use crate::xds::store::Store;
use translator::encoded::short_hash;

/// Quiet time after a file-system event before the directory is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Look at the directory this often even without events (a safety net; unchanged files
/// are only stat'ed).
const POLL: Duration = Duration::from_secs(5);
/// While the directory is missing, look for it this often (its parent is watched too).
const MISSING_POLL: Duration = Duration::from_millis(500);

/// Why a file is not (or only partly) in effect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The directory cannot be read.
    #[error("manifest directory {dir}: {message}; keeping what was loaded")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A file cannot be read.
    #[error("{file}: {message}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A file is not valid; its last good contents (if any) keep serving.
    #[error("{file}: {error}{}", if *.kept_last_good { "; keeping its last good contents" } else { "" })]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong, with document index and field.
        error: ManifestError,
        /// Whether an earlier good version of the file stays in effect.
        kept_last_good: bool,
    },
    /// A symlink points outside the directory; it is not followed.
    #[error("{file}: a symlink to {target}, outside the manifest directory; ignored")]
    Outside {
        /// The link.
        file: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The same object is defined in two files.
    #[error("{object} is defined in {first} and {file}; the later file wins")]
    Duplicate {
        /// The object.
        object: ObjectKey,
        /// The file whose definition lost.
        first: PathBuf,
        /// The file whose definition is used.
        file: PathBuf,
    },
}

impl SourceError {
    /// What the problem is about: a later problem with the same key replaces it.
    fn key(&self) -> String {
        match self {
            SourceError::Dir { .. } => "dir".into(),
            SourceError::Read { file, .. }
            | SourceError::Invalid { file, .. }
            | SourceError::Outside { file, .. } => format!("file {}", file.display()),
            SourceError::Duplicate { object, .. } => format!("object {object}"),
        }
    }
}

/// A change to apply to the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Add or replace an object.
    Apply(Object),
    /// Remove an object.
    Delete(ObjectKey),
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Changes to apply, deletes first.
    pub changes: Vec<Change>,
    /// Problems that appeared (or changed) with this scan. A problem that persists is not
    /// repeated.
    pub errors: Vec<SourceError>,
    /// Problems that were there before and are gone now.
    pub cleared: Vec<SourceError>,
    /// Documents of kinds the mesh does not use: (file, document index, kind).
    pub skipped: Vec<(PathBuf, usize, String)>,
}

/// What identifies a file's contents without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        }
    }
}

#[derive(Debug)]
struct FileState {
    /// The stamp of the contents last read (good or bad).
    stamp: Stamp,
    /// Hash of the contents last read.
    hash: String,
    /// The last good objects, if the file was ever good.
    objects: Option<Vec<Object>>,
    /// The problem with the contents last read.
    problem: Option<SourceError>,
}

/// A manifest file found by a scan.
struct Listed {
    /// Its path in the directory.
    path: PathBuf,
    /// Where it resolves (inside the directory).
    real: PathBuf,
    stamp: Stamp,
}

/// The directory and the last good contents of each file in it.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    applied: BTreeMap<ObjectKey, Object>,
    /// Problems in effect, by key.
    problems: BTreeMap<String, SourceError>,
}

fn is_manifest_name(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

impl ManifestDir {
    /// A source for `dir`; nothing is read until [`ManifestDir::scan`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            applied: BTreeMap::new(),
            problems: BTreeMap::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest files of the directory with their stamps; symlinks that leave the
    /// directory are reported instead.
    fn list(&self, problems: &mut Vec<SourceError>) -> std::io::Result<Vec<Listed>> {
        let root = std::fs::canonicalize(&self.dir)?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if !is_manifest_name(&path) {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue; // a dangling link or a file that just went away
            };
            if !real.starts_with(&root) {
                problems.push(SourceError::Outside {
                    file: path,
                    target: real,
                });
                continue;
            }
            match std::fs::metadata(&real) {
                Ok(meta) if meta.is_file() => out.push(Listed {
                    path,
                    real,
                    stamp: Stamp::of(&meta),
                }),
                _ => {}
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Re-reads the directory and returns what changed since the last scan.
    pub fn scan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let mut problems = Vec::new();
        let listed = match self.list(&mut problems) {
            Ok(listed) => listed,
            Err(e) => {
                // Keep everything as it is: a directory that vanishes for a moment
                // (a config-map swap) must not empty the mesh.
                problems.push(SourceError::Dir {
                    dir: self.dir.clone(),
                    message: e.to_string(),
                });
                self.report(problems, &mut scan);
                return scan;
            }
        };
        let present: BTreeSet<&PathBuf> = listed.iter().map(|l| &l.path).collect();
        self.files.retain(|p, _| present.contains(p));
        // As git does for its index: a stamp from the last moments may hide a second
        // write within the file system's timestamp granularity, so recent files are
        // read again (an unchanged hash applies nothing).
        let settled = SystemTime::now() - Duration::from_secs(2);
        for Listed { path, real, stamp } in &listed {
            let recent = stamp.modified.is_none_or(|m| m > settled);
            if !recent && self.files.get(path).is_some_and(|f| f.stamp == *stamp) {
                continue;
            }
            self.read(path, real, *stamp, &mut scan);
        }
        problems.extend(self.files.values().filter_map(|f| f.problem.clone()));
        // Desired state: the union of every file's last good objects (later files win).
        let mut desired: BTreeMap<ObjectKey, (&PathBuf, &Object)> = BTreeMap::new();
        for (path, file) in &self.files {
            for o in file.objects.iter().flatten() {
                if let Some((first, _)) = desired.insert(o.key(), (path, o)) {
                    problems.push(SourceError::Duplicate {
                        object: o.key(),
                        first: first.clone(),
                        file: path.clone(),
                    });
                }
            }
        }
        for key in self.applied.keys() {
            if !desired.contains_key(key) {
                scan.changes.push(Change::Delete(key.clone()));
            }
        }
        for (key, (_, o)) in &desired {
            if self.applied.get(key) != Some(*o) {
                scan.changes.push(Change::Apply((*o).clone()));
            }
        }
        self.applied = desired
            .into_iter()
            .map(|(k, (_, o))| (k, o.clone()))
            .collect();
        self.report(problems, &mut scan);
        scan
    }

    /// Reads one new or changed file.
    fn read(&mut self, path: &Path, real: &Path, stamp: Stamp, scan: &mut Scan) {
        let previous = self.files.remove(path);
        let last_good = previous.as_ref().and_then(|f| f.objects.clone());
        let text = if stamp.len > MAX_MANIFEST_BYTES as u64 {
            Err(format!(
                "{} bytes; at most {MAX_MANIFEST_BYTES} are read",
                stamp.len
            ))
        } else {
            // The resolved path, checked to be inside the directory: a link swapped after
            // the check is not followed.
            std::fs::read_to_string(real).map_err(|e| e.to_string())
        };
        let text = match text {
            Ok(t) => t,
            Err(message) => {
                self.files.insert(
                    path.to_path_buf(),
                    FileState {
                        stamp,
                        hash: String::new(),
                        objects: last_good,
                        problem: Some(SourceError::Read {
                            file: path.to_path_buf(),
                            message,
                        }),
                    },
                );
                return;
            }
        };
        let hash = short_hash([text.as_bytes()]);
        if let Some(prev) = previous.filter(|f| f.hash == hash) {
            // Touched but not changed.
            self.files
                .insert(path.to_path_buf(), FileState { stamp, ..prev });
            return;
        }
        let state = match parse_manifest(&text) {
            Ok(parsed) => {
                for (index, kind) in parsed.skipped {
                    scan.skipped.push((path.to_path_buf(), index, kind));
                }
                FileState {
                    stamp,
                    hash,
                    objects: Some(parsed.objects),
                    problem: None,
                }
            }
            Err(error) => FileState {
                stamp,
                hash,
                problem: Some(SourceError::Invalid {
                    file: path.to_path_buf(),
                    error,
                    kept_last_good: last_good.is_some(),
                }),
                objects: last_good,
            },
        };
        self.files.insert(path.to_path_buf(), state);
    }

    /// Turns the problems seen now into what appeared and what cleared.
    fn report(&mut self, now: Vec<SourceError>, scan: &mut Scan) {
        let now: BTreeMap<String, SourceError> = now.into_iter().map(|e| (e.key(), e)).collect();
        for (key, e) in &now {
            if self.problems.get(key) != Some(e) {
                scan.errors.push(e.clone());
            }
        }
        for (key, e) in &self.problems {
            if !now.contains_key(key) {
                scan.cleared.push(e.clone());
            }
        }
        self.problems = now;
    }
}

/// Applies a scan to the model and logs what it found.
pub fn apply(cache: &Store, scan: Scan) {
    for e in &scan.errors {
        tracing::error!(error = %e, "manifest problem");
    }
    for e in &scan.cleared {
        tracing::info!(was = %e, "manifest problem resolved");
    }
    for (file, index, kind) in &scan.skipped {
        tracing::info!(file = %file.display(), document = index, kind, "skipping a kind the mesh does not use");
    }
    if scan.changes.is_empty() {
        return;
    }
    let n = scan.changes.len();
    cache.update(|model| {
        for change in scan.changes {
            match change {
                Change::Apply(o) => {
                    if let Err(e) = model.apply(&o) {
                        tracing::error!(error = %e, "object rejected");
                    }
                }
                Change::Delete(key) => {
                    model.delete(&key);
                }
            }
        }
    });
    tracing::info!(changes = n, "manifests applied");
}

/// The inotify watch on the directory, re-armed whenever the directory is replaced or
/// comes back after being deleted; meanwhile its parent is watched for it to reappear.
struct DirWatch {
    dir: PathBuf,
    tx: mpsc::Sender<()>,
    watcher: Option<notify::RecommendedWatcher>,
    /// (device, inode) of the directory the watcher is on.
    armed: Option<(u64, u64)>,
    parent: Option<notify::RecommendedWatcher>,
}

impl DirWatch {
    fn new(dir: &Path, tx: mpsc::Sender<()>) -> Self {
        DirWatch {
            dir: dir.to_path_buf(),
            tx,
            watcher: None,
            armed: None,
            parent: None,
        }
    }

    /// A watcher that pokes the scan loop on any event but plain reads (the scan's own
    /// opens would otherwise wake it again).
    fn watcher(&self, only: Option<PathBuf>) -> notify::Result<notify::RecommendedWatcher> {
        let tx = self.tx.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else {
                let _ = tx.try_send(());
                return;
            };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            if let Some(only) = &only
                && !event.paths.iter().any(|p| p == only)
            {
                return;
            }
            let _ = tx.try_send(());
        })
    }

    /// Whether the watch is on the directory as it is now.
    fn healthy(&self) -> bool {
        self.armed.is_some() && self.armed == dir_id(&self.dir)
    }

    /// Re-arms the watch if the directory changed identity; returns whether it is armed.
    fn rearm(&mut self) -> bool {
        if self.healthy() {
            return true;
        }
        self.watcher = None;
        self.armed = None;
        if let Some(id) = dir_id(&self.dir) {
            match self.watcher(None).and_then(|mut w| {
                w.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
                Ok(w)
            }) {
                Ok(w) => {
                    self.watcher = Some(w);
                    self.armed = Some(id);
                    self.parent = None;
                    tracing::info!(dir = %self.dir.display(), "watching the manifest directory");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the manifest directory; polling")
                }
            }
        }
        // Gone: watch the parent for it to come back.
        if self.parent.is_none()
            && let Some(parent) = self.dir.parent().filter(|p| p.is_dir())
        {
            self.parent = self
                .watcher(Some(self.dir.clone()))
                .and_then(|mut w| {
                    w.watch(parent, notify::RecursiveMode::NonRecursive)?;
                    Ok(w)
                })
                .ok();
        }
        false
    }
}

fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// Watches the directory forever, applying changes after [`DEBOUNCE`].
pub async fn run(source: ManifestDir, cache: Arc<Store>) {
    run_with(source, cache, DEBOUNCE).await
}

/// [`run`] with another quiet time after a file-system event.
pub async fn run_with(mut source: ManifestDir, cache: Arc<Store>, debounce: Duration) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watch = DirWatch::new(source.dir(), tx);
    let mut armed = watch.rearm();
    loop {
        let wait = if armed { POLL } else { MISSING_POLL };
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let a burst of writes settle.
                loop {
                    tokio::time::sleep(debounce).await;
                    if rx.try_recv().is_err() {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        armed = watch.rearm();
        let scan = source.scan();
        apply(&cache, scan);
    }
}

#[cfg(test)]
mod tests;
