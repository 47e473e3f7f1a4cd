//! The ADS wire: the HTTP/2 service that routes the two ADS methods to the stream
//! machines ([`ads_server`]), reads requests with buffers that grow only as bytes arrive, within a
//! deadline and charged to the peer's identity ([`inbound`], [`budget`]), and writes the
//! machines' responses as frames encoded straight from the shared resources
//! ([`frames`]), a large response's body once for all the proxies sent it
//! ([`shared_body`]).
//!
//! tonic's generated server would encode every response through a per-stream buffer that
//! grows to the largest response ever sent (the first CDS response: hundreds of KB) and
//! stays that size for the stream's life; with thousands of proxies that buffer was most
//! of the server's memory. Here each frame is one allocation of exactly its size, freed
//! once written. A frame is charged to the stream's identity until HTTP/2 has taken all
//! of it, in [`budget::CHUNK`]-sized pieces as it has room, so what a peer that does not
//! read makes the server hold is its identity's.

pub mod ads_server;
pub mod budget;
pub mod delta_request;
pub mod frames;
pub mod http2;
pub mod inbound;
pub mod shared_body;
pub mod sotw_request;

/// Reads one length-delimited field (a resource name) and hands its bytes to `take`,
/// without a copy when they are contiguous in `buf`. Truncation and a wrong wire type
/// are the errors prost reports for them.
pub(crate) fn read_delimited(
    wire_type: prost::encoding::WireType,
    buf: &mut impl bytes::Buf,
    take: impl FnOnce(&[u8]) -> Result<(), prost::DecodeError>,
) -> Result<(), prost::DecodeError> {
    prost::encoding::check_wire_type(prost::encoding::WireType::LengthDelimited, wire_type)?;
    let len = usize::try_from(prost::encoding::decode_varint(buf)?).unwrap_or(usize::MAX);
    if len > buf.remaining() {
        // Truncated: reported as prost reports a varint cut short.
        prost::encoding::decode_varint(&mut &[0x80u8][..])?;
        return Ok(());
    }
    if buf.chunk().len() >= len {
        take(&buf.chunk()[..len])?;
        buf.advance(len);
        Ok(())
    } else {
        take(&buf.copy_to_bytes(len))
    }
}
