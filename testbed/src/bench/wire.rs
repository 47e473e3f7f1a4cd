//! What the simulated proxies write and read, made cheap for the one core they share.
//!
//! Envoy builds its requests and reads its responses on its own core; the benchmark's
//! thousands of simulated proxies share one, and what they spend there is time the
//! control plane's answers wait for (during a reconnect storm the load core was busy
//! 100% of the time while the control plane's was not). So:
//! - **Requests name their resources from pieces encoded once** ([`WithNames`]): the
//!   mesh's cluster names for all proxies, plus a proxy's own additions. A SotW proxy
//!   repeats its whole subscription in every request (1,000 names per EDS ACK), a delta
//!   proxy names them once. Protobuf readers accept fields in any order; the bytes carry
//!   the same message.
//! - **Responses are read for what a proxy acts on** ([`RawCodec`], [`LightDelta`],
//!   [`LightSotw`]): their length, type, nonce and resource names, not every resource's
//!   body copied into a message of its own.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost::encoding::{DecodeContext, WireType};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};

/// `DiscoveryRequest.resource_names` and `DeltaDiscoveryRequest.resource_names_subscribe`.
const NAMES_TAG: u32 = 3;

/// `names` encoded as the repeated names field of either request.
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

/// A request whose names are pieces encoded beforehand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WithNames<M> {
    /// Every field but the names (its names field is left empty).
    pub head: M,
    /// The names, each piece from [`encode_names`].
    pub names: Vec<Bytes>,
}

/// A SotW request with its names encoded beforehand.
pub type SotwRequest = WithNames<envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest>;

/// A delta request with its subscribed names encoded beforehand.
pub type DeltaRequest =
    WithNames<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>;

impl<M: Message + Default> Message for WithNames<M> {
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
        self.head.clear();
        self.names.clear();
    }
}

/// A gRPC codec that writes prost requests and hands each response over as its bytes,
/// undecoded (taken out of the receive buffer, not copied).
#[derive(Debug)]
pub struct RawCodec<Req>(PhantomData<Req>);

impl<Req> Default for RawCodec<Req> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<Req: Message + Send + 'static> Codec for RawCodec<Req> {
    type Encode = Req;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<Req>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// [`RawCodec`]'s reader.
#[derive(Debug)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = buf.remaining();
        Ok(Some(buf.copy_to_bytes(len)))
    }
}

/// A `DeltaDiscoveryResponse` read for its type, nonce and resource names.
#[derive(Clone, PartialEq, Message)]
pub struct LightDelta {
    /// `resources`: each read for its name.
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<LightResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    /// `removed_resources` (rare: read whole).
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// A delta `Resource` read for its name (a slice of the response, not a copy).
#[derive(Clone, PartialEq, Message)]
pub struct LightResource {
    #[prost(bytes = "bytes", tag = "3")]
    pub name: Bytes,
}

impl LightResource {
    /// Its name (empty if it is not UTF-8).
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or_default()
    }
}

/// A `DiscoveryResponse` read for its version, type, nonce and each resource's bytes
/// (slices of the response, not copies).
#[derive(Clone, PartialEq, Message)]
pub struct LightSotw {
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// `resources`: each `Any`'s value.
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<LightAny>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// An `Any` read for its value.
#[derive(Clone, PartialEq, Message)]
pub struct LightAny {
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        Resource,
    };
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn encodes_the_request_with_its_names() {
        let head = DiscoveryRequest {
            version_info: "v1".into(),
            response_nonce: "3".into(),
            type_url: "t".into(),
            ..Default::default()
        };
        let req = WithNames {
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

    #[test]
    fn a_delta_request_carries_its_names_as_subscriptions() {
        let head = DeltaDiscoveryRequest {
            type_url: "t".into(),
            response_nonce: "4".into(),
            ..Default::default()
        };
        let req = DeltaRequest {
            head: head.clone(),
            names: vec![encode_names(["a", "b"]), encode_names(["c"])],
        };
        let read = DeltaDiscoveryRequest::decode(req.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(
            read,
            DeltaDiscoveryRequest {
                resource_names_subscribe: vec!["a".into(), "b".into(), "c".into()],
                ..head
            }
        );
    }

    fn any(name: &str) -> Any {
        Any {
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            // A ClusterLoadAssignment with its name (field 1) and more after it.
            value: [
                vec![10, name.len() as u8],
                name.as_bytes().to_vec(),
                vec![16, 1],
            ]
            .concat(),
        }
    }

    /// The light readings see what the full messages hold of the fields they keep.
    #[test]
    fn light_responses_read_the_names_type_and_nonce() {
        let delta = DeltaDiscoveryResponse {
            system_version_info: "v".into(),
            resources: ["a", "bb"]
                .map(|n| Resource {
                    name: n.into(),
                    version: "1".into(),
                    resource: Some(any(n)),
                    ..Default::default()
                })
                .to_vec(),
            type_url: "t".into(),
            nonce: "7".into(),
            removed_resources: vec!["c".into()],
            ..Default::default()
        };
        let bytes = Bytes::from(delta.encode_to_vec());
        let light = LightDelta::decode(bytes.clone()).expect("decodes");
        let names: Vec<&str> = light.resources.iter().map(LightResource::name).collect();
        assert_eq!(
            (names, &*light.type_url, &*light.nonce),
            (vec!["a", "bb"], "t", "7")
        );
        let range = bytes.as_ptr_range();
        assert!(
            light
                .resources
                .iter()
                .all(|r| range.contains(&r.name.as_ptr())),
            "names are slices of the response"
        );

        let sotw = DiscoveryResponse {
            version_info: "v2".into(),
            resources: vec![any("a"), any("bb")],
            type_url: "t".into(),
            nonce: "8".into(),
            ..Default::default()
        };
        let bytes = Bytes::from(sotw.encode_to_vec());
        let light = LightSotw::decode(bytes.clone()).expect("decodes");
        assert_eq!(
            (&*light.version_info, &*light.type_url, &*light.nonce),
            ("v2", "t", "8")
        );
        let values: Vec<&[u8]> = light.resources.iter().map(|r| &r.value[..]).collect();
        assert_eq!(
            values,
            [&sotw.resources[0].value[..], &sotw.resources[1].value[..]]
        );
        // Slices of the response, not copies.
        let range = bytes.as_ptr_range();
        assert!(
            light
                .resources
                .iter()
                .all(|r| range.contains(&r.value.as_ptr()))
        );
    }
}
