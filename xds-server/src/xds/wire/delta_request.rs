//! A delta request as read off the wire, its subscribed names kept as slices of the
//! received message.
//!
//! A sidecar's first requests subscribe to a thousand names or more (every
//! ClusterLoadAssignment of its Clusters). Decoded by prost, each is a `String` of its
//! own: an allocation, a copy and a free per name, about a tenth of a first sync's CPU,
//! only for the stream to intern the name and drop the string. Here the names are
//! copied into one buffer, each checked as UTF-8 as prost checks it, with 4 bytes of
//! bookkeeping per name (24 for a `String`), and the stream reads them as `&str`. The
//! received message is not kept: a request that waits for its first-sync turn holds
//! only its names.

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// `DeltaDiscoveryRequest.resource_names_subscribe`.
const SUBSCRIBE_TAG: u32 = 3;

/// Most bytes reserved for names before they arrive (a thousand names of a mesh fit).
const FIRST_RESERVE: usize = 64 * 1024;

/// A `DeltaDiscoveryRequest` whose `resource_names_subscribe` are kept in one buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaRequest {
    /// Every field but the subscribed names (`resource_names_subscribe` is empty).
    pub req: DeltaDiscoveryRequest,
    /// The subscribed names, one after another.
    names: String,
    /// Where each name ends in `names`.
    ends: Vec<u32>,
}

impl DeltaRequest {
    /// The subscribed names, in the order sent.
    pub(crate) fn subscribe(&self) -> impl ExactSizeIterator<Item = &str> {
        // Every end is the end of a whole name, so a character boundary: nothing is
        // left out here.
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
            self.names
                .get(start as usize..end as usize)
                .unwrap_or_default()
        })
    }

    fn push(&mut self, name: &[u8]) -> Result<(), DecodeError> {
        let Ok(name) = std::str::from_utf8(name) else {
            // prost's own text for a string field that is not UTF-8 (it makes no other
            // way to build one public).
            #[allow(deprecated)]
            return Err(DecodeError::new(
                "invalid string value: data is not UTF-8 encoded",
            ));
        };
        self.names.push_str(name);
        // A message is at most 256 MiB (`--max-message-bytes`).
        self.ends
            .push(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        Ok(())
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
        let names = std::mem::take(&mut req.resource_names_subscribe);
        let mut r = DeltaRequest {
            req,
            ..Default::default()
        };
        for n in names {
            // A `String` is UTF-8.
            let _ = r.push(n.as_bytes());
        }
        r
    }
}

impl Message for DeltaRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for name in self.subscribe() {
            prost::encoding::string::encode(SUBSCRIBE_TAG, &name.to_string(), buf);
        }
        self.req.encode_raw(buf);
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
        // What is left of the message bounds the names' bytes: the first name sizes
        // both buffers (a first subscription's thousand names grew them a dozen times, a
        // percent of a reconnect storm). Capped: the rest may be another field, and the
        // names are held (uncharged) while the request waits for its first-sync turn.
        let rest = buf.remaining().min(FIRST_RESERVE);
        super::read_delimited(wire_type, buf, |name| {
            if self.ends.is_empty() {
                self.names.reserve(rest);
                self.ends.reserve(rest / (name.len().max(16) + 2));
            }
            self.push(name)
        })
    }

    fn encoded_len(&self) -> usize {
        self.subscribe()
            .map(|n| prost::encoding::string::encoded_len(SUBSCRIBE_TAG, &n.to_string()))
            .sum::<usize>()
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

    /// One empty name and a megabyte of something else: the buffers are sized for
    /// names, at most [`FIRST_RESERVE`], never for the rest of the message.
    #[test]
    fn what_else_a_request_carries_does_not_size_its_names_buffers() {
        let mut wire = DeltaDiscoveryRequest {
            resource_names_subscribe: vec![String::new()],
            ..Default::default()
        }
        .encode_to_vec();
        prost::encoding::bytes::encode(99, &vec![7u8; 1 << 20], &mut wire);
        let r = DeltaRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(r.subscribe().collect::<Vec<_>>(), [""]);
        let held = r.names.capacity() + 4 * r.ends.capacity();
        assert!(
            held <= 2 * FIRST_RESERVE,
            "{held} bytes held for one empty name"
        );
        // A thousand names take the buffers sized once.
        let names: Vec<String> = (0..1000).map(|i| format!("outbound|80||s{i}.ns")).collect();
        let wire = DeltaDiscoveryRequest {
            resource_names_subscribe: names.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let r = DeltaRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(r.subscribe().collect::<Vec<_>>(), names);
        assert!(r.names.capacity() >= names.iter().map(String::len).sum::<usize>());
    }

    #[test]
    fn decodes_what_prost_decodes_with_the_names_in_one_buffer() {
        let wire = request().encode_to_vec();
        let r = DeltaRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(r.to_request(), request());
        assert_eq!(
            r.subscribe().collect::<Vec<_>>(),
            ["a", "bb", "ünï", ""],
            "in the order sent"
        );
        assert!(r.req.resource_names_subscribe.is_empty());
        assert_eq!(r.ends, [1, 3, 8, 8], "four bytes per name");
        assert_eq!(
            DeltaDiscoveryRequest::decode(r.encode_to_vec().as_slice()).expect("decodes"),
            request(),
            "encodes back to the same request"
        );
        assert_eq!(r.encoded_len(), request().encoded_len());
        assert_eq!(DeltaRequest::from(request()), r);
    }

    #[test]
    fn unknown_fields_and_names_between_other_fields_decode_as_prost_decodes() {
        let mut wire = Vec::new();
        let mut part = |r: DeltaDiscoveryRequest| wire.extend(r.encode_to_vec());
        part(DeltaDiscoveryRequest {
            resource_names_subscribe: vec!["one".into()],
            ..Default::default()
        });
        part(DeltaDiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        });
        part(DeltaDiscoveryRequest {
            resource_names_subscribe: vec!["two".into()],
            response_nonce: "n".into(),
            ..Default::default()
        });
        // Field 99, a varint: unknown to both.
        wire.extend_from_slice(&[0x98, 0x06, 0x01]);
        let want = DeltaDiscoveryRequest::decode(wire.as_slice()).expect("prost decodes");
        let got = DeltaRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(got.to_request(), want);
        assert_eq!(got.subscribe().collect::<Vec<_>>(), ["one", "two"]);
        // Field 3 as a varint is the wrong wire type for a name.
        assert!(DeltaDiscoveryRequest::decode(&[0x18, 0x01][..]).is_err());
        assert!(DeltaRequest::decode(&[0x18, 0x01][..]).is_err());
    }

    #[test]
    fn a_name_that_is_not_utf8_or_runs_past_the_end_is_a_decode_error() {
        let mut bad = request().encode_to_vec();
        // Field 3, length 1, 0xff.
        bad.extend_from_slice(&[0x1a, 0x01, 0xff]);
        assert!(DeltaDiscoveryRequest::decode(bad.as_slice()).is_err());
        assert!(DeltaRequest::decode(bad.as_slice()).is_err());
        let mut cut = request().encode_to_vec();
        cut.extend_from_slice(&[0x1a, 0x05, b'a']);
        assert!(DeltaDiscoveryRequest::decode(cut.as_slice()).is_err());
        assert!(DeltaRequest::decode(cut.as_slice()).is_err());
    }
}
