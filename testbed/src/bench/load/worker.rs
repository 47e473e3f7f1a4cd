//! One worker (one thread's share of the connections and of the rate): the schedule of
//! intended send times, the slots that send (one per HTTP/1.1 connection, many per
//! HTTP/2 connection) and the worker's recorder.
//!
//! A slot is a task that claims the next request of the schedule, waits for its
//! intended time (open loop) and sends it on its connection. Latency is measured from
//! the intended time, so time spent waiting for a free slot (every connection busy)
//! counts: a stalled proxy shows in the percentiles, not only in one slow sample
//! (coordinated omission). Only the timer's own lateness when a slot was idle, at most
//! `TIMER_SLACK`, is left out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::conn::{Dialer, Failure, ReqBody, Sender, send};
use super::stats::Recorder;

/// How late the timer may wake a slot without it counting as latency (tokio's timer
/// granularity).
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// When the requests of one worker are due.
pub(crate) struct Schedule {
    next: AtomicU64,
    t0: Instant,
    warmup_end: Instant,
    end: Instant,
    /// Open loop: the global rate, and this worker's requests are the global indices
    /// `phase + i * stride`. None: closed loop.
    open: Option<(f64, u64, u64)>,
}

/// A claimed request.
pub(crate) enum Claim {
    /// Send at `intended`; record it when `recorded` (not warm-up).
    Send { intended: Instant, recorded: bool },
    /// The window is over.
    Stop,
}

impl Schedule {
    pub(crate) fn new(
        t0: Instant,
        warmup: Duration,
        duration: Duration,
        open: Option<(f64, u64, u64)>,
    ) -> Self {
        Schedule {
            next: AtomicU64::new(0),
            t0,
            warmup_end: t0 + warmup,
            end: t0 + warmup + duration,
            open,
        }
    }

    pub(crate) fn claim(&self) -> Claim {
        let intended = match self.open {
            Some((rate, phase, stride)) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                let global = phase + i * stride;
                self.t0 + Duration::from_secs_f64(global as f64 / rate)
            }
            None => Instant::now(),
        };
        if intended >= self.end {
            return Claim::Stop;
        }
        Claim::Send {
            intended,
            recorded: intended >= self.warmup_end,
        }
    }

    /// Claims what is left of the window after the slots stopped, counting the
    /// recorded requests among them (never sent: the generator fell behind).
    pub(crate) fn drain_unsent(&self) -> u64 {
        if self.open.is_none() {
            return 0;
        }
        let mut unsent = 0;
        while let Claim::Send { recorded, .. } = self.claim() {
            unsent += u64::from(recorded);
        }
        unsent
    }
}

/// The request every slot sends, built once.
#[derive(Clone)]
pub(crate) struct Template {
    pub(crate) uri: Uri,
    /// `Host` for HTTP/1.1 (HTTP/2 carries `:authority` in the URI).
    pub(crate) host: Option<HeaderValue>,
    pub(crate) body: Bytes,
    pub(crate) timeout: Duration,
}

impl Template {
    fn request(&self) -> Request<ReqBody> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        if let Some(host) = &self.host {
            req.headers_mut().insert(HOST, host.clone());
        }
        req
    }
}

/// One HTTP/2 connection shared by its slots; re-opened by the first slot that finds
/// it closed.
pub(crate) struct SharedH2 {
    sender: Mutex<Option<http2::SendRequest<ReqBody>>>,
    dialing: tokio::sync::Mutex<()>,
}

impl SharedH2 {
    pub(crate) fn new(first: Option<Sender>) -> Self {
        let sender = match first {
            Some(Sender::H2(s)) => Some(s),
            _ => None,
        };
        SharedH2 {
            sender: Mutex::new(sender),
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Sender> {
        self.sender
            .lock()
            .as_ref()
            .filter(|s| !s.is_closed())
            .map(|s| Sender::H2(s.clone()))
    }

    async fn get(&self, dialer: &Dialer) -> Result<Sender, Failure> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let sender = dialer.dial().await?;
        if let Sender::H2(s) = &sender {
            *self.sender.lock() = Some(s.clone());
        }
        Ok(sender)
    }
}

/// A sender of requests, one at a time: owns an HTTP/1.1 connection, or uses a shared
/// HTTP/2 one.
pub(crate) struct Slot {
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) shared: Option<Arc<SharedH2>>,
    pub(crate) cached: Option<Sender>,
}

impl Slot {
    async fn sender(&mut self) -> Result<&mut Sender, Failure> {
        if self.cached.as_ref().is_some_and(Sender::is_closed) {
            self.cached = None;
        }
        let sender = match self.cached.take() {
            Some(s) => s,
            None => match &self.shared {
                Some(shared) => shared.get(&self.dialer).await?,
                None => self.dialer.dial().await?,
            },
        };
        Ok(self.cached.insert(sender))
    }

    async fn send_one(&mut self, template: &Template) -> Result<u64, Failure> {
        let attempt = async {
            let sender = self.sender().await?;
            send(sender, template.request()).await
        };
        match tokio::time::timeout(template.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Sends claimed requests until the schedule stops.
    pub(crate) async fn run(
        mut self,
        schedule: Arc<Schedule>,
        template: Arc<Template>,
        recorder: Arc<Mutex<Recorder>>,
    ) {
        loop {
            let Claim::Send { intended, recorded } = schedule.claim() else {
                return;
            };
            let start = if intended > Instant::now() {
                tokio::time::sleep_until(intended).await;
                // The timer fires on whole milliseconds, up to one after the deadline:
                // that lateness is the generator's and is not counted; beyond it (the
                // generator starved of CPU) it is.
                Instant::now().min(intended + TIMER_SLACK)
            } else if Instant::now() >= schedule.end {
                recorder.lock().unsent(u64::from(recorded));
                return;
            } else {
                // Overdue: every slot was busy. The wait is latency.
                intended
            };
            let result = self.send_one(&template).await;
            let latency = start.elapsed();
            match result {
                Ok(bytes) if recorded => recorder.lock().ok(latency, bytes),
                Ok(_) => {}
                Err(failure) => self.failed(failure, recorded, &schedule, &recorder).await,
            }
        }
    }

    async fn failed(
        &mut self,
        failure: Failure,
        recorded: bool,
        schedule: &Schedule,
        recorder: &Mutex<Recorder>,
    ) {
        // A connection that failed a request (timeout, reset, TLS) is not trusted with
        // the next one: HTTP/1.1 re-dials, HTTP/2 takes the shared connection again
        // (re-dialed once it is closed).
        if !matches!(failure, Failure::Status(_)) {
            self.cached = None;
        }
        if recorded {
            recorder.lock().failed(failure);
        }
        if failure == Failure::Connect && schedule.open.is_none() {
            // Closed loop against a refusing peer: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
