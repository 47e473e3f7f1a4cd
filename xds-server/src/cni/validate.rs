//! `rudder-cni validate`: the unprivileged first init container of a pod injected in CNI
//! mode. It proves the pod's outbound traffic is intercepted before anything else runs:
//! it listens on the sidecar's outbound port, connects to an address outside the pod as
//! an ordinary UID, and passes only if its own listener receives the connection (with
//! the random token it sent). A node where the plugin did not run (the DaemonSet not yet
//! there, its entry gone from the node's configuration) fails the pod instead of letting
//! it run meshed in name only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Checks interception: `Ok` once a connection to `probe` arrived on `outbound_port`.
pub(crate) async fn validate(
    outbound_port: u16,
    probe: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", outbound_port))
        .await
        .map_err(|e| format!("listening on the outbound port {outbound_port}: {e}"))?;
    let token: [u8; 16] = rand::random();
    let not_intercepted = |why: String| {
        format!(
            "outbound traffic is not intercepted (a connection to {probe} {why}): the \
             rudder-cni plugin did not install this pod's rules; is the rudder-cni \
             DaemonSet running on this node?"
        )
    };
    let connect = async {
        let mut s = tokio::net::TcpStream::connect(probe)
            .await
            .map_err(|e| not_intercepted(format!("failed: {e}")))?;
        s.write_all(&token)
            .await
            .map_err(|e| not_intercepted(format!("failed: {e}")))?;
        Ok::<_, String>(s)
    };
    let accept = async {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let mut got = [0u8; 16];
            if conn.read_exact(&mut got).await.is_ok() && got == token {
                return;
            }
        }
    };
    let both = async {
        let (client, ()) = tokio::join!(connect, accept);
        client.map(drop)
    };
    tokio::time::timeout(timeout, both).await.map_err(|_| {
        not_intercepted(format!(
            "did not reach the outbound port within {timeout:?}"
        ))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_is_not_redirected_fails_and_says_why() {
        // Without rules the probe's connection goes where it is addressed (here a port
        // that answers, but is not ours), and never reaches the outbound port.
        let other = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let probe = other.local_addr().expect("addr");
        let free = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let e = validate(port, probe, Duration::from_millis(500))
            .await
            .expect_err("not intercepted");
        assert!(
            e.contains("not intercepted") && e.contains("rudder-cni"),
            "{e}"
        );
        // A connection to the outbound port itself carries the token: it passes.
        let free = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let own = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(validate(port, own, Duration::from_secs(5)).await, Ok(()));
    }
}
