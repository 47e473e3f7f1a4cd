//! The directory's desired state: [`ManifestDir`] scans the directory and diffs what it
//! holds against the last good contents of each file, and [`apply`] writes a scan into
//! the store.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use translator::model::{MAX_MANIFEST_BYTES, ManifestError, Object, ObjectKey, parse_manifest};

use crate::xds::store::Store;
use translator::encoded::short_hash;

/// How long a file still open for writing may go without an event before it is read
/// anyway (complete files, renamed into place, closed or removed, are read at once).
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Look at the directory this often even without events (a safety net; unchanged files
/// are only stat'ed).
pub(super) const POLL: Duration = Duration::from_secs(5);
/// While the directory is missing, look for it this often (its parent is watched too).
pub(super) const MISSING_POLL: Duration = Duration::from_millis(500);

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
    /// Shared with the directory's own record of it: one copy per object.
    Apply(Arc<Object>),
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
    /// The last good objects, if the file was ever good (a later document wins).
    objects: Option<BTreeMap<ObjectKey, Arc<Object>>>,
    /// Objects defined twice within the last good contents.
    twice: Vec<ObjectKey>,
    /// The problem with the contents last read.
    problem: Option<SourceError>,
}

impl FileState {
    fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.objects.iter().flat_map(|o| o.keys())
    }
}

/// A manifest file found by a scan.
struct Listed {
    /// Its path in the directory.
    path: PathBuf,
    /// Its name (the key of everything kept per file).
    name: OsString,
    /// Where it resolves (inside the directory); `None` for a regular file, which is
    /// opened without following links.
    real: Option<PathBuf>,
    stamp: Stamp,
}

