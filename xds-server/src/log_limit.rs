//! Logging that a peer cannot turn into a flood: a line at most once a second per kind,
//! with the number left out since ([`RateLimited`]).

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// A log line at most once a second per kind, with the number left out since.
pub(crate) struct RateLimited {
    last: Mutex<Option<(Instant, u64)>>,
}

impl Default for RateLimited {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimited {
    /// A limiter that has not logged yet.
    pub(crate) const fn new() -> Self {
        RateLimited {
            last: Mutex::new(None),
        }
    }

    /// `Some(suppressed)` when a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock();
        let now = Instant::now();
        match *last {
            Some((at, n)) if now.duration_since(at) < Duration::from_secs(1) => {
                *last = Some((at, n + 1));
                None
            }
            Some((_, n)) => {
                *last = Some((now, 0));
                Some(n)
            }
            None => {
                *last = Some((now, 0));
                Some(0)
            }
        }
    }
}
