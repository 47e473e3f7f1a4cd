//! The root and what it signs: [`Authority`] (a self-made or supplied CA that issues
//! workload certificates for CSRs or, for the control plane itself, with a key it makes)
//! and [`CaFiles`], its PEM for persisting.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

use crate::certs::{BACKDATE, ROOT_LIFETIME, SignedCert, WorkloadCert};
use crate::error::{CaError, generate};
use crate::spiffe::SpiffeId;
use crate::{csr, deny, verify};

/// PEM files of a CA, for persisting it.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate.
    pub cert_pem: String,
    /// The CA private key (PKCS#8).
    pub key_pem: String,
    /// Certificates above the CA up to and including the root (empty for a root).
    pub chain_pem: String,
}

impl fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFiles")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A signing CA: the root itself, or an intermediate under a supplied root.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    files: CaFiles,
    /// Trust anchors workloads must accept: the current root first, then roots kept
    /// during a rotation overlap.
    bundle: Vec<String>,
    trust_domain: String,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

fn pem_blocks(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and never zero
    Ok(SerialNumber::from_slice(&bytes))
}

impl Authority {
    /// Creates a self-signed root for `trust_domain`.
    pub fn generate_root(trust_domain: &str, now: SystemTime) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Rudder");
        dn.push(DnType::CommonName, format!("Rudder root CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_LIFETIME).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(generate)?;
        let files = CaFiles {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain_pem: String::new(),
        };
        Self::from_files(trust_domain, &files)
    }

    /// Whether `cert` (read back from disk, say) was issued by this CA, or a root it
    /// still trusts, for the identity it names, is valid at `at`, and holds its own key.
    pub fn verify_issued(&self, cert: &WorkloadCert, at: SystemTime) -> Result<(), CaError> {
        verify::issued(
            &self.issuer_anchors_pem(),
            &cert.cert_chain_pem,
            &cert.key_pem,
            &cert.id,
            at,
        )
    }

    /// Issues an intermediate CA under this one (for a mesh whose workloads chain to a
    /// shared root, or for tests of such a setup). The returned files carry the chain
    /// above the intermediate, ready for [`Authority::from_files`].
    pub fn issue_intermediate(&self, name: &str, now: SystemTime) -> Result<CaFiles, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Rudder");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_LIFETIME / 2).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        let mut chain = self.files.cert_pem.clone();
        chain.push_str(&self.files.chain_pem);
        Ok(CaFiles {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain_pem: chain,
        })
    }

