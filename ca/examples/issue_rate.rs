//! Certificate issuance rate on one thread: key generation, signing, PEM encoding and
//! the identity check (SPIFFE ID parse + validation), per certificate.
//!
//! `cargo run --release -p ca --example issue_rate -- [SECONDS]`

use std::time::{Duration, Instant, SystemTime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let now = SystemTime::now();
    let ca = ca::Authority::generate_root("cluster.local", now)?;
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("spiffe://cluster.local/ns/ns{}/sa/sa{i}", i % 50))
        .collect();
    // Warm up.
    for id in ids.iter().take(200) {
        ca.issue(&id.parse()?, ca::DEFAULT_LIFETIME, now)?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for id in ids.iter().take(100) {
            let id: ca::SpiffeId = id.parse()?;
            let cert = ca.issue(&id, ca::DEFAULT_LIFETIME, now)?;
            std::hint::black_box(&cert);
            n += 1;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "issued {n} certificates in {:.2}s: {rate:.0} certs/s on one thread",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
