//! The floor: the same bytes, pre-encoded, written to P plain TCP connections by a
//! server on the control plane's core. Nothing can converge faster than this on this
//! machine; the benchmark reports the control plane as a ratio to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves the floor: accepts `proxies` connections, then on each line `N` read from the
/// control connection (the first one accepted) writes N bytes to every other connection.
pub async fn serve(listener: TcpListener, proxies: usize) -> anyhow::Result<()> {
    let (mut control, _) = listener.accept().await?;
    let mut conns = Vec::with_capacity(proxies);
    for _ in 0..proxies {
        let (c, _) = listener.accept().await?;
        c.set_nodelay(true)?;
        conns.push(c);
    }
    let mut conns: Vec<Arc<tokio::sync::Mutex<TcpStream>>> = conns
        .into_iter()
        .map(|c| Arc::new(tokio::sync::Mutex::new(c)))
        .collect();
    let mut buf = [0u8; 16];
    loop {
        let n = control.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let size: usize = std::str::from_utf8(&buf[..n])?.trim().parse()?;
        let payload: Arc<Vec<u8>> = Arc::new(vec![7u8; size]);
        let mut tasks = Vec::with_capacity(conns.len());
        for c in &mut conns {
            let (c, payload) = (c.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let _ = c.lock().await.write_all(&payload).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Connects `proxies` clients to a floor server at `addr`, triggers one write of `size`
/// bytes, and returns each client's time from the trigger to having all bytes.
pub async fn measure(
    addr: SocketAddr,
    proxies: usize,
    size: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut control = TcpStream::connect(addr).await.context("floor control")?;
    let mut clients = Vec::with_capacity(proxies);
    for _ in 0..proxies {
        let c = TcpStream::connect(addr).await.context("floor client")?;
        c.set_nodelay(true)?;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(proxies);
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while got < size {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            start.elapsed()
        }));
    }
    control.write_all(format!("{size}\n").as_bytes()).await?;
    let mut out = Vec::with_capacity(proxies);
    for t in tasks {
        out.push(t.await?);
    }
    Ok(out)
}
