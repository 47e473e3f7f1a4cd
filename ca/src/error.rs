//! What the CA's operations report: [`CaError`], which never carries key material, and
//! the clipping of peer-supplied text quoted in messages.

/// What went wrong. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Certificate generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A supplied certificate or key could not be read.
    #[error("{what}: {message}")]
    Load {
        /// Which input.
        what: &'static str,
        /// Why (without the input's bytes).
        message: String,
    },
    /// The CA (or a certificate above it) uses a key that was published.
    #[error("{what} uses a published key and must never be used again ({why}): rotate to a new CA")]
    Denied {
        /// Which input.
        what: &'static str,
        /// Where the key was published.
        why: &'static str,
    },
}

pub(crate) fn generate(e: rcgen::Error) -> CaError {
    CaError::Generate(e.to_string())
}

/// Text cut to `max` bytes (at a character boundary), for messages quoting a peer.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