/// The directory and the last good contents of each file in it.
///
/// Desired state is kept incrementally: which files define each object, and what was
/// applied. A scan recomputes only the objects of files it re-read or lost.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    /// By file name (all files are directly in `dir`; names compare faster than paths).
    files: BTreeMap<OsString, FileState>,
    /// The files defining each object, in name order (the last one wins).
    owners: BTreeMap<ObjectKey, BTreeSet<OsString>>,
    /// Whether the last full scan saw a manifest that is a symlink (its target may change
    /// under another name).
    links: bool,
    applied: BTreeMap<ObjectKey, Arc<Object>>,
    /// Objects defined in more than one file.
    duplicates: BTreeMap<ObjectKey, SourceError>,
    /// Problems in effect, by key.
    problems: BTreeMap<String, SourceError>,
    /// A problem with the directory itself, from the last full scan.
    dir_problems: Vec<SourceError>,
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
            owners: BTreeMap::new(),
            applied: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            links: false,
            problems: BTreeMap::new(),
            dir_problems: Vec::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One directory entry as a manifest file: regular files as they are, symlinks only
    /// when they resolve to a file inside the directory. `Ok(None)` for anything else.
    fn examine(
        root: &Path,
        path: PathBuf,
        file_type: std::fs::FileType,
    ) -> Result<Option<Listed>, SourceError> {
        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            return Ok(None);
        };
        if file_type.is_file() {
            return Ok(std::fs::symlink_metadata(&path).ok().map(|meta| Listed {
                path,
                name,
                real: None,
                stamp: Stamp::of(&meta),
            }));
        }
        if !file_type.is_symlink() {
            return Ok(None);
        }
        let Ok(real) = std::fs::canonicalize(&path) else {
            return Ok(None); // a dangling link or a file that just went away
        };
        if !real.starts_with(root) {
            return Err(SourceError::Outside {
                file: path,
                target: real,
            });
        }
        Ok(match std::fs::metadata(&real) {
            Ok(meta) if meta.is_file() => Some(Listed {
                path,
                name,
                real: Some(real),
                stamp: Stamp::of(&meta),
            }),
            _ => None,
        })
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
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            match Self::examine(&root, path, file_type) {
                Ok(Some(listed)) => out.push(listed),
                Ok(None) => {}
                Err(problem) => problems.push(problem),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
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
                self.dir_problems = vec![SourceError::Dir {
                    dir: self.dir.clone(),
                    message: e.to_string(),
                }];
                self.finish(BTreeSet::new(), &mut scan);
                return scan;
            }
        };
        self.dir_problems = problems;
        self.links = listed.iter().any(|l| l.real.is_some());
        let present: BTreeSet<&OsStr> = listed.iter().map(|l| l.name.as_os_str()).collect();
        let gone: Vec<OsString> = self
            .files
            .keys()
            .filter(|n| !present.contains(n.as_os_str()))
            .cloned()
            .collect();
        let mut touched = BTreeSet::new();
        for name in gone {
            self.forget(&name, &mut touched);
        }
        for listed in listed {
            self.refresh(listed, &mut touched, &mut scan);
        }
        self.finish(touched, &mut scan);
        scan
    }

    /// Looks only at `names` (paths in the directory a watch event named); falls back to
    /// a full [`ManifestDir::scan`] for anything it cannot judge alone: a path elsewhere,
    /// a directory or symlink under another name (ConfigMap volumes swap `..data`), any
    /// other name while a manifest is a symlink, a link leaving the directory.
    pub fn scan_names(&mut self, names: &BTreeSet<PathBuf>) -> Scan {
        let Ok(root) = std::fs::canonicalize(&self.dir) else {
            return self.scan();
        };
        let mut found = Vec::new();
        for path in names {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return self.scan();
            };
            if parent != self.dir.as_path() {
                return self.scan();
            }
            let meta = match std::fs::symlink_metadata(path) {
                Ok(meta) => Some(meta),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => return self.scan(),
            };
            if !is_manifest_name(path) {
                // A temporary file of an editor or of write-then-rename is no manifest.
                let plain = meta.as_ref().is_none_or(|m| m.file_type().is_file());
                if self.links || !plain {
                    return self.scan();
                }
                continue;
            }
            match meta {
                None => found.push((name.to_os_string(), None)),
                Some(meta) => match Self::examine(&root, path.clone(), meta.file_type()) {
                    Ok(listed) => found.push((name.to_os_string(), listed)),
                    // Problems with one file are reported by the full scan.
                    Err(_) => return self.scan(),
                },
            }
        }
        let mut scan = Scan::default();
        let mut touched = BTreeSet::new();
        for (name, listed) in found {
            match listed {
                Some(listed) => {
                    self.links |= listed.real.is_some();
                    self.refresh(listed, &mut touched, &mut scan);
                }
                None => self.forget(&name, &mut touched),
            }
        }
        self.finish(touched, &mut scan);
        scan
    }

    /// Reads a listed file again if its stamp says it may have changed.
    fn refresh(&mut self, listed: Listed, touched: &mut BTreeSet<ObjectKey>, scan: &mut Scan) {
        // As git does for its index: a stamp from the last moments may hide a second
        // write within the file system's timestamp granularity, so recent files are
        // read again (an unchanged hash applies nothing).
        let settled = SystemTime::now() - Duration::from_secs(2);
        let recent = listed.stamp.modified.is_none_or(|m| m > settled);
        if !recent
            && self
                .files
                .get(&listed.name)
                .is_some_and(|f| f.stamp == listed.stamp)
        {
            return;
        }
        self.read(listed, touched, scan);
    }

    /// A file is gone: its objects go with it.
    fn forget(&mut self, name: &OsStr, touched: &mut BTreeSet<ObjectKey>) {
        if let Some(state) = self.files.remove(name) {
            self.disown(name, &state, touched);
        }
    }

    fn disown(&mut self, name: &OsStr, state: &FileState, touched: &mut BTreeSet<ObjectKey>) {
        for key in state.keys() {
            if let Some(names) = self.owners.get_mut(key) {
                names.remove(name);
                if names.is_empty() {
                    self.owners.remove(key);
                }
            }
            touched.insert(key.clone());
        }
    }

    fn own(&mut self, name: &OsStr, state: &FileState, touched: &mut BTreeSet<ObjectKey>) {
        for key in state.keys() {
            self.owners
                .entry(key.clone())
                .or_default()
                .insert(name.to_os_string());
            touched.insert(key.clone());
        }
    }

    /// Reads one new or changed file.
    fn read(&mut self, listed: Listed, touched: &mut BTreeSet<ObjectKey>, scan: &mut Scan) {
        let Listed {
            path,
            name,
            real,
            stamp,
        } = listed;
        let previous = self.files.remove(&name);
        let text = if stamp.len > MAX_MANIFEST_BYTES as u64 {
            Err(format!(
                "{} bytes; at most {MAX_MANIFEST_BYTES} are read",
                stamp.len
            ))
        } else {
            read_checked(&path, real.as_deref())
        };
        let (hash, parsed) = match text {
            Ok(text) => {
                let hash = short_hash([text.as_bytes()]);
                if previous.as_ref().is_some_and(|f| f.hash == hash)
                    && let Some(prev) = previous
                {
                    // Touched but not changed.
                    self.files.insert(name, FileState { stamp, ..prev });
                    return;
                }
                let parsed = parse_manifest(&text).map_err(|error| SourceError::Invalid {
                    file: path.clone(),
                    error,
                    kept_last_good: previous.as_ref().is_some_and(|f| f.objects.is_some()),
                });
                (hash, parsed)
            }
            Err(message) => (
                String::new(),
                Err(SourceError::Read {
                    file: path.clone(),
                    message,
                }),
            ),
        };
        let state = match parsed {
            Ok(parsed) => {
                for (index, kind) in parsed.skipped {
                    scan.skipped.push((path.clone(), index, kind));
                }
                let mut objects = BTreeMap::new();
                let mut twice = Vec::new();
                for o in parsed.objects {
                    let key = o.key();
                    if objects.insert(key.clone(), Arc::new(o)).is_some() {
                        twice.push(key);
                    }
                }
                FileState {
                    stamp,
                    hash,
                    objects: Some(objects),
                    twice,
                    problem: None,
                }
            }
            // The last good contents keep serving.
            Err(problem) => match previous {
                Some(prev) => {
                    self.files.insert(
                        name,
                        FileState {
                            stamp,
                            hash,
                            problem: Some(problem),
                            ..prev
                        },
                    );
                    return;
                }
                None => FileState {
                    stamp,
                    hash,
                    objects: None,
                    twice: Vec::new(),
                    problem: Some(problem),
                },
            },
        };
        if let Some(prev) = &previous {
            self.disown(&name, prev, touched);
        }
        self.own(&name, &state, touched);
        self.files.insert(name, state);
    }

    /// Brings `applied` up to date for the objects whose files changed, and reports
    /// problems that appeared or cleared.
    fn finish(&mut self, touched: BTreeSet<ObjectKey>, scan: &mut Scan) {
        let mut applies = Vec::new();
        for key in touched {
            let paths = self.owners.get(&key);
            let winner = paths
                .and_then(|p| p.last())
                .and_then(|p| self.files.get(p))
                .and_then(|f| f.objects.as_ref()?.get(&key));
            match winner {
                None => {
                    if self.applied.remove(&key).is_some() {
                        scan.changes.push(Change::Delete(key.clone()));
                    }
                }
                Some(o) => {
                    // The same Arc is the same parse; another one may still be equal
                    // (a file rewritten as it was): no change, but the file's copy is
                    // kept as the one copy.
                    let same =
                        (self.applied.get(&key)).is_some_and(|a| Arc::ptr_eq(a, o) || a == o);
                    self.applied.insert(key.clone(), o.clone());
                    if !same {
                        applies.push(Change::Apply(o.clone()));
                    }
                }
            }
            match paths.filter(|p| p.len() > 1) {
                Some(p) => {
                    let mut rev = p.iter().rev();
                    if let (Some(file), Some(first)) = (rev.next(), rev.next()) {
                        let e = SourceError::Duplicate {
                            object: key.clone(),
                            first: self.dir.join(first),
                            file: self.dir.join(file),
                        };
                        self.duplicates.insert(key, e);
                    }
                }
                None => {
                    self.duplicates.remove(&key);
                }
            }
        }
        scan.changes.extend(applies);
        let mut problems = self.dir_problems.clone();
        for (name, f) in &self.files {
            problems.extend(f.problem.clone());
            problems.extend(f.twice.iter().map(|k| SourceError::Duplicate {
                object: k.clone(),
                first: self.dir.join(name),
                file: self.dir.join(name),
            }));
        }
        problems.extend(self.duplicates.values().cloned());
        self.report(problems, scan);
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

/// Reads a manifest file: a regular file without following a link swapped in since it
/// was listed, a symlink's checked target as resolved.
fn read_checked(path: &Path, real: Option<&Path>) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = match real {
        Some(real) => std::fs::File::open(real),
        None => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path),
    }
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.by_ref()
        .take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "more than {MAX_MANIFEST_BYTES} bytes; at most {MAX_MANIFEST_BYTES} are read"
        ));
    }
    Ok(text)
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
