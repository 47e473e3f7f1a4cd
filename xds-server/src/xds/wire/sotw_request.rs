//! A SotW request as read off the wire, with its resource names left as raw bytes.
//!
//! Every SotW ACK repeats the whole subscription: a sidecar with 1,000 clusters names
//! 1,000 ClusterLoadAssignments in every EDS ACK. Decoding those into strings (an
//! allocation and a UTF-8 check each) and comparing them with the subscription was most
//! of the control plane's CPU for a one-endpoint change on SotW. Here decoding only folds
//! the names into a digest (no allocation, no reference count per name) and keeps the
//! received message; the stream machine decodes the names from it only when the digest
//! differs from the subscription it last took
//! ([`crate::xds::stream::sotw::SotwStream::on_wire`]).
//!
//! The digest is the sum of a fast hash of each name (foldhash, seeded at random per
//! process): the same names in any order are the same subscription, as SotW means them.
//! It is not cryptographic: a client that crafts a list with the digest of its previous
//! one (without knowing the seed) only keeps its own previous subscription.

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// `DiscoveryRequest.resource_names`.
const NAMES_TAG: u32 = 3;

/// A `DiscoveryRequest` whose `resource_names` are kept undecoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwRequest {
    /// Every field but the names (`resource_names` is empty).
    pub req: DiscoveryRequest,
    /// The whole message as received (the names are read from it on demand).
    raw: Bytes,
    names: usize,
    digest: u64,
}

/// Adds one name to a digest: the sum of the names' hashes (their order does not count;
/// the hash covers the name's length, so the split between names does).
fn fold(h: u64, name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(foldhash::fast::RandomState::default);
    h.wrapping_add(SEED.hash_one(name))
}

impl SotwRequest {
    /// A digest of the names, in any order.
    pub(crate) fn names_digest(&self) -> u64 {
        self.digest
    }

    /// How many names the request carries.
    #[cfg(test)]
    pub(crate) fn names_len(&self) -> usize {
        self.names
    }

    /// The names as strings, read from the received message; an error if one is not
    /// UTF-8.
    pub(crate) fn decode_names(&self) -> Result<Vec<String>, String> {
        let mut buf = self.raw.clone();
        let mut out = Vec::with_capacity(self.names);
        let mut not_utf8 = false;
        let malformed = |e: DecodeError| format!("malformed request: {e}");
        while buf.has_remaining() {
            let (tag, wire_type) = prost::encoding::decode_key(&mut buf).map_err(malformed)?;
            if tag == NAMES_TAG {
                super::read_delimited(wire_type, &mut buf, |name| {
                    match std::str::from_utf8(name) {
                        Ok(name) => out.push(name.to_string()),
                        Err(_) => not_utf8 = true,
                    }
                    Ok(())
                })
                .map_err(malformed)?;
                if not_utf8 {
                    return Err("a resource name is not UTF-8".into());
                }
            } else {
                prost::encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default())
                    .map_err(malformed)?;
            }
        }
        Ok(out)
    }
}

impl From<DiscoveryRequest> for SotwRequest {
    fn from(req: DiscoveryRequest) -> Self {
        let raw = Bytes::from(req.encode_to_vec());
        let mut r = SotwRequest::default();
        // Our own encoding decodes.
        let _ = r.merge(raw.clone());
        r.raw = raw;
        r
    }
}

impl Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let mut full = self.req.clone();
        full.resource_names = self.decode_names().unwrap_or_default();
        full.encode_raw(buf);
    }

    fn decode(mut buf: impl Buf) -> Result<Self, DecodeError> {
        // Zero-copy when the caller hands over `Bytes` (the wire layer does).
        let raw = buf.copy_to_bytes(buf.remaining());
        let mut r = SotwRequest::default();
        r.merge(raw.clone())?;
        r.raw = raw;
        Ok(r)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == NAMES_TAG {
            super::read_delimited(wire_type, buf, |name| {
                self.digest = fold(self.digest, name);
                self.names += 1;
                Ok(())
            })
        } else {
            self.req.merge_field(tag, wire_type, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        let mut full = self.req.clone();
        full.resource_names = self.decode_names().unwrap_or_default();
        full.encoded_len()
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_types::XdsType;

    fn request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            type_url: XdsType::Endpoint.type_url().into(),
            response_nonce: "7".into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_prost_decodes_and_the_digest_follows_the_names() {
        let wire = request(&["a", "bb", "ccc"]).encode_to_vec();
        let r = SotwRequest::decode(Bytes::from(wire.clone())).expect("decodes");
        assert_eq!(
            r.req,
            DiscoveryRequest {
                resource_names: vec![],
                ..request(&[])
            }
        );
        assert_eq!(r.decode_names().expect("utf8"), ["a", "bb", "ccc"]);
        assert_eq!(r.names_len(), 3);
        assert_eq!(r.encode_to_vec(), wire, "encodes back to the same bytes");
        assert_eq!(
            r.names_digest(),
            SotwRequest::from(request(&["a", "bb", "ccc"])).names_digest()
        );
        assert_eq!(
            SotwRequest::from(request(&["ccc", "a", "bb"])).names_digest(),
            r.names_digest(),
            "the same names in another order are the same subscription"
        );
        for other in [
            &["a", "bb"][..],
            &["a", "b", "bccc"],
            &["a", "bb", "cc", "c"],
            &["a", "bb", "ccc", ""],
            &["a", "bb", "ccc", "a"],
        ] {
            assert_ne!(
                SotwRequest::from(request(other)).names_digest(),
                r.names_digest(),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_is_an_error_when_decoded() {
        let mut wire = request(&["ok"]).encode_to_vec();
        // Field 3, length 1, 0xff.
        wire.extend_from_slice(&[0x1a, 0x01, 0xff]);
        let r = SotwRequest::decode(Bytes::from(wire)).expect("the frame decodes");
        assert!(r.decode_names().is_err());
    }

    #[test]
    fn a_name_running_past_the_end_is_a_decode_error() {
        let mut wire = request(&["ok"]).encode_to_vec();
        wire.extend_from_slice(&[0x1a, 0x05, b'a']);
        assert!(SotwRequest::decode(Bytes::from(wire)).is_err());
    }
}
