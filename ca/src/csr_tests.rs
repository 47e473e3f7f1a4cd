use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::csr::{CsrError, KeyAndRequest, check};
use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256,
    SanType,
};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).expect("id")
}

fn leaf(chain_pem: &str) -> Vec<u8> {
    x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem")
        .contents
}

/// A request with arbitrary names, made the way a hostile caller would.
fn request_for(names: &[&str], key: &KeyPair, ca: bool) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = DistinguishedName::new();
    for n in names {
        let san = if n.contains("://") {
            SanType::URI((*n).to_string().try_into().expect("uri"))
        } else {
            SanType::DnsName((*n).to_string().try_into().expect("dns"))
        };
        params.subject_alt_names.push(san);
    }
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
        .serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn a_request_is_signed_for_its_own_key_and_the_authenticated_identity() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let me = id("web");
    let req = KeyAndRequest::generate(&me).expect("request");
    assert!(
        !req.csr_pem.contains("PRIVATE KEY"),
        "only the request travels"
    );
    let checked = check(&req.csr_pem, &me).expect("valid request");
    let signed = ca
        .sign_request(&checked, &me, Duration::from_secs(600), now)
        .expect("signed");
    assert_eq!(signed.not_after, now + Duration::from_secs(600));
    let der = leaf(&signed.cert_chain_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("parse");
    let key = KeyPair::from_pem(&req.key_pem).expect("key");
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the certificate is for the workload's own key"
    );
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .expect("ext")
        .expect("san")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [me.to_string()]);
    // The chain and the workload's key verify together as an issued certificate.
    let restored = WorkloadCert::restore(
        me.clone(),
        signed.cert_chain_pem.clone(),
        req.key_pem.clone(),
        now,
        signed.not_after,
    );
    ca.verify_issued(&restored, now)
        .expect("verifies with its key");
    assert!(!format!("{req:?}").contains("PRIVATE KEY"));
}

#[test]
fn requests_for_other_or_extra_identities_are_refused() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let me = id("web");
    let other = id("admin").to_string();
    let mine = me.to_string();
    let cases: [(&[&str], &str); 4] = [
        (&[other.as_str()], "admin"),
        (&[mine.as_str(), other.as_str()], "admin"),
        (&[mine.as_str(), "evil.example.com"], "evil.example.com"),
        (&[], "no name"),
    ];
    for (names, shown) in cases {
        let err = check(&request_for(names, &key, false), &me).expect_err("refused");
        assert!(
            matches!(&err, CsrError::Identity { asked, .. } if asked.contains(shown)),
            "{names:?}: {err}"
        );
        assert!(
            err.to_string().contains(&mine),
            "names the expected id: {err}"
        );
    }
    let err = check(&request_for(&[mine.as_str()], &key, true), &me).expect_err("a CA");
    assert_eq!(err, CsrError::AsksForCa);
}

#[test]
fn forged_malformed_and_foreign_key_requests_are_refused() {
    let me = id("web");
    let good = KeyAndRequest::generate(&me).expect("request");
    // A signature made by another key over the same contents: flip a byte of the
    // signature at the end of the DER.
    let pem = x509_parser::pem::Pem::iter_from_buffer(good.csr_pem.as_bytes())
        .next()
        .expect("block")
        .expect("pem");
    let mut der = pem.contents.clone();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let forged_pem = pem_of("CERTIFICATE REQUEST", &der);
    assert_eq!(check(&forged_pem, &me).err(), Some(CsrError::BadSignature));
    // Not a request at all: a certificate.
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    assert!(matches!(
        check(&ca.files().cert_pem, &me),
        Err(CsrError::Malformed(_))
    ));
    assert!(matches!(check("junk", &me), Err(CsrError::Malformed(_))));
    let huge = "A".repeat(csr::MAX_REQUEST_PEM_BYTES + 1);
    assert_eq!(check(&huge, &me).err(), Some(CsrError::TooLarge));
    // Another key type.
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    let err = check(&request_for(&[me.to_string().as_str()], &p384, false), &me)
        .expect_err("P-384 refused");
    assert!(matches!(err, CsrError::KeyType(_)), "{err}");
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let body = base64_lite::encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Standard base64 without a dependency (tests only).
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[test]
fn the_serving_certificate_is_no_client_credential() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let cp = SpiffeId::new("cluster.local", "rudder-system", "rudder").expect("id");
    let serving = ca
        .issue_server(
            &cp,
            &["rudder.rudder-system.svc".into()],
            DEFAULT_LIFETIME,
            now,
        )
        .expect("issue");
    let der = leaf(&serving.cert_chain_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("parse");
    let eku = cert
        .extended_key_usage()
        .expect("ext")
        .expect("eku")
        .value
        .clone();
    assert!(eku.server_auth && !eku.client_auth, "{eku:?}");
    let workload = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    let der = leaf(&workload.cert_chain_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("parse");
    let eku = cert.extended_key_usage().expect("ext").expect("eku").value;
    assert!(eku.server_auth && eku.client_auth, "{eku:?}");
}

#[test]
fn the_published_development_root_is_refused() {
    let published = include_str!("testdata/published-root.crt");
    let now = SystemTime::now();
    let fresh = Authority::generate_root("cluster.local", now).expect("root");
    // As the signing CA (refused before its key is even looked at).
    let as_ca = CaFiles {
        cert_pem: published.into(),
        key_pem: fresh.files().key_pem.clone(),
        chain_pem: String::new(),
    };
    let err = Authority::from_files("cluster.local", &as_ca).expect_err("denied");
    assert!(
        matches!(err, CaError::Denied { .. }) && err.to_string().contains("published key"),
        "{err}"
    );
    // As the root above a supplied intermediate.
    let inter = fresh.issue_intermediate("mesh", now).expect("intermediate");
    let above = CaFiles {
        chain_pem: format!("{}{published}", inter.chain_pem),
        ..inter
    };
    assert!(matches!(
        Authority::from_files("cluster.local", &above),
        Err(CaError::Denied { .. })
    ));
    // As a root kept from before a rotation: left out of the trust bundle.
    let kept = fresh.with_previous_roots(published);
    assert!(!kept.trust_bundle_pem().contains(published.trim()));
    assert_eq!(Authority::denied_roots(published).len(), 1);
}
