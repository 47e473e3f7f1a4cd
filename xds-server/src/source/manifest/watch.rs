//! Watching the manifest directory: an inotify watch re-armed when the directory is
//! replaced, events collected into the names they touch, and the loop that scans (only
//! those names when it can, the whole directory on a timer, on overflow and when the
//! directory itself changed) and applies.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

use super::dir::{DEBOUNCE, MISSING_POLL, ManifestDir, POLL, apply};
use crate::xds::store::Store;

/// More names than this in one batch: scan everything instead.
const MAX_NAMES: usize = 256;

/// The longest a scan waits for files still open for writing.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// What the watch saw since the last scan.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Something only a full scan can judge (an error, an overflow, the parent).
    full: bool,
    names: BTreeSet<PathBuf>,
    /// Files created or written and not yet closed: reading them now could see half a
    /// write. Renamed-into-place, closed and removed files are complete.
    writing: BTreeSet<PathBuf>,
    /// More files were open for writing than `writing` holds: wait for quiet.
    writing_overflow: bool,
}

impl Pending {
    fn take(&mut self) -> Pending {
        std::mem::take(self)
    }

    /// Follows which files are mid-write from one event.
    pub(super) fn track_writes(&mut self, event: &notify::Event) {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
        let open = match event.kind {
            EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_) => false,
            _ => return,
        };
        for path in &event.paths {
            if !open {
                self.writing.remove(path);
            } else if self.writing.len() < MAX_NAMES {
                self.writing.insert(path.clone());
            } else {
                self.writing_overflow = true;
            }
        }
    }

    /// Whether some file the events named may still be mid-write.
    pub(super) fn mid_write(&self) -> bool {
        self.writing_overflow || !self.writing.is_empty()
    }
}

/// The inotify watch on the directory, re-armed whenever the directory is replaced or
/// comes back after being deleted; meanwhile its parent is watched for it to reappear.
struct DirWatch {
    dir: PathBuf,
    tx: mpsc::Sender<()>,
    pending: Arc<Mutex<Pending>>,
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
            pending: Arc::default(),
            watcher: None,
            armed: None,
            parent: None,
        }
    }

    /// A watcher that records the names events touch and pokes the scan loop, on any
    /// event but plain reads (the scan's own opens would otherwise wake it again); a
    /// close after writing wakes it, as the file is then complete.
    fn watcher(&self, only: Option<PathBuf>) -> notify::Result<notify::RecommendedWatcher> {
        use notify::event::{AccessKind, AccessMode, EventKind};
        let tx = self.tx.clone();
        let pending = self.pending.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let full = match &res {
                Err(_) => true,
                Ok(event)
                    if matches!(event.kind, EventKind::Access(_))
                        && event.kind
                            != EventKind::Access(AccessKind::Close(AccessMode::Write)) =>
                {
                    return;
                }
                Ok(event) => {
                    if let Some(only) = &only
                        && !event.paths.iter().any(|p| p == only)
                    {
                        return;
                    }
                    only.is_some() || event.need_rescan() || event.paths.is_empty()
                }
            };
            {
                let mut p = pending.lock();
                if let Ok(event) = &res {
                    p.track_writes(event);
                }
                if full || p.names.len() >= MAX_NAMES {
                    p.full = true;
                    p.names.clear();
                } else if !p.full
                    && let Ok(event) = &res
                {
                    p.names.extend(event.paths.iter().cloned());
                }
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

/// Returns at once when every file the events named is complete (renamed into place,
/// closed or removed); otherwise waits for the writers to close them, or for `quiet`
/// without an event (a writer that keeps its file open), at most [`MAX_SETTLE`].
async fn settle_writes(pending: &Mutex<Pending>, rx: &mut mpsc::Receiver<()>, quiet: Duration) {
    let started = tokio::time::Instant::now();
    while pending.lock().mid_write() && started.elapsed() < MAX_SETTLE {
        let left = MAX_SETTLE.saturating_sub(started.elapsed());
        match tokio::time::timeout(quiet.min(left), rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// Watches the directory forever, applying complete changes at once and files still
/// being written after [`DEBOUNCE`] of quiet.
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
            Some(()) = rx.recv() => settle_writes(&watch.pending, &mut rx, debounce).await,
            _ = tokio::time::sleep(wait) => {}
        }
        armed = watch.rearm();
        let pending = watch.pending.lock().take();
        // On the timer (nothing pending) or when the watch could not say what changed,
        // everything; otherwise only the names events touched.
        let scan = if pending.full || pending.names.is_empty() {
            source.scan()
        } else {
            source.scan_names(&pending.names)
        };
        apply(&cache, scan);
    }
}
