//! Reading one stream's requests: gRPC length-prefixed messages out of the HTTP/2 body.
//!
//! What a peer declares is never trusted: a message's buffer grows only as its bytes
//! arrive (doubling, never past the declared length), each growth is charged to the
//! stream's identity first ([`super::budget`]), and the buffer is freed (and the charge
//! given back) as soon as the message is decoded. A message that arrived in one piece is
//! decoded from the received bytes without a copy. Once the first byte of a message has
//! arrived, all of it must arrive within the message timeout, or the stream ends.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::Status;
use tonic::body::Body;

use super::budget::{BudgetError, Charge};

/// The gRPC message prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;
/// The first allocation for a message that arrives in pieces.
const FIRST_GROWTH: usize = 16 * 1024;

/// Why a stream's requests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A compressed message.
    #[error("compressed requests are not accepted")]
    Compressed,
    /// A message declared larger than the limit.
    #[error("request too large: {len} bytes, the limit is {limit} bytes (--max-message-bytes)")]
    TooLarge {
        /// Its declared length.
        len: usize,
        /// `--max-message-bytes`.
        limit: usize,
    },
    /// A message started and did not finish in time.
    #[error(
        "a request message of {len} bytes was not completed within {}s of its first byte ({got} bytes arrived; --message-timeout)",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// Its declared length (0 if its prefix did not arrive).
        len: usize,
        /// Bytes of it that arrived.
        got: usize,
        /// `--message-timeout`.
        timeout: Duration,
    },
    /// Its buffer would go past the identity's allowance or the global budget.
    #[error("reading a request: {0}")]
    Budget(#[from] BudgetError),
    /// Not a valid message.
    #[error("malformed request: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The client closed its side inside a message.
    #[error("the request stream ended inside a message")]
    Truncated,
    /// The connection failed or the client reset the stream.
    #[error("reading requests: {0}")]
    Transport(String),
}

impl ReadError {
    /// The limit that refused the stream, as `rudder_xds_refusals_total` labels it; None
    /// when the peer just went away or sent garbage.
    pub(crate) fn limit(&self) -> Option<&'static str> {
        match self {
            ReadError::TooLarge { .. } => Some("message_size"),
            ReadError::Timeout { .. } => Some("message_timeout"),
            ReadError::Budget(e) => Some(e.limit()),
            _ => None,
        }
    }

    /// The status the stream ends with.
    pub fn status(&self) -> Status {
        let msg = self.to_string();
        match self {
            ReadError::Compressed => Status::unimplemented(msg),
            ReadError::TooLarge { .. } | ReadError::Budget(_) => Status::resource_exhausted(msg),
            ReadError::Timeout { .. } => Status::deadline_exceeded(msg),
            ReadError::Malformed(_) | ReadError::Truncated => Status::invalid_argument(msg),
            ReadError::Transport(_) => Status::cancelled(msg),
        }
    }
}

/// Where the reader is in the current message.
#[derive(Debug)]
enum Partial {
    /// Between messages, or inside a prefix (`got` of its 5 bytes).
    Prefix { bytes: [u8; PREFIX], got: usize },
    /// Inside a message of `len` bytes, `body` holding what arrived.
    Body { len: usize, body: Vec<u8> },
}

/// What bounds a stream's reading.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Largest message, in bytes (`--max-message-bytes`).
    pub max_message: usize,
    /// Longest a message may take from its first byte to its last (`--message-timeout`).
    pub timeout: Duration,
}

