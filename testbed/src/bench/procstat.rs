//! What a process costs, read from /proc: resident memory and CPU time of all its threads
//! (nanosecond resolution from each thread's schedstat).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Resident set size of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// The largest resident set size `pid` has had (the kernel's high-water mark), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time used so far by every thread of `pid`, in nanoseconds.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(Path::new(&dir)).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Some(total)
}

/// Pins the calling thread's process to `cpu` (best effort).
pub fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity take a pointer
    // to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Memory of `pid` no other process shares (private clean + dirty pages, from
/// smaps_rollup), in bytes: its RSS less the binary's and libraries' pages that every
/// process running the same file shares.
pub fn private_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb = |field: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kb("Private_Clean:")? + kb("Private_Dirty:")?) * 1024)
}

/// The peak RSS of some processes, sampled on a thread of its own (so a busy or blocked
/// async runtime does not miss samples) until [`PeakRss::stop`].
#[derive(Debug)]
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peaks: Arc<Vec<AtomicU64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    /// Starts sampling `pids` every `every`.
    pub fn start(pids: &[u32], every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let pids = pids.to_vec();
        let (s, p) = (stop.clone(), peaks.clone());
        let thread = std::thread::spawn(move || {
            loop {
                for (pid, peak) in pids.iter().zip(p.iter()) {
                    if let Some(rss) = rss_bytes(*pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
                if s.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::park_timeout(every);
            }
        });
        PeakRss {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// Takes a last sample and stops: the peak of each process, in the order given.
    pub fn stop(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}
