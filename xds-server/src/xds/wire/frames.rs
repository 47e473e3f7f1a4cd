//! ADS responses as the stream machines produce them, holding the shared encoded
//! resources, and their encoding into gRPC frames. A response is written straight from
//! the resources' encoded bytes into one buffer of exactly its size: nothing is copied
//! into per-proxy protobuf structs first, and no encode buffer outlives the frame.
//!
//! Field numbers are those of `envoy.service.discovery.v3`; the tests decode every frame
//! with the generated types and compare.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use translator::encoded::Encoded;

/// One delta (incremental) response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaResponse {
    /// A version naming the response as a whole.
    pub system_version_info: String,
    /// The type.
    pub type_url: &'static str,
    /// Added or changed resources.
    pub resources: Vec<Arc<Encoded>>,
    /// Names removed (or never there), shared with the stream's state.
    pub removed_resources: Vec<Arc<str>>,
    /// The nonce the client answers with.
    pub nonce: String,
}

/// One state-of-the-world response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwResponse {
    /// The version the client ACKs with.
    pub version_info: String,
    /// The type.
    pub type_url: &'static str,
    /// The resources.
    pub resources: Vec<Arc<Encoded>>,
    /// The nonce the client answers with.
    pub nonce: String,
}

/// The length of a length-delimited field holding `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A string field as proto3 writes it: nothing when empty.
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

fn put_str(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_delimited(buf, tag, s.len());
        buf.put_slice(s.as_bytes());
    }
}

fn put_delimited(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// `google.protobuf.Any{type_url = 1, value = 2}`.
fn any_len(r: &Encoded) -> usize {
    str_len(1, &r.any.type_url) + bytes_len(2, &r.any.value)
}

fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        delimited_len(tag, b.len())
    }
}

fn put_any(buf: &mut Vec<u8>, tag: u32, r: &Encoded) {
    put_delimited(buf, tag, any_len(r));
    put_str(buf, 1, &r.any.type_url);
    if !r.any.value.is_empty() {
        put_delimited(buf, 2, r.any.value.len());
        buf.put_slice(&r.any.value);
    }
}

/// `Resource{version = 1, resource = 2, name = 3}`.
fn resource_len(r: &Encoded) -> usize {
    str_len(1, &r.version) + delimited_len(2, any_len(r)) + str_len(3, &r.name)
}

/// The gRPC frame: a flag byte (not compressed), the length, the message.
fn framed(len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    write(&mut buf);
    debug_assert_eq!(buf.len(), 5 + len, "computed and written lengths agree");
    Bytes::from(buf)
}

impl DeltaResponse {
    /// The encoded `DeltaDiscoveryResponse`'s length.
    pub(crate) fn encoded_len(&self) -> usize {
        str_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|r| delimited_len(2, resource_len(r)))
                .sum::<usize>()
            + str_len(4, self.type_url)
            + str_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| delimited_len(6, n.len()))
                .sum::<usize>()
    }

    /// The response as one gRPC frame.
    pub fn frame(&self) -> Bytes {
        framed(self.encoded_len(), |buf| {
            put_str(buf, 1, &self.system_version_info);
            for r in &self.resources {
                put_delimited(buf, 2, resource_len(r));
                put_str(buf, 1, &r.version);
                put_any(buf, 2, r);
                put_str(buf, 3, &r.name);
            }
            put_str(buf, 4, self.type_url);
            put_str(buf, 5, &self.nonce);
            for n in &self.removed_resources {
                put_delimited(buf, 6, n.len());
                buf.put_slice(n.as_bytes());
            }
        })
    }
}

impl SotwResponse {
    /// The encoded `DiscoveryResponse`'s length.
    pub(crate) fn encoded_len(&self) -> usize {
        str_len(1, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| delimited_len(2, any_len(r)))
                .sum::<usize>()
            + str_len(4, self.type_url)
            + str_len(5, &self.nonce)
    }

    /// The response as one gRPC frame.
    pub fn frame(&self) -> Bytes {
        framed(self.encoded_len(), |buf| {
            put_str(buf, 1, &self.version_info);
            for r in &self.resources {
                put_any(buf, 2, r);
            }
            put_str(buf, 4, self.type_url);
            put_str(buf, 5, &self.nonce);
        })
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use prost::Message;
    use xds_types::XdsType;

    use super::*;
    use crate::xds::stream::test_support::{cla, cluster};

    fn unframe(b: &Bytes) -> &[u8] {
        assert_eq!(b[0], 0, "not compressed");
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(b.len(), 5 + len, "the length prefix covers the message");
        &b[5..]
    }

    #[test]
    fn a_delta_frame_decodes_to_the_response_it_stands_for() {
        let big = {
            let mut r = (*cla("big", "v9")).clone();
            r.any.value = vec![7; 300];
            Arc::new(r)
        };
        let resp = DeltaResponse {
            system_version_info: "sv".into(),
            type_url: XdsType::Endpoint.type_url(),
            resources: vec![cla("a", "v1"), big.clone()],
            removed_resources: vec!["gone".into(), "also-gone".into()],
            nonce: "17".into(),
        };
        let frame = resp.frame();
        let got = DeltaDiscoveryResponse::decode(unframe(&frame)).expect("decodes");
        let want = DeltaDiscoveryResponse {
            system_version_info: "sv".into(),
            resources: resp
                .resources
                .iter()
                .map(|r| Resource {
                    name: r.name.to_string(),
                    version: r.version.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: XdsType::Endpoint.type_url().into(),
            removed_resources: vec!["gone".into(), "also-gone".into()],
            nonce: "17".into(),
            ..Default::default()
        };
        assert_eq!(got, want);
        assert_eq!(frame.len(), 5 + want.encoded_len());
    }

    #[test]
    fn a_sotw_frame_decodes_to_the_response_it_stands_for() {
        let resp = SotwResponse {
            version_info: "abc".into(),
            type_url: XdsType::Cluster.type_url(),
            resources: vec![cluster("a", "1"), cluster("b", "2")],
            nonce: "3".into(),
        };
        let frame = resp.frame();
        let got = DiscoveryResponse::decode(unframe(&frame)).expect("decodes");
        let want = DiscoveryResponse {
            version_info: "abc".into(),
            resources: resp.resources.iter().map(|r| r.any.clone()).collect(),
            type_url: XdsType::Cluster.type_url().into(),
            nonce: "3".into(),
            ..Default::default()
        };
        assert_eq!(got, want);
        assert_eq!(frame.len(), 5 + want.encoded_len());
    }

    #[test]
    fn empty_responses_frame_to_just_their_header_fields() {
        let resp = SotwResponse {
            type_url: XdsType::Route.type_url(),
            ..Default::default()
        };
        let got = DiscoveryResponse::decode(unframe(&resp.frame())).expect("decodes");
        assert!(got.resources.is_empty() && got.version_info.is_empty());
        assert_eq!(got.type_url, XdsType::Route.type_url());
    }
}