/// The requests of one stream, decoded one at a time as the stream asks.
pub struct Inbound<T> {
    body: Body,
    /// Received bytes not consumed yet (part of one HTTP/2 DATA frame).
    pending: Bytes,
    partial: Partial,
    limits: ReadLimits,
    /// Set when a message's first byte arrives.
    deadline: Option<Instant>,
    /// The message buffer's charge (None: not charged, in tests).
    charge: Option<Charge>,
    done: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Inbound<T> {
    /// Reads `body` within `limits`, charging message buffers to `charge`.
    pub fn new(body: Body, limits: ReadLimits, charge: Option<Charge>) -> Self {
        Inbound {
            body,
            pending: Bytes::new(),
            partial: Partial::Prefix {
                bytes: [0; PREFIX],
                got: 0,
            },
            limits,
            deadline: None,
            charge,
            done: false,
            _message: PhantomData,
        }
    }

    /// Bytes held for a message in progress.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        match &self.partial {
            Partial::Body { body, .. } => body.capacity(),
            Partial::Prefix { .. } => 0,
        }
    }

    /// The next request; `None` when the client closed its side. Cancel-safe: what
    /// arrived is kept in `self`, and the deadline is not restarted.
    pub async fn message(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(m) = self.consume()? {
                return Ok(Some(m));
            }
            if self.done {
                return match self.partial {
                    Partial::Prefix { got: 0, .. } => Ok(None),
                    _ => Err(ReadError::Truncated),
                };
            }
            let frame = match self.deadline {
                Some(deadline) => {
                    // Checked first: a peer trickling bytes never lets the timer win.
                    if Instant::now() >= deadline {
                        return Err(self.timed_out());
                    }
                    match tokio::time::timeout_at(deadline, self.body.frame()).await {
                        Ok(frame) => frame,
                        Err(_) => return Err(self.timed_out()),
                    }
                }
                None => self.body.frame().await,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
                Some(Err(e)) => return Err(ReadError::Transport(e.to_string())),
                None => self.done = true,
            }
        }
    }

    fn timed_out(&self) -> ReadError {
        let (len, got) = match &self.partial {
            Partial::Prefix { got, .. } => (0, *got),
            Partial::Body { len, body } => (*len, PREFIX + body.len()),
        };
        ReadError::Timeout {
            len,
            got,
            timeout: self.limits.timeout,
        }
    }

    /// Takes what `pending` holds of the current message; the message once whole.
    fn consume(&mut self) -> Result<Option<T>, ReadError> {
        while self.pending.has_remaining() {
            match &mut self.partial {
                Partial::Prefix { bytes, got } => {
                    if *got == 0 {
                        self.deadline = Some(Instant::now() + self.limits.timeout);
                    }
                    let n = (PREFIX - *got).min(self.pending.len());
                    bytes[*got..*got + n].copy_from_slice(&self.pending[..n]);
                    self.pending.advance(n);
                    *got += n;
                    if *got < PREFIX {
                        return Ok(None);
                    }
                    if bytes[0] != 0 {
                        return Err(ReadError::Compressed);
                    }
                    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                    if len > self.limits.max_message {
                        return Err(ReadError::TooLarge {
                            len,
                            limit: self.limits.max_message,
                        });
                    }
                    if self.pending.len() >= len {
                        // Arrived whole: decoded from the received bytes.
                        let message = self.pending.split_to(len);
                        return self.finish(message).map(Some);
                    }
                    self.partial = Partial::Body {
                        len,
                        body: Vec::new(),
                    };
                }
                Partial::Body { len, body } => {
                    let len = *len;
                    let n = (len - body.len()).min(self.pending.len());
                    let needed = body.len() + n;
                    if needed > body.capacity() {
                        // Doubling, never past the declared length; charged first.
                        let grown = needed
                            .max(body.capacity().saturating_mul(2))
                            .max(FIRST_GROWTH)
                            .min(len);
                        if let Some(charge) = &mut self.charge {
                            charge.resize(grown)?;
                        }
                        body.reserve_exact(grown - body.len());
                    }
                    body.extend_from_slice(&self.pending[..n]);
                    self.pending.advance(n);
                    if body.len() == len {
                        let message = Bytes::from(std::mem::take(body));
                        // Freed once decoded: the allocator may give it back.
                        crate::observability::memory::note_freed(message.len());
                        return self.finish(message).map(Some);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Decodes a whole message and gets ready for the next.
    fn finish(&mut self, message: Bytes) -> Result<T, ReadError> {
        self.partial = Partial::Prefix {
            bytes: [0; PREFIX],
            got: 0,
        };
        self.deadline = None;
        let decoded = T::decode(message);
        // The buffer is gone (or, if the decoded message still points into it, goes
        // with the request before the next one is read).
        if let Some(charge) = &mut self.charge {
            let _ = charge.resize(0);
        }
        Ok(decoded?)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use http_body::Frame;
    use prometheus_client::metrics::gauge::Gauge;
    use prost::Message;

    use super::*;
    use crate::config::BudgetConfig;
    use crate::xds::wire::budget::Budget;

    fn framed(m: &impl Message) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).expect("len").to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A body delivering `bytes` in chunks of `chunk`, then ending.
    fn body(bytes: Vec<u8>, chunk: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    /// A body fed by hand: each sent chunk is one frame; it ends when `tx` drops.
    fn fed() -> (tokio::sync::mpsc::UnboundedSender<Vec<u8>>, Body) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        (tx, Body::new(http_body_util::StreamBody::new(stream)))
    }

    use futures::StreamExt;

    fn limits(max_message: usize) -> ReadLimits {
        ReadLimits {
            max_message,
            timeout: Duration::from_secs(10),
        }
    }

    fn req(nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: "t".into(),
            response_nonce: nonce.into(),
            resource_names_subscribe: vec!["x".repeat(40_000)],
            ..Default::default()
        }
    }

    fn account(share: usize) -> (Arc<Budget>, Charge) {
        let b = Budget::new(
            BudgetConfig {
                total: 1 << 30,
                share,
                per_pod: 0,
            },
            Gauge::default(),
        );
        let c = Charge::new(b.account("spiffe://td/ns/a/sa/x", None));
        (b, c)
    }

    #[tokio::test]
    async fn messages_split_and_joined_across_frames_are_read_whole() {
        let mut bytes = framed(&req("1"));
        bytes.extend(framed(&req("2")));
        for chunk in [1, 7, 16_384, bytes.len()] {
            let (b, charge) = account(1 << 20);
            let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(
                body(bytes.clone(), chunk),
                limits(1 << 20),
                Some(charge),
            );
            assert_eq!(inbound.message().await.expect("ok"), Some(req("1")));
            assert_eq!(inbound.message().await.expect("ok"), Some(req("2")));
            assert_eq!(inbound.message().await.expect("ok"), None);
            assert_eq!(inbound.buffered(), 0, "no buffer is kept between messages");
            assert_eq!(b.used(), 0, "and nothing stays charged");
        }
    }

    #[tokio::test]
    async fn a_buffer_grows_as_bytes_arrive_charged_and_given_back() {
        let (b, charge) = account(1 << 20);
        let (tx, body) = fed();
        let mut inbound =
            Inbound::<DeltaDiscoveryRequest>::new(body, limits(1 << 20), Some(charge));
        let msg = framed(&req("1"));
        let declared = msg.len() - PREFIX;
        // The prefix and a little: nothing near the declared length is reserved.
        tx.send(msg[..PREFIX + 100].to_vec()).expect("send");
        tokio::select! {
            _ = inbound.message() => panic!("not whole yet"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert_eq!(inbound.buffered(), FIRST_GROWTH);
        assert_eq!(b.used(), FIRST_GROWTH, "the growth is charged");
        assert!(declared > 2 * FIRST_GROWTH);
        // More arrives: the buffer doubles, never past the declared length.
        tx.send(msg[PREFIX + 100..PREFIX + FIRST_GROWTH + 1].to_vec())
            .expect("send");
        tokio::select! {
            _ = inbound.message() => panic!("not whole yet"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert_eq!(inbound.buffered(), 2 * FIRST_GROWTH);
        assert_eq!(b.used(), 2 * FIRST_GROWTH);
        tx.send(msg[PREFIX + FIRST_GROWTH + 1..].to_vec())
            .expect("send");
        assert_eq!(inbound.message().await.expect("ok"), Some(req("1")));
        assert!(inbound.buffered() == 0 && b.used() == 0, "given back");
    }

    #[tokio::test]
    async fn a_buffer_over_the_identitys_allowance_ends_the_stream_and_gives_back() {
        let (b, charge) = account(20_000);
        let msg = framed(&req("1"));
        let mut inbound =
            Inbound::<DeltaDiscoveryRequest>::new(body(msg, 4096), limits(1 << 20), Some(charge));
        let err = inbound.message().await.expect_err("over the allowance");
        assert_eq!(err.limit(), Some("identity_memory"));
        assert_eq!(err.status().code(), tonic::Code::ResourceExhausted);
        assert!(
            err.to_string().contains("spiffe://td/ns/a/sa/x")
                && err.to_string().contains("--identity-memory-share"),
            "{err}"
        );
        assert_eq!(b.used(), FIRST_GROWTH, "held until the stream goes");
        drop(inbound);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_message_must_arrive_within_the_timeout() {
        let (b, charge) = account(1 << 20);
        let (tx, body) = fed();
        let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(
            body,
            ReadLimits {
                max_message: 1 << 20,
                timeout: Duration::from_secs(10),
            },
            Some(charge),
        );
        // A whole message is fine however late it comes; the clock starts at a first byte.
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(framed(&req("1"))).expect("send");
        assert_eq!(inbound.message().await.expect("ok"), Some(req("1")));
        // All but the last byte of the next: cut 10 s after its first byte.
        let msg = framed(&req("2"));
        tx.send(msg[..msg.len() - 1].to_vec()).expect("send");
        let started = Instant::now();
        let err = inbound.message().await.expect_err("cut");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(err.limit(), Some("message_timeout"));
        assert_eq!(err.status().code(), tonic::Code::DeadlineExceeded);
        assert!(err.to_string().contains("--message-timeout"), "{err}");
        drop(inbound);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_of_bytes_does_not_extend_the_deadline() {
        let (tx, body) = fed();
        let mut inbound = Inbound::<DeltaDiscoveryRequest>::new(body, limits(1 << 20), None);
        let msg = framed(&req("1"));
        let feeder = tokio::spawn(async move {
            for b in msg {
                if tx.send(vec![b]).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let started = Instant::now();
        let err = inbound.message().await.expect_err("cut");
        assert!(matches!(err, ReadError::Timeout { .. }), "{err}");
        assert!(started.elapsed() <= Duration::from_millis(10_500));
        feeder.abort();
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_it_is_read() {
        let bytes = framed(&req("1"));
        let mut inbound =
            Inbound::<DeltaDiscoveryRequest>::new(body(bytes[..5].to_vec(), 5), limits(1000), None);
        let err = inbound.message().await.expect_err("too large");
        assert_eq!(err.status().code(), tonic::Code::ResourceExhausted);
        assert_eq!(err.limit(), Some("message_size"));
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[tokio::test]
    async fn compressed_truncated_and_malformed_requests_end_the_stream() {
        let mut compressed = framed(&req("1"));
        compressed[0] = 1;
        let mut inbound =
            Inbound::<DeltaDiscoveryRequest>::new(body(compressed, 64), limits(1 << 20), None);
        assert_eq!(
            inbound
                .message()
                .await
                .expect_err("compressed")
                .status()
                .code(),
            tonic::Code::Unimplemented
        );
        let mut truncated = framed(&req("1"));
        truncated.truncate(100);
        let mut inbound =
            Inbound::<DeltaDiscoveryRequest>::new(body(truncated, 64), limits(1 << 20), None);
        assert_eq!(
            inbound
                .message()
                .await
                .expect_err("truncated")
                .status()
                .code(),
            tonic::Code::InvalidArgument
        );
        let garbage = vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let mut inbound =
            Inbound::<DeltaDiscoveryRequest>::new(body(garbage, 64), limits(1 << 20), None);
        let err = inbound.message().await.expect_err("garbage");
        assert_eq!(err.status().code(), tonic::Code::InvalidArgument);
        assert_eq!(err.limit(), None);
    }
}
