//! The agent's state as its status port shows it ([`Status`]): written by the renewal
//! loop, read by `/ready` and `/status`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The agent's state, as `/status` shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Status {
    /// The SPIFFE ID of the installed certificate.
    pub identity: Option<String>,
    /// Its expiry (Unix seconds).
    pub not_after: Option<u64>,
    /// When it was last renewed by this agent (Unix seconds).
    pub last_renewal: Option<u64>,
    /// Renewals done by this agent.
    pub renewals: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// When the next attempt is due (Unix seconds).
    pub next_attempt: Option<u64>,
}

impl Status {
    /// Ready: a certificate is installed and valid now.
    pub fn ready(&self, now: SystemTime) -> bool {
        self.not_after.is_some_and(|t| secs(now) < t)
    }
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
