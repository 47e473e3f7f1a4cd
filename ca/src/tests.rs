use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;
use crate::certs::DEFAULT_LIFETIME;

fn der_of(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| p.expect("pem").contents)
        .collect()
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).expect("id")
}

/// Verifies `cert` (leaf + intermediates PEM) against `bundle` with webpki, at `at`.
fn verify(cert_chain: &str, bundle: &str, at: SystemTime) -> Result<(), webpki::Error> {
    let chain = der_of(cert_chain);
    let roots = der_of(bundle);
    let root_ders: Vec<rustls_pki_types::CertificateDer<'_>> =
        roots.iter().map(|d| d.as_slice().into()).collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|d| {
            webpki::anchor_from_trusted_cert(d)
                .expect("anchor")
                .to_owned()
        })
        .collect();
    let leaf_der: rustls_pki_types::CertificateDer<'_> = chain[0].as_slice().into();
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)?;
    let inter: Vec<rustls_pki_types::CertificateDer<'_>> =
        chain[1..].iter().map(|d| d.as_slice().into()).collect();
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(drop)
}

#[test]
fn workload_certs_chain_to_the_root_and_carry_the_spiffe_id() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let cert = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    verify(&cert.cert_chain_pem, &ca.trust_bundle_pem(), now).expect("chain verifies");
    let der = &der_of(&cert.cert_chain_pem)[0];
    let (_, x509) = X509Certificate::from_der(der).expect("parse");
    let sans = x509.subject_alternative_name().expect("ext").expect("san");
    let uris: Vec<String> = sans
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, ["spiffe://cluster.local/ns/shop/sa/web"]);
    assert!(!x509.is_ca());
    // A certificate from another CA does not verify against this bundle.
    let other = Authority::generate_root("cluster.local", now).expect("root");
    let foreign = other
        .issue(&id("web"), DEFAULT_LIFETIME, now)
        .expect("issue");
    assert!(verify(&foreign.cert_chain_pem, &ca.trust_bundle_pem(), now).is_err());
}

#[test]
fn lifetime_and_renewal_at_half_life() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let cert = ca
        .issue(&id("web"), Duration::from_secs(60), now)
        .expect("issue");
    assert_eq!(cert.not_after, now + Duration::from_secs(60));
    assert_eq!(cert.renew_at(), now + Duration::from_secs(30));
    assert!(
        verify(
            &cert.cert_chain_pem,
            &ca.trust_bundle_pem(),
            now + Duration::from_secs(59)
        )
        .is_ok()
    );
    assert!(
        verify(
            &cert.cert_chain_pem,
            &ca.trust_bundle_pem(),
            now + Duration::from_secs(120)
        )
        .is_err(),
        "expired"
    );
    let ders = der_of(&cert.cert_chain_pem);
    let (_, x509) = X509Certificate::from_der(&ders[0]).expect("parse");
    let days = x509
        .validity()
        .time_to_expiration()
        .map(|d| d.whole_seconds());
    assert!(days.is_some_and(|s| s <= 60), "{days:?}");
}

#[test]
fn persisted_root_is_reused_after_restart() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let before = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("ca.crt"), &ca.files().cert_pem).expect("write");
    std::fs::write(dir.path().join("ca.key"), &ca.files().key_pem).expect("write");
    let files = CaFiles {
        cert_pem: std::fs::read_to_string(dir.path().join("ca.crt")).expect("read"),
        key_pem: std::fs::read_to_string(dir.path().join("ca.key")).expect("read"),
        chain_pem: String::new(),
    };
    let restarted = Authority::from_files("cluster.local", &files).expect("load");
    assert_eq!(restarted.trust_bundle_pem(), ca.trust_bundle_pem());
    let after = restarted
        .issue(&id("api"), DEFAULT_LIFETIME, now)
        .expect("issue");
    verify(&before.cert_chain_pem, &restarted.trust_bundle_pem(), now)
        .expect("old certs still verify");
    verify(&after.cert_chain_pem, &ca.trust_bundle_pem(), now)
        .expect("new certs chain to the same root");
}

