//! A delta request as read off the wire, its subscribed names kept as slices of the
//! received message.
//!
//! A sidecar's first requests subscribe to a thousand names or more (every
//! ClusterLoadAssignment of its Clusters). Decoded by prost, each is a `String` of its
//! own: an allocation, a copy and a free per name, about a tenth of a first sync's CPU,
//! only for the stream to intern the name and drop the string. Here each name is a
//! slice of the message's bytes (a reference count, no copy), checked as UTF-8 as prost
//! checks it, and the stream reads them as `&str`.

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// `DeltaDiscoveryRequest.resource_names_subscribe`.
const SUBSCRIBE_TAG: u32 = 3;

/// A `DeltaDiscoveryRequest` whose `resource_names_subscribe` are kept as slices of the
/// received bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaRequest {
    /// Every field but the subscribed names (`resource_names_subscribe` is empty).
    pub req: DeltaDiscoveryRequest,
    /// The subscribed names, each valid UTF-8.
    subscribe: Vec<Bytes>,
}

impl DeltaRequest {
    /// The subscribed names, in the order sent.
    pub(crate) fn subscribe(&self) -> impl ExactSizeIterator<Item = &str> {
        // Checked when decoded: nothing is left out here.
        self.subscribe
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap_or_default())
    }

    /// The whole request, as prost decodes it.
    #[cfg(test)]
    pub(crate) fn to_request(&self) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            resource_names_subscribe: self.subscribe().map(str::to_string).collect(),
            ..self.req.clone()
        }
    }
}

impl From<DeltaDiscoveryRequest> for DeltaRequest {
    fn from(mut req: DeltaDiscoveryRequest) -> Self {
        let subscribe = std::mem::take(&mut req.resource_names_subscribe)
            .into_iter()
            .map(Bytes::from)
            .collect();
        DeltaRequest { req, subscribe }
    }
}

impl Message for DeltaRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for name in &self.subscribe {
            prost::encoding::bytes::encode(SUBSCRIBE_TAG, name, buf);
        }
        self.req.encode_raw(buf);
    }

    fn decode(mut buf: impl Buf) -> Result<Self, DecodeError> {
        // Names are slices of this, not copies, when the caller hands over `Bytes` (the
        // wire layer does).
        let raw = buf.copy_to_bytes(buf.remaining());
        let mut r = DeltaRequest::default();
        r.merge(raw)?;
        Ok(r)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != SUBSCRIBE_TAG {
            return self.req.merge_field(tag, wire_type, buf, ctx);
        }
        let mut name = Bytes::new();
        prost::encoding::bytes::merge(wire_type, &mut name, buf, ctx)?;
        if std::str::from_utf8(&name).is_err() {
            // prost's own text for a string field that is not UTF-8 (it makes no other
            // way to build one public).
            #[allow(deprecated)]
            return Err(DecodeError::new(
                "invalid string value: data is not UTF-8 encoded",
            ));
        }
        self.subscribe.push(name);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::bytes::encoded_len_repeated(SUBSCRIBE_TAG, &self.subscribe)
            + self.req.encoded_len()
    }

    fn clear(&mut self) {
        *self = DeltaRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use xds_types::XdsType;

    fn request() -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: XdsType::Endpoint.type_url().into(),
            resource_names_subscribe: vec!["a".into(), "bb".into(), "ünï".into(), String::new()],
            resource_names_unsubscribe: vec!["gone".into()],
            initial_resource_versions: HashMap::from([("held".into(), "v1".into())]),
            response_nonce: "7".into(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_prost_decodes_with_the_names_as_slices_of_the_message() {
        let wire = Bytes::from(request().encode_to_vec());
        let r = DeltaRequest::decode(wire.clone()).expect("decodes");
        assert_eq!(r.to_request(), request());
        assert_eq!(
            r.subscribe().collect::<Vec<_>>(),
            ["a", "bb", "ünï", ""],
            "in the order sent"
        );
        assert!(r.req.resource_names_subscribe.is_empty());
        let inside = wire.as_ptr_range();
        assert!(
            r.subscribe
                .iter()
                .filter(|n| !n.is_empty())
                .all(|n| inside.contains(&n.as_ptr())),
            "not copied"
        );
        assert_eq!(
            DeltaDiscoveryRequest::decode(r.encode_to_vec().as_slice()).expect("decodes"),
            request(),
            "encodes back to the same request"
        );
        assert_eq!(r.encoded_len(), request().encoded_len());
        assert_eq!(DeltaRequest::from(request()), r);
    }

    #[test]
    fn a_name_that_is_not_utf8_or_runs_past_the_end_is_a_decode_error() {
        let mut bad = request().encode_to_vec();
        // Field 3, length 1, 0xff.
        bad.extend_from_slice(&[0x1a, 0x01, 0xff]);
        assert!(DeltaDiscoveryRequest::decode(bad.as_slice()).is_err());
        assert!(DeltaRequest::decode(Bytes::from(bad)).is_err());
        let mut cut = request().encode_to_vec();
        cut.extend_from_slice(&[0x1a, 0x05, b'a']);
        assert!(DeltaRequest::decode(Bytes::from(cut)).is_err());
    }
}
