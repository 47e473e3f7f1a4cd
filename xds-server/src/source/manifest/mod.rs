//! The manifest-directory source: every `*.yaml` / `*.yml` in one directory
//! (multi-document files), watched and applied live.
//!
//! Each file is parsed as a whole. A file that fails to parse or validate is reported
//! (file, document index, field) and its last good contents keep serving; a file that
//! is deleted takes its objects with it. [`ManifestDir::scan`] is synchronous and does
//! the diffing; [`run`] (`watch`) adds the watching and the debounce.
//!
//! A scan reads only files whose size, modification time or inode changed. Problems are
//! conditions: each is reported once when it appears and once when it clears, however
//! many scans see it. Symlinks (as ConfigMap volumes use) are followed only to files
//! inside the directory.

//!
//! `dir` keeps the directory's state; `watch` follows it; this file only names them.

mod dir;
mod watch;

pub use dir::{Change, DEBOUNCE, ManifestDir, Scan, SourceError, apply};
pub use watch::{run, run_with};
