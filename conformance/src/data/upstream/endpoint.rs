//! One endpoint's run-time state: its idle HTTP/1.1 connections, its HTTP/2
//! connection, and its requests in flight (what the pools in `pool` use and the
//! balancer reads).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::client::conn::{http1, http2};
use parking_lot::Mutex;

use super::io::Body;

/// Idle HTTP/1.1 connections kept per endpoint: Envoy's default connection circuit
/// breaker (1,024), so a burst of concurrent requests leaves connections to reuse rather
/// than a new connection (and TLS handshake) for every request above a smaller cap.
const MAX_IDLE_H1: usize = 1024;

#[derive(Debug)]
pub(super) struct H1 {
    pub(super) sender: http1::SendRequest<Body>,
    pub(super) used: u32,
}

/// One endpoint's pools and in-flight count.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(super) addr: SocketAddr,
    pub(super) active: AtomicU64,
    pub(super) h1: Mutex<Vec<H1>>,
    pub(super) h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
}

impl EndpointState {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        EndpointState {
            addr,
            active: AtomicU64::new(0),
            h1: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
        }
    }

    /// Requests in flight to this endpoint.
    pub(crate) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether a request is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.active() > 0
    }

    pub(super) fn idle_h1(&self) -> Option<H1> {
        let mut idle = self.h1.lock();
        idle.retain(|c| !c.sender.is_closed());
        let i = idle.iter().position(|c| c.sender.is_ready())?;
        Some(idle.swap_remove(i))
    }

    pub(super) fn put_h1(&self, c: H1, limit: Option<u32>) {
        if c.sender.is_closed() || limit.is_some_and(|l| c.used >= l) {
            return;
        }
        let mut idle = self.h1.lock();
        if idle.len() < MAX_IDLE_H1 {
            idle.push(c);
        }
    }
}
