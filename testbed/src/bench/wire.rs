//! A simulated SotW proxy's request with its resource names encoded once.
//!
//! A SotW proxy repeats its whole subscription in every request: a sidecar of a mesh of
//! 1,000 Services names 1,000 ClusterLoadAssignments in every EDS ACK. Envoy builds that
//! on its own core; the benchmark's simulated proxies share one core, and building 1,000
//! strings per ACK per proxy there made them, not the control plane, what a SotW change
//! waited on. So the names are encoded once (the mesh's cluster names for all proxies,
//! plus a proxy's own additions) and each request only writes them after its few fields.
//! Protobuf readers accept fields in any order; the bytes carry the same message.

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use prost::encoding::{DecodeContext, WireType};

/// `DiscoveryRequest.resource_names`.
const NAMES_TAG: u32 = 3;

/// `names` encoded as the repeated `resource_names` field.
pub fn encode_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Bytes {
    let mut out = Vec::new();
    for n in names {
        let n = n.as_ref().as_bytes();
        prost::encoding::encode_key(NAMES_TAG, WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(n.len() as u64, &mut out);
        out.put_slice(n);
    }
    Bytes::from(out)
}

/// A `DiscoveryRequest` whose names are pieces encoded beforehand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwRequest {
    /// Every field but the names (its `resource_names` is left empty).
    pub head: DiscoveryRequest,
    /// The names, each piece from [`encode_names`].
    pub names: Vec<Bytes>,
}

impl Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for piece in &self.names {
            buf.put_slice(piece);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever encoded. A decoded one would carry its names in `head` (and encode
        // them twice); nothing decodes one.
        self.head.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.names.iter().map(Bytes::len).sum::<usize>()
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_request_with_its_names() {
        let head = DiscoveryRequest {
            version_info: "v1".into(),
            response_nonce: "3".into(),
            type_url: "t".into(),
            ..Default::default()
        };
        let req = SotwRequest {
            head: head.clone(),
            names: vec![encode_names(["a", "bb"]), encode_names(["c"]), Bytes::new()],
        };
        let wire = req.encode_to_vec();
        assert_eq!(wire.len(), req.encoded_len());
        let read = DiscoveryRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(
            read,
            DiscoveryRequest {
                resource_names: vec!["a".into(), "bb".into(), "c".into()],
                ..head
            }
        );
    }
}
