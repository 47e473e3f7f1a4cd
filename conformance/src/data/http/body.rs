//! Request bodies kept for retries and mirrors: a body up to [`REPLAY_LIMIT`] bytes is
//! read whole and can be sent again; a larger one (or one with trailers) streams once
//! (no retry, no mirror), its already-read start replayed in front of the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

use crate::data::upstream::io::{Body, BoxError};

/// The largest request body kept for retries and mirrors (Envoy's default buffer limit
/// is 1 MiB per stream; this proxy keeps less per request and says so).
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body, kept whole or streaming.
#[derive(Debug)]
pub(crate) enum Kept {
    /// Read whole: every try and mirror gets a copy.
    Whole(Bytes),
    /// Too large to keep: sent once.
    Streaming(Body),
}

impl Kept {
    /// A body for one try: a copy of a kept body, or the stream (once).
    pub(crate) fn take(&mut self) -> Body {
        match self {
            Kept::Whole(b) => whole(b.clone()),
            Kept::Streaming(s) => std::mem::replace(s, empty()),
        }
    }

    /// Whether the body can be sent again.
    pub(crate) fn replayable(&self) -> bool {
        matches!(self, Kept::Whole(_))
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

/// Reads `body` whole if it fits in [`REPLAY_LIMIT`] and has no trailers; else
/// returns it streaming, with what was read put back in front.
pub(crate) async fn keep(mut body: Body) -> Result<Kept, BoxError> {
    if body.size_hint().lower() > REPLAY_LIMIT as u64 {
        return Ok(Kept::Streaming(body));
    }
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let stop = match frame.data_ref() {
            Some(d) => {
                len += d.len();
                len > REPLAY_LIMIT
            }
            None => true,
        };
        read.push_back(frame);
        if stop {
            return Ok(Kept::Streaming(
                Replay {
                    read,
                    rest: Some(body),
                }
                .boxed(),
            ));
        }
    }
    let mut all = bytes::BytesMut::with_capacity(len);
    for f in read {
        if let Ok(d) = f.into_data() {
            all.extend_from_slice(&d);
        }
    }
    Ok(Kept::Whole(all.freeze()))
}

/// Frames already read, then the rest of the body.
struct Replay {
    read: VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .read
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_default();
        hint.set_lower(hint.lower() + read);
        if let Some(u) = hint.upper() {
            hint.set_upper(u + read);
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
    async fn small_bodies_are_kept_and_large_ones_stream_whole() {
        let mut k = keep(chunks(4, 1000)).await.expect("read");
        assert!(k.replayable());
        let a = k.take().collect().await.expect("a").to_bytes();
        let b = k.take().collect().await.expect("b").to_bytes();
        assert_eq!((a.len(), b.len()), (4000, 4000));

        let mut big = keep(chunks(100, 1000)).await.expect("read");
        assert!(!big.replayable());
        let all = big.take().collect().await.expect("all").to_bytes();
        assert_eq!(all.len(), 100_000, "nothing read ahead is lost");
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
