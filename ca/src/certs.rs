//! What the CA hands out: [`SignedCert`] (a certificate for a key the workload keeps)
//! and [`WorkloadCert`] (certificate and key, for the control plane's own use), with the
//! lifetimes they are made with.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::CaError;
use crate::spiffe::SpiffeId;
use crate::verify;

/// Default workload certificate lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a self-made root.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this much before "now", for clock skew between nodes.
pub const BACKDATE: Duration = Duration::from_secs(60);

/// A certificate signed for a workload's own key: no key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCert {
    /// Whose it is.
    pub id: SpiffeId,
    /// The leaf certificate followed by any intermediates.
    pub cert_chain_pem: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    pub(crate) issued_at: SystemTime,
}

impl SignedCert {
    /// When it was issued.
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }
}

/// Whether `key_pem` is the private key of the first certificate in `cert_pem` (a
/// workload checking that what it was issued is for the key it made).
pub fn key_belongs_to(cert_pem: &str, key_pem: &str) -> Result<(), CaError> {
    verify::key_matches("certificate", cert_pem, key_pem)
}

/// A workload's certificate and key.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkloadCert {
    /// Whose it is.
    pub id: SpiffeId,
    /// The leaf certificate followed by any intermediates.
    pub cert_chain_pem: String,
    pub(crate) key_pem: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    pub(crate) issued_at: SystemTime,
}

impl fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("id", &self.id.to_string())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCert {
    pub(crate) fn with_key(signed: SignedCert, key_pem: String) -> Self {
        WorkloadCert {
            id: signed.id,
            cert_chain_pem: signed.cert_chain_pem,
            key_pem,
            not_before: signed.not_before,
            not_after: signed.not_after,
            issued_at: signed.issued_at,
        }
    }

    /// Rebuilds a certificate this CA issued earlier (e.g. read back from disk).
    pub fn restore(
        id: SpiffeId,
        cert_chain_pem: String,
        key_pem: String,
        issued_at: SystemTime,
        not_after: SystemTime,
    ) -> Self {
        WorkloadCert {
            id,
            cert_chain_pem,
            key_pem,
            not_before: issued_at - BACKDATE,
            not_after,
            issued_at,
        }
    }

    /// When it was issued.
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// The private key (PKCS#8 PEM). Only for delivery to its own workload.
    pub fn private_key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When to renew: at half of the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued_at)
            .unwrap_or_default();
        self.issued_at + life / 2
    }
}
