//! Request bodies kept for retries and mirrors. A body streams to the first try at once
//! (a streaming upload or a gRPC stream is never held back), while a copy of up to
//! [`REPLAY_LIMIT`] bytes is kept: a retry replays the copy and continues with the rest,
//! and mirrors get the whole body once it has been read. A larger body (or one with
//! trailers) is sent once: no retry, no mirror.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use parking_lot::Mutex;

use crate::data::upstream::io::{Body, BoxError};

/// The largest request body kept for retries and mirrors (Envoy's default buffer limit
/// is 1 MiB per stream; this proxy keeps less per request, since up to 1,024 streams of
/// one connection may each hold a copy, and says so in README's limits).
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body, kept for replay while it streams, or sent once.
#[derive(Debug)]
pub(crate) enum Kept {
    /// Known whole (an empty body): every try and mirror gets a copy.
    Whole(Bytes),
    /// Streams to the first try; a copy is kept for the next ones.
    Tee(Arc<Mutex<Tee>>),
    /// Sent once.
    Streaming(Body),
}

/// What a teed body has read so far, and the rest of it.
#[derive(Debug, Default)]
pub(crate) struct Tee {
    /// The data frames read so far (empty once spoiled).
    chunks: Vec<Bytes>,
    /// Their length.
    len: usize,
    /// The part not read yet.
    rest: Option<Body>,
    /// The whole body has been read.
    done: bool,
    /// Too large, trailers, or an error: it cannot be replayed.
    spoiled: bool,
}

impl Kept {
    /// Keeps `body` for retries and mirrors (without waiting for any of it).
    pub(crate) fn new(body: Body) -> Kept {
        if body.is_end_stream() {
            return Kept::Whole(Bytes::new());
        }
        if body.size_hint().lower() > REPLAY_LIMIT as u64 {
            return Kept::Streaming(body);
        }
        Kept::Tee(Arc::new(Mutex::new(Tee {
            rest: Some(body),
            ..Tee::default()
        })))
    }

    /// A body for one try: a copy of a whole body, a replay of a teed one (what was
    /// read, then the rest), or the stream (once).
    pub(crate) fn take(&mut self) -> Body {
        match self {
            Kept::Whole(b) => whole(b.clone()),
            Kept::Tee(t) => TeeBody {
                tee: t.clone(),
                pos: 0,
            }
            .boxed(),
            Kept::Streaming(s) => std::mem::replace(s, empty()),
        }
    }

    /// Whether the body can be sent again.
    pub(crate) fn replayable(&self) -> bool {
        match self {
            Kept::Whole(_) => true,
            Kept::Tee(t) => !t.lock().spoiled,
            Kept::Streaming(_) => false,
        }
    }

    /// The whole body, once it has been read and kept (for mirrors).
    pub(crate) fn whole(&self) -> Option<Bytes> {
        match self {
            Kept::Whole(b) => Some(b.clone()),
            Kept::Tee(t) => {
                let t = t.lock();
                (t.done && !t.spoiled).then(|| {
                    let mut all = BytesMut::with_capacity(t.len);
                    for c in &t.chunks {
                        all.extend_from_slice(c);
                    }
                    all.freeze()
                })
            }
            Kept::Streaming(_) => None,
        }
    }
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// A body of these bytes.
pub(crate) fn whole(b: Bytes) -> Body {
    if b.is_empty() {
        return empty();
    }
    Full::new(b).map_err(|e| match e {}).boxed()
}

/// One try's view of a teed body: the frames kept (from `pos`), then the rest, kept as
/// it passes.
struct TeeBody {
    tee: Arc<Mutex<Tee>>,
    pos: usize,
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let tee = self.tee.clone();
        let mut t = tee.lock();
        if let Some(c) = t.chunks.get(self.pos).cloned() {
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        if t.done {
            return Poll::Ready(None);
        }
        let Some(rest) = t.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                match frame.data_ref() {
                    Some(d) if !t.spoiled && t.len + d.len() <= REPLAY_LIMIT => {
                        t.len += d.len();
                        t.chunks.push(d.clone());
                        self.pos = t.chunks.len();
                    }
                    Some(_) | None if t.spoiled => {}
                    _ => {
                        // Over the limit, or trailers: this body goes once.
                        t.spoiled = true;
                        t.chunks = Vec::new();
                        t.len = 0;
                        self.pos = 0;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                t.done = true;
                t.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                t.spoiled = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let t = self.tee.lock();
        t.done && self.pos >= t.chunks.len()
    }

    fn size_hint(&self) -> SizeHint {
        let t = self.tee.lock();
        let kept: u64 = t.chunks.iter().skip(self.pos).map(|c| c.len() as u64).sum();
        let mut hint = t.rest.as_ref().map(|r| r.size_hint()).unwrap_or_default();
        hint.set_lower(hint.lower() + kept);
        if let Some(u) = hint.upper() {
            hint.set_upper(u + kept);
        }
        hint
    }
}

/// `body` failing once `deadline` passes: the route timeout covers the response body
/// too, and a stream still open then is reset, as Envoy resets it.
pub(crate) fn until(body: Body, deadline: tokio::time::Instant) -> Body {
    Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    }
    .boxed()
}

struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(f) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(f);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("upstream request timeout".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize, size: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..n)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; size]))))
            .collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn small_bodies_replay_and_large_ones_stream_once() {
        let mut k = Kept::new(chunks(4, 1000));
        assert!(k.replayable());
        assert!(k.whole().is_none(), "nothing read yet");
        let a = k.take().collect().await.expect("a").to_bytes();
        let b = k.take().collect().await.expect("b").to_bytes();
        assert_eq!((a.len(), b.len()), (4000, 4000));
        assert_eq!(k.whole().map(|w| w.len()), Some(4000));

        let mut big = Kept::new(chunks(100, 1000));
        let all = big.take().collect().await.expect("all").to_bytes();
        assert_eq!(all.len(), 100_000, "sent whole, once");
        assert!(!big.replayable());
        assert!(big.whole().is_none());
    }

    #[tokio::test]
    async fn the_first_try_gets_bytes_before_the_body_ends_and_a_retry_continues_it() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
            .boxed();
        let mut k = Kept::new(body);
        tx.send(Ok(Frame::data(Bytes::from_static(b"one "))))
            .await
            .expect("send");
        // The body has not ended, yet the first try reads its first frame at once.
        let mut first = k.take();
        let got = first.frame().await.expect("a frame").expect("ok");
        assert_eq!(got.into_data().ok(), Some(Bytes::from_static(b"one ")));
        drop(first); // that try failed
        tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
            .await
            .expect("send");
        drop(tx);
        assert!(k.replayable());
        let retry = k.take().collect().await.expect("retry").to_bytes();
        assert_eq!(
            retry,
            Bytes::from_static(b"one two"),
            "replayed, then the rest"
        );
        assert_eq!(k.whole(), Some(Bytes::from_static(b"one two")));
    }

    #[tokio::test]
    async fn an_empty_body_is_whole_at_once() {
        let k = Kept::new(empty());
        assert_eq!(k.whole(), Some(Bytes::new()));
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_fails() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stalled =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
                .boxed();
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        assert!(until(stalled, soon).collect().await.is_err());
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let done = until(whole(Bytes::from_static(b"ok")), later)
            .collect()
            .await;
        assert_eq!(done.expect("body").to_bytes(), Bytes::from_static(b"ok"));
    }
}