    /// Loads a CA from PEM: a root, or an intermediate with `chain_pem` holding the
    /// certificates above it (the last one is the trust anchor).
    pub fn from_files(trust_domain: &str, files: &CaFiles) -> Result<Self, CaError> {
        for (what, pem) in [
            ("the CA certificate", &files.cert_pem),
            ("the CA chain", &files.chain_pem),
        ] {
            if let Some(why) = deny::first_denied(pem) {
                return Err(CaError::Denied { what, why });
            }
        }
        verify::key_matches("CA private key", &files.cert_pem, &files.key_pem)?;
        let key = KeyPair::from_pem(&files.key_pem).map_err(|e| CaError::Load {
            what: "CA private key",
            message: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&files.cert_pem, key).map_err(|e| CaError::Load {
            what: "CA certificate",
            message: e.to_string(),
        })?;
        let chain = pem_blocks(&files.chain_pem);
        let root = chain
            .last()
            .cloned()
            .unwrap_or_else(|| files.cert_pem.clone());
        Ok(Authority {
            issuer,
            files: files.clone(),
            bundle: vec![root],
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The PEM files to persist.
    pub fn files(&self) -> &CaFiles {
        &self.files
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Trust anchors as one PEM bundle (during a rotation, old and new roots).
    pub fn trust_bundle_pem(&self) -> String {
        self.bundle.concat()
    }

    /// The certificates that sign (or, during a rotation overlap, signed) what this CA
    /// issues: the CA certificate itself, then roots kept from before a rotation. Unlike
    /// [`Authority::trust_bundle_pem`], a supplied intermediate appears here instead of the
    /// root above it, so a verifier anchored on these accepts only leaves this CA issued,
    /// never ones from a sibling intermediate under the same root.
    pub fn issuer_anchors_pem(&self) -> Vec<String> {
        let mut out = vec![self.files.cert_pem.clone()];
        out.extend(self.bundle.iter().skip(1).cloned());
        out
    }

    /// Switches to `next` (a new root or intermediate), keeping the current roots in the
    /// trust bundle so that certificates issued before the switch stay valid until they
    /// are renewed. Call [`Authority::end_overlap`] once every workload has renewed.
    pub fn rotate_to(&mut self, next: Authority) {
        let mut bundle = next.bundle.clone();
        for root in &self.bundle {
            if !bundle.contains(root) {
                bundle.push(root.clone());
            }
        }
        *self = Authority { bundle, ..next };
    }

    /// Also trusts `roots_pem` (roots kept from before a rotation), except roots whose
    /// key was published ([`Authority::denied_roots`] says which).
    pub fn with_previous_roots(mut self, roots_pem: &str) -> Self {
        for root in pem_blocks(roots_pem) {
            if deny::first_denied(&root).is_some() {
                continue;
            }
            if !self.bundle.contains(&root) {
                self.bundle.push(root);
            }
        }
        self
    }

    /// Why each root in `roots_pem` that [`Authority::with_previous_roots`] leaves out is
    /// left out.
    pub fn denied_roots(roots_pem: &str) -> Vec<&'static str> {
        pem_blocks(roots_pem)
            .iter()
            .filter_map(|r| deny::first_denied(r))
            .collect()
    }

    /// Drops roots kept from before the last rotation.
    pub fn end_overlap(&mut self) {
        self.bundle.truncate(1);
    }

    /// Issues a workload certificate for `id`, valid from `now` for `lifetime`, with a
    /// key made here. Only for credentials used where the CA runs (the development
    /// bootstrap in manifest mode, tests); workloads send a request instead
    /// ([`Authority::sign_request`]).
    pub fn issue(
        &self,
        id: &SpiffeId,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<WorkloadCert, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let signed = self.sign(&key, id, &[], Usage::Workload, lifetime, now)?;
        Ok(WorkloadCert::with_key(signed, key.serialize_pem()))
    }

    /// Issues a serving certificate for `id` that also names `dns_names`, for the
    /// control plane itself: server authentication only, so it is no client credential
    /// anywhere (the xDS port requires client authentication).
    pub fn issue_server(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<WorkloadCert, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let signed = self.sign(&key, id, dns_names, Usage::Server, lifetime, now)?;
        Ok(WorkloadCert::with_key(signed, key.serialize_pem()))
    }

    /// Signs the key of a request that [`csr::check`] accepted for `id`: a workload
    /// certificate (server and client authentication: it is also the proxy's xDS
    /// credential) valid from `now` for `lifetime`.
    pub fn sign_request(
        &self,
        request: &csr::CheckedRequest,
        id: &SpiffeId,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<SignedCert, CaError> {
        self.sign(&request.0, id, &[], Usage::Workload, lifetime, now)
    }

    fn sign(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        dns_names: &[String],
        usage: Usage,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<SignedCert, CaError> {
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(generate)?;
        let uri = id.to_string().try_into().map_err(generate)?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            Usage::Workload => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let not_before = now - BACKDATE;
        let not_after = now + lifetime;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(generate)?;
        let mut chain = cert.pem();
        if !self.files.chain_pem.is_empty() {
            // An intermediate CA: the chain carries it (the root is in the bundle).
            chain.push_str(&self.files.cert_pem);
        }
        Ok(SignedCert {
            id: id.clone(),
            cert_chain_pem: chain,
            not_before,
            not_after,
            issued_at: now,
        })
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usage {
    /// A workload: mesh mTLS both ways, and its proxy's xDS client credential.
    Workload,
    /// A server only (the control plane's serving certificate).
    Server,
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
