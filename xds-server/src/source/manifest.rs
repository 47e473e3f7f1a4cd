//! The manifest-directory source: every `*.yaml` / `*.yml` in one directory
//! (multi-document files), watched and applied live.
//!
//! Each file is parsed as a whole. A file that fails to parse or validate is reported
//! (file, document index, field) and its last good contents keep serving; a file that
//! is deleted takes its objects with it. [`ManifestDir::scan`] is synchronous and does
//! the diffing; [`run`] adds the watching and the debounce.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use translator::model::{ManifestError, Object, ObjectKey, parse_manifest};

use crate::cache::Cache;
use crate::snapshot::short_hash;

/// Quiet time after a file-system event before the directory is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Re-read the directory this often even without events (a safety net).
const POLL: Duration = Duration::from_secs(5);

/// Why a file is not (or only partly) in effect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The directory cannot be read.
    #[error("manifest directory {dir}: {message}")]
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
    /// Problems, one per file.
    pub errors: Vec<SourceError>,
    /// Documents of kinds the mesh does not use: (file, document index, kind).
    pub skipped: Vec<(PathBuf, usize, String)>,
}

#[derive(Debug)]
struct FileState {
    hash: String,
    objects: Vec<Object>,
}

/// The directory and the last good contents of each file in it.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Hash of the last bad contents per file, so an unchanged bad file is reported once.
    bad: BTreeMap<PathBuf, String>,
    applied: BTreeMap<ObjectKey, Object>,
}

fn is_manifest(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

impl ManifestDir {
    /// A source for `dir`; nothing is read until [`ManifestDir::scan`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            bad: BTreeMap::new(),
            applied: BTreeMap::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory and returns what changed since the last scan.
    pub fn scan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_manifest(p))
                .collect(),
            Err(e) => {
                // Keep everything as it is: a directory that vanishes for a moment
                // (a config-map swap) must not empty the mesh.
                scan.errors.push(SourceError::Dir {
                    dir: self.dir.clone(),
                    message: e.to_string(),
                });
                return scan;
            }
        };
        paths.sort();
        self.files.retain(|p, _| paths.contains(p));
        self.bad.retain(|p, _| paths.contains(p));
        for path in &paths {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    scan.errors.push(SourceError::Read {
                        file: path.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let hash = short_hash([text.as_bytes()]);
            if self.files.get(path).is_some_and(|f| f.hash == hash)
                || self.bad.get(path) == Some(&hash)
            {
                continue;
            }
            match parse_manifest(&text) {
                Ok(parsed) => {
                    self.bad.remove(path);
                    for (index, kind) in parsed.skipped {
                        scan.skipped.push((path.clone(), index, kind));
                    }
                    self.files.insert(
                        path.clone(),
                        FileState {
                            hash,
                            objects: parsed.objects,
                        },
                    );
                }
                Err(error) => {
                    self.bad.insert(path.clone(), hash);
                    scan.errors.push(SourceError::Invalid {
                        file: path.clone(),
                        error,
                        kept_last_good: self.files.contains_key(path),
                    });
                }
            }
        }
        // Desired state: the union of every file's last good objects (later files win).
        let mut desired: BTreeMap<ObjectKey, (PathBuf, Object)> = BTreeMap::new();
        for (path, file) in &self.files {
            for o in &file.objects {
                if let Some((first, _)) = desired.insert(o.key(), (path.clone(), o.clone())) {
                    tracing::warn!(
                        object = %o.key(),
                        first = %first.display(),
                        file = %path.display(),
                        "object defined in two files; the later file wins"
                    );
                }
            }
        }
        for key in self.applied.keys() {
            if !desired.contains_key(key) {
                scan.changes.push(Change::Delete(key.clone()));
            }
        }
        for (key, (_, o)) in &desired {
            if self.applied.get(key) != Some(o) {
                scan.changes.push(Change::Apply(o.clone()));
            }
        }
        self.applied = desired.into_iter().map(|(k, (_, o))| (k, o)).collect();
        scan
    }
}

/// Applies a scan to the model and logs what it found.
pub fn apply(cache: &Cache, scan: Scan) {
    for e in &scan.errors {
        tracing::error!(error = %e, "manifest rejected");
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

/// Watches the directory forever, applying changes after [`DEBOUNCE`].
pub async fn run(mut source: ManifestDir, cache: Arc<Cache>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })
    .and_then(|mut w| {
        w.watch(source.dir(), notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %source.dir().display(), error = %e, "cannot watch the manifest directory; polling instead");
            None
        }
    };
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let a burst of writes settle.
                loop {
                    tokio::time::sleep(DEBOUNCE).await;
                    if rx.try_recv().is_err() {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        let scan = source.scan();
        apply(&cache, scan);
    }
}

#[cfg(test)]
mod tests;
