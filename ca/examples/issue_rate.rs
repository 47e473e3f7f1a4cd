//! Certificate issuance rate on one thread, the two ways side by side in one run:
//!
//! - `request`: what the control plane does per agent request now: check a PKCS#10
//!   request (parse, verify its signature, key type, exactly the caller's SPIFFE ID) and
//!   sign its public key. The agent's key generation and request happen in the pod and
//!   are made before timing (a pool reused round robin).
//! - `keygen`: the earlier path, where the control plane made the key too (key
//!   generation, signing, PEM of both).
//!
//! `cargo run --release -p ca --example issue_rate -- [SECONDS_EACH]`

use std::time::{Duration, Instant, SystemTime};

fn rate(
    secs: u64,
    mut one: impl FnMut(usize) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    for i in 0..200 {
        one(i)?; // warm up
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..100 {
            one(n as usize)?;
            n += 1;
        }
    }
    Ok((n, n as f64 / start.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let now = SystemTime::now();
    let ca = ca::Authority::generate_root("cluster.local", now)?;
    let ids: Vec<ca::SpiffeId> = (0..100)
        .map(|i| format!("spiffe://cluster.local/ns/ns{}/sa/sa{i}", i % 50).parse())
        .collect::<Result<_, _>>()?;
    let requests: Vec<String> = ids
        .iter()
        .map(|id| ca::csr::KeyAndRequest::generate(id).map(|r| r.csr_pem))
        .collect::<Result<_, _>>()?;
    let (n, per_s) = rate(secs, |i| {
        let k = i % ids.len();
        let checked = ca::csr::check(&requests[k], &ids[k])?;
        let cert = ca.sign_request(&checked, &ids[k], ca::DEFAULT_LIFETIME, now)?;
        std::hint::black_box(&cert);
        Ok(())
    })?;
    println!("request: {n} certificates in {secs} s: {per_s:.0} certs/s on one thread");
    let (n, per_s) = rate(secs, |i| {
        let cert = ca.issue(&ids[i % ids.len()], ca::DEFAULT_LIFETIME, now)?;
        std::hint::black_box(&cert);
        Ok(())
    })?;
    println!("keygen:  {n} certificates in {secs} s: {per_s:.0} certs/s on one thread");
    Ok(())
}
