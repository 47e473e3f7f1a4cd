//! The TLS inspector: reads the connection's first bytes (at most one TLS record,
//! [`MAX_RECORD`]), decides `tls` or `raw_buffer` and the offered ALPN list, and hands
//! back a stream that replays what was read, so nothing is consumed. The caller bounds
//! the wait (Envoy's `listener_filters_timeout`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The largest TLS record read: 5 header bytes and 16 KiB of plaintext.
pub const MAX_RECORD: usize = 5 + 16_384;

/// What the first bytes say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// `tls` or `raw_buffer`.
    pub transport: &'static str,
    /// ALPN values offered by a TLS client, in its order.
    pub alpn: Vec<String>,
}

fn raw() -> Inspected {
    Inspected {
        transport: "raw_buffer",
        alpn: Vec::new(),
    }
}

/// The verdict on `buf` so far: none when more bytes are needed.
pub fn verdict(buf: &[u8]) -> Option<Inspected> {
    let first = *buf.first()?;
    if first != 0x16 {
        return Some(raw());
    }
    if buf.len() < 5 {
        return None;
    }
    if buf[1] != 0x03 {
        return Some(raw());
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf.len() < 5 + len {
        return None;
    }
    Some(match client_hello_alpn(&buf[5..5 + len]) {
        Some(alpn) => Inspected {
            transport: "tls",
            alpn,
        },
        None => raw(),
    })
}

/// A cursor over a handshake message, every read bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The ALPN list of a ClientHello handshake message (empty when it offers none); none
/// when it is not a well-formed ClientHello. A ClientHello longer than this record is
/// taken as TLS without ALPN.
fn client_hello_alpn(msg: &[u8]) -> Option<Vec<String>> {
    let mut c = Cursor(msg);
    if c.u8()? != 1 {
        return None;
    }
    let hs = c.take(3)?;
    let len = (usize::from(hs[0]) << 16) | (usize::from(hs[1]) << 8) | usize::from(hs[2]);
    if c.0.len() < len {
        return Some(Vec::new());
    }
    let mut c = Cursor(c.take(len)?);
    c.take(2 + 32)?; // version, random
    c.vec8()?; // session id
    c.vec16()?; // cipher suites
    c.vec8()?; // compression methods
    if c.0.is_empty() {
        return Some(Vec::new());
    }
    let mut exts = Cursor(c.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty == 0x0010 {
            let mut list = Cursor(Cursor(data).vec16()?);
            let mut out = Vec::new();
            while !list.0.is_empty() {
                out.push(String::from_utf8_lossy(list.vec8()?).into_owned());
            }
            return Some(out);
        }
    }
    Some(Vec::new())
}

/// Reads from `io` until [`verdict`] decides: (the verdict, what was read). An error
/// when the peer closes first.
pub async fn inspect<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(Inspected, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(v) = verdict(&buf) {
            return Ok((v, buf));
        }
        let room = MAX_RECORD.saturating_sub(buf.len()).min(chunk.len());
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A stream that first replays `prefix`, then reads from `inner`; writes go to `inner`.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner` with `prefix` put back in front.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_hello(alpn: &[&str]) -> Vec<u8> {
        let mut exts = Vec::new();
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p.as_bytes());
            }
            exts.extend_from_slice(&[0x00, 0x10]);
            exts.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
            exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
            exts.extend_from_slice(&list);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0u8; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1, 0, 0, 0];
        hs[2] = (body.len() >> 8) as u8;
        hs[3] = body.len() as u8;
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn a_client_hello_is_tls_with_its_alpn() {
        let ch = client_hello(&["h2", "http/1.1"]);
        assert_eq!(
            verdict(&ch),
            Some(Inspected {
                transport: "tls",
                alpn: vec!["h2".into(), "http/1.1".into()]
            })
        );
        assert_eq!(verdict(&client_hello(&[])).map(|v| v.alpn), Some(vec![]));
    }

    #[test]
    fn partial_hello_waits_and_plain_text_is_raw() {
        let ch = client_hello(&["h2"]);
        assert_eq!(verdict(&ch[..3]), None);
        assert_eq!(verdict(&ch[..ch.len() - 1]), None);
        assert_eq!(
            verdict(b"GET / HTTP/1.1\r\n").map(|v| v.transport),
            Some("raw_buffer")
        );
        assert_eq!(verdict(&[]), None);
    }

    #[test]
    fn malformed_hello_is_raw_not_a_panic() {
        let mut ch = client_hello(&["h2"]);
        // Claim a longer extension block than there is.
        let n = ch.len();
        ch[n - 9] = 0xff;
        let v = verdict(&ch);
        assert!(v.is_some());
        let garbage = [0x16, 0x03, 0x01, 0x00, 0x03, 0x01, 0xff, 0xff];
        assert_eq!(verdict(&garbage).map(|v| v.transport), Some("raw_buffer"));
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"world")
            .await
            .unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello ".to_vec(), b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