#[test]
fn a_supplied_intermediate_signs_and_its_root_anchors() {
    let now = SystemTime::now();
    let root = Authority::generate_root("cluster.local", now).expect("root");
    // An intermediate made by the root (as an organisation's PKI would hand over).
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "intermediate");
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + Duration::from_secs(3600 * 24 * 30)).into();
    let inter = params.signed_by(&key, &root.issuer).expect("sign");
    let files = CaFiles {
        cert_pem: inter.pem(),
        key_pem: key.serialize_pem(),
        chain_pem: root.files().cert_pem.clone(),
    };
    let ca = Authority::from_files("cluster.local", &files).expect("intermediate");
    assert_eq!(
        ca.trust_bundle_pem(),
        root.files().cert_pem,
        "the root is the anchor"
    );
    let cert = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    assert_eq!(der_of(&cert.cert_chain_pem).len(), 2, "leaf + intermediate");
    verify(&cert.cert_chain_pem, &ca.trust_bundle_pem(), now)
        .expect("verifies through the intermediate");
}

#[test]
fn rotation_keeps_old_and_new_roots_during_the_overlap() {
    let now = SystemTime::now();
    let mut ca = Authority::generate_root("cluster.local", now).expect("root");
    let old_cert = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    ca.rotate_to(Authority::generate_root("cluster.local", now).expect("new root"));
    let new_cert = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    let bundle = ca.trust_bundle_pem();
    assert_eq!(der_of(&bundle).len(), 2);
    verify(&old_cert.cert_chain_pem, &bundle, now).expect("old still trusted");
    verify(&new_cert.cert_chain_pem, &bundle, now).expect("new trusted");
    ca.end_overlap();
    assert!(verify(&old_cert.cert_chain_pem, &ca.trust_bundle_pem(), now).is_err());
}

#[test]
fn keys_never_show_in_debug_output() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let cert = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    for text in [
        format!("{ca:?}"),
        format!("{cert:?}"),
        format!("{:?}", ca.files()),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
    assert!(cert.private_key_pem().contains("PRIVATE KEY"));
}

#[test]
fn spiffe_ids_parse_and_print() {
    let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web"
        .parse()
        .expect("parse");
    assert_eq!(id.service_account, "web");
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
    for bad in [
        "http://x/ns/a/sa/b",
        "spiffe://td/ns/a",
        "spiffe://td/ns/A/sa/b",
        "spiffe://td/ns//sa/b",
    ] {
        assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
    }
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
    let now = SystemTime::now();
    let a = Authority::generate_root("cluster.local", now).expect("a");
    let b = Authority::generate_root("cluster.local", now).expect("b");
    let mixed = CaFiles {
        cert_pem: a.files().cert_pem.clone(),
        key_pem: b.files().key_pem.clone(),
        chain_pem: String::new(),
    };
    let err = Authority::from_files("cluster.local", &mixed).expect_err("mismatch");
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[test]
fn certificates_read_back_are_checked_against_the_ca() {
    let now = SystemTime::now();
    let ca = Authority::generate_root("cluster.local", now).expect("root");
    let other = Authority::generate_root("cluster.local", now).expect("other");
    let cert = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    ca.verify_issued(&cert, now).expect("ours");
    assert!(other.verify_issued(&cert, now).is_err(), "another CA's");
    let lying = WorkloadCert::restore(
        id("admin"),
        cert.cert_chain_pem.clone(),
        cert.private_key_pem().into(),
        now,
        now + DEFAULT_LIFETIME,
    );
    assert!(ca.verify_issued(&lying, now).is_err(), "a wrong id");
    let other_key = ca.issue(&id("web"), DEFAULT_LIFETIME, now).expect("issue");
    let swapped = WorkloadCert::restore(
        id("web"),
        cert.cert_chain_pem.clone(),
        other_key.private_key_pem().into(),
        now,
        now + DEFAULT_LIFETIME,
    );
    assert!(ca.verify_issued(&swapped, now).is_err(), "a wrong key");
    // With a supplied intermediate, its own leaves verify.
    let inter = Authority::from_files(
        "cluster.local",
        &ca.issue_intermediate("mesh", now).expect("intermediate"),
    )
    .expect("load");
    let leaf = inter
        .issue(&id("web"), DEFAULT_LIFETIME, now)
        .expect("issue");
    inter
        .verify_issued(&leaf, now)
        .expect("intermediate's leaf");
}
