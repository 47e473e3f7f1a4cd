//! Peers that misbehave at a sidecar's ports, on each proxy: garbage bytes, a header
//! block over the limit, and connections that never finish their TLS handshake. Each is
//! refused or closed on its own connection; everyone else keeps being served.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Mesh, ip};
use testbed::procs::{DataPlane, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` and reads until the peer closes (or 10 s pass): what came back.
async fn send_and_read(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    anyhow::ensure!(
        read.is_ok(),
        "the connection stayed open after {bytes:.40?}"
    );
    Ok(out)
}

fn status_of(reply: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(reply);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn misbehaving_peers_are_contained(proxy: DataPlane) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let outbound = mesh.client.outbound;

    // Garbage instead of HTTP: refused with a 4xx (Envoy: 400, or 426 for an unknown
    // HTTP version) or closed; the connection ends.
    for garbage in [
        &b"\x16\x03\x01\x00\x05hello\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\nHost: web\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ] {
        let reply = send_and_read(outbound, garbage).await?;
        let status = status_of(&reply);
        assert!(
            reply.is_empty() || status.is_some_and(|s| (400..500).contains(&s)),
            "{}: {garbage:?} got {:?}",
            proxy.name(),
            String::from_utf8_lossy(&reply)
        );
    }

    // A header block over the 60 KiB default: 431, and the connection ends.
    let big = format!(
        "GET http://web/ HTTP/1.1\r\nHost: web\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let reply = send_and_read(outbound, big.as_bytes()).await?;
    assert_eq!(
        status_of(&reply),
        Some(431),
        "{}: {:?}",
        proxy.name(),
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );

    // Connections to a pod's mTLS port that never start their handshake, and some that
    // send half a ClientHello: requests through the mesh to that pod still work.
    let inbound = SocketAddr::new(ip(22), mesh.web_port);
    let mut idle = Vec::new();
    for i in 0..32 {
        let mut s = TcpStream::connect(inbound).await?;
        if i % 2 == 0 {
            s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                .await?;
        }
        idle.push(s);
    }
    let seen = mesh.answering("web", 20).await?;
    assert!(
        seen.contains_key("web-1"),
        "{}: web-1 still answers while 32 handshakes hang: {seen:?}",
        proxy.name()
    );
    drop(idle);
    let mut sidecars = mesh;
    sidecars.client.check_running()?;
    for s in sidecars.sidecars.values_mut() {
        s.check_running()?;
    }
    Ok(())
}

common::on_each_proxy!(misbehaving_peers_are_contained);
