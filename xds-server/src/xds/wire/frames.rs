//! ADS responses as the stream machines produce them, holding the shared encoded
//! resources, and their encoding into gRPC frames. A response is written straight from
//! the resources' encoded bytes into one buffer of exactly its size: nothing is copied
//! into per-proxy protobuf structs first, and no encode buffer outlives the frame.
//!
//! A response with many resources goes out as a head of its own and a body shared with
//! the proxies sent the same resources ([`super::shared_body`]).
//!
//! Field numbers are those of `envoy.service.discovery.v3`; the tests decode every frame
//! with the generated types and compare.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use translator::encoded::Encoded;

use super::shared_body::{Bodies, Fingerprint, SharedBodies, worth_sharing};

/// A response's frame as it goes out: one piece, or a head of its own followed by a
/// shared body.
#[derive(Debug)]
pub struct Framing {
    /// The frame, or its head: the gRPC prefix and the response's own fields.
    pub head: Bytes,
    /// The resources and the type, shared.
    pub shared: Option<Bytes>,
}

/// Where a response's body comes from.
pub enum KeptBody<'a> {
    /// Framed whole: too little to share, or nowhere to keep it.
    Whole,
    /// Kept for the same resources, for another proxy.
    Kept(Bytes),
    /// Not kept: built (and kept by `bodies` if it is seen again), its list already
    /// fingerprinted.
    Build(&'a SharedBodies, Fingerprint),
}

/// One delta (incremental) response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaResponse {
    /// A version naming the response as a whole.
    pub system_version_info: String,
    /// The type.
    pub type_url: &'static str,
    /// Added or changed resources.
    pub resources: Arc<[Arc<Encoded>]>,
    /// Names removed (or never there), shared with the stream's state.
    pub removed_resources: Vec<Arc<str>>,
    /// The nonce the client answers with.
    pub nonce: String,
    /// Where a body shared with other proxies is kept.
    pub bodies: Bodies,
}

/// One state-of-the-world response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwResponse {
    /// The version the client ACKs with.
    pub version_info: String,
    /// The type.
    pub type_url: &'static str,
    /// The resources.
    pub resources: Arc<[Arc<Encoded>]>,
    /// The nonce the client answers with.
    pub nonce: String,
    /// Where a body shared with other proxies is kept.
    pub bodies: Bodies,
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
    framed_with(len, len, write)
}

/// A gRPC frame of a `len`-byte message whose first `here` bytes `write` writes.
fn framed_with(len: usize, here: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(5 + here);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    write(&mut buf);
    debug_assert_eq!(buf.len(), 5 + here, "computed and written lengths agree");
    Bytes::from(buf)
}

/// Writes exactly `len` bytes with `write` into a buffer of their own.
fn written(len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(len);
    write(&mut buf);
    debug_assert_eq!(buf.len(), len, "computed and written lengths agree");
    Bytes::from(buf)
}

/// A response as framing sees it: fields of its own (small, per stream) and a body
/// (the resources and the type) that proxies sent the same resources can share.
pub trait Response {
    /// Delta or state-of-the-world: the two encode their resources differently.
    const DELTA: bool;
    /// Where a shared body is kept.
    fn bodies(&self) -> &Bodies;
    /// The resources.
    fn resources(&self) -> &[Arc<Encoded>];
    /// The type.
    fn type_url(&self) -> &'static str;
    /// The length of the fields of its own.
    fn own_len(&self) -> usize;
    /// Writes the fields of its own.
    fn put_own(&self, buf: &mut Vec<u8>);
    /// The length of the resources and the type.
    fn body_len(&self) -> usize;
    /// Writes the resources and the type.
    fn put_body(&self, buf: &mut Vec<u8>);

    /// The encoded message's length.
    fn encoded_len(&self) -> usize {
        self.own_len() + self.body_len()
    }

    /// The response as one gRPC frame.
    fn frame(&self) -> Bytes {
        framed(self.encoded_len(), |buf| {
            self.put_own(buf);
            self.put_body(buf);
        })
    }

    /// Where the response's body comes from: looked up once, before the frame is
    /// admitted, and handed to [`Response::framing`].
    fn kept_body(&self) -> KeptBody<'_> {
        match &self.bodies().0 {
            Some(bodies) if worth_sharing(self.resources()) => {
                match bodies.find(self.type_url(), Self::DELTA, self.resources()) {
                    Ok(body) => KeptBody::Kept(body),
                    Err(print) => KeptBody::Build(bodies, print),
                }
            }
            _ => KeptBody::Whole,
        }
    }

    /// Bytes of the frame (5 of gRPC header and the message), given where its body
    /// comes from.
    fn frame_len(&self, kept: &KeptBody<'_>) -> usize {
        5 + match kept {
            KeptBody::Kept(body) => self.own_len() + body.len(),
            _ => self.encoded_len(),
        }
    }

    /// The response as it goes out, given where its body comes from: a head of its own
    /// and a shared body, or one piece.
    fn framing(&self, kept: KeptBody<'_>) -> Framing {
        let shared = match kept {
            KeptBody::Kept(body) => body,
            KeptBody::Build(bodies, print) => bodies.get_or_build(
                print,
                self.type_url(),
                Self::DELTA,
                self.resources(),
                || written(self.body_len(), |buf| self.put_body(buf)),
            ),
            KeptBody::Whole => {
                return Framing {
                    head: self.frame(),
                    shared: None,
                };
            }
        };
        let own = self.own_len();
        Framing {
            head: framed_with(own + shared.len(), own, |buf| self.put_own(buf)),
            shared: Some(shared),
        }
    }

    /// [`Response::framing`] of what [`Response::kept_body`] finds.
    #[cfg(test)]
    fn framed(&self) -> Framing {
        self.framing(self.kept_body())
    }
}

impl Response for DeltaResponse {
    const DELTA: bool = true;

    fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    fn resources(&self) -> &[Arc<Encoded>] {
        &self.resources
    }

    fn type_url(&self) -> &'static str {
        self.type_url
    }

    /// Version, nonce, removals.
    fn own_len(&self) -> usize {
        str_len(1, &self.system_version_info)
            + str_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| delimited_len(6, n.len()))
                .sum::<usize>()
    }

    fn put_own(&self, buf: &mut Vec<u8>) {
        put_str(buf, 1, &self.system_version_info);
        put_str(buf, 5, &self.nonce);
        for n in &self.removed_resources {
            put_delimited(buf, 6, n.len());
            buf.put_slice(n.as_bytes());
        }
    }

    fn body_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| delimited_len(2, resource_len(r)))
            .sum();
        resources + str_len(4, self.type_url)
    }

    fn put_body(&self, buf: &mut Vec<u8>) {
        for r in self.resources.iter() {
            put_delimited(buf, 2, resource_len(r));
            put_str(buf, 1, &r.version);
            put_any(buf, 2, r);
            put_str(buf, 3, &r.name);
        }
        put_str(buf, 4, self.type_url);
    }
}

impl Response for SotwResponse {
    const DELTA: bool = false;

    fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    fn resources(&self) -> &[Arc<Encoded>] {
        &self.resources
    }

    fn type_url(&self) -> &'static str {
        self.type_url
    }

    /// Version and nonce.
    fn own_len(&self) -> usize {
        str_len(1, &self.version_info) + str_len(5, &self.nonce)
    }

    fn put_own(&self, buf: &mut Vec<u8>) {
        put_str(buf, 1, &self.version_info);
        put_str(buf, 5, &self.nonce);
    }

    fn body_len(&self) -> usize {
        let anys: usize = self
            .resources
            .iter()
            .map(|r| delimited_len(2, any_len(r)))
            .sum();
        anys + str_len(4, self.type_url)
    }

    fn put_body(&self, buf: &mut Vec<u8>) {
        for r in self.resources.iter() {
            put_any(buf, 2, r);
        }
        put_str(buf, 4, self.type_url);
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
    use crate::xds::wire::shared_body::{SHARE_BYTES, SHARE_MIN, SharedBodies};

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
            resources: vec![cla("a", "v1"), big.clone()].into(),
            removed_resources: vec!["gone".into(), "also-gone".into()],
            nonce: "17".into(),
            bodies: Bodies::default(),
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
            resources: vec![cluster("a", "1"), cluster("b", "2")].into(),
            nonce: "3".into(),
            bodies: Bodies::default(),
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

    /// The pieces of a framing, joined.
    fn joined(f: &Framing) -> Bytes {
        let mut all = f.head.to_vec();
        all.extend_from_slice(f.shared.as_deref().unwrap_or_default());
        Bytes::from(all)
    }

    fn many(n: usize, make: fn(&str, &str) -> Arc<Encoded>) -> Vec<Arc<Encoded>> {
        (0..n)
            .map(|i| make(&format!("r{i:03}"), &format!("v{i}")))
            .collect()
    }

    #[test]
    fn a_large_delta_response_shares_its_body_with_the_next_proxy_sent_the_same() {
        let cache = Arc::new(SharedBodies::default());
        let resources = many(SHARE_MIN + 4, cla);
        let resp = |nonce: &str, removed: Vec<Arc<str>>| DeltaResponse {
            system_version_info: format!("sv{nonce}"),
            type_url: XdsType::Endpoint.type_url(),
            resources: resources.clone().into(),
            removed_resources: removed,
            nonce: nonce.into(),
            bodies: Bodies(Some(cache.clone())),
        };
        // A first proxy: the list is seen once, and its body kept the second time.
        resp("0", Vec::new()).framed();
        let one = resp("1", vec!["gone".into()]);
        let two = resp("2", Vec::new());
        let (a, b) = (one.framed(), two.framed());
        // Each decodes to what it stands for: its own fields, the shared resources.
        for (r, f) in [(&one, &a), (&two, &b)] {
            let whole = joined(f);
            assert_eq!(
                DeltaDiscoveryResponse::decode(unframe(&whole)).expect("decodes"),
                DeltaDiscoveryResponse::decode(unframe(&r.frame())).expect("decodes"),
            );
            assert_eq!(whole.len(), 5 + r.encoded_len());
        }
        let whole_b = joined(&b);
        let (sa, sb) = (a.shared.expect("shared"), b.shared.expect("shared"));
        assert_eq!(sa.as_ptr(), sb.as_ptr(), "one body, encoded once");
        assert_eq!(cache.len(), 1);
        // The glue learns the length from the kept body and frames with it.
        let kept = two.kept_body();
        let KeptBody::Kept(body) = &kept else {
            panic!("not kept")
        };
        assert_eq!(body.as_ptr(), sa.as_ptr());
        assert_eq!(two.frame_len(&kept), 5 + two.encoded_len());
        assert_eq!(joined(&two.framing(kept)), whole_b);

        // The same resources as other allocations (a proxy's own) share it too; other
        // resources, or the state-of-the-world form, do not.
        let copies: Vec<Arc<Encoded>> = resources.iter().map(|r| Arc::new((**r).clone())).collect();
        let three = DeltaResponse {
            resources: copies.into(),
            ..resp("3", Vec::new())
        };
        assert_eq!(three.framed().shared.expect("shared").as_ptr(), sa.as_ptr());
        let mut other = resources.clone();
        other[3] = cla("r003", "changed");
        let four = DeltaResponse {
            resources: other.into(),
            ..resp("4", Vec::new())
        };
        let f = four.framed();
        assert_ne!(f.shared.as_ref().expect("shared").as_ptr(), sa.as_ptr());
        assert_eq!(
            DeltaDiscoveryResponse::decode(unframe(&joined(&f))).expect("decodes"),
            DeltaDiscoveryResponse::decode(unframe(&four.frame())).expect("decodes"),
        );
        let sotw = SotwResponse {
            version_info: "x".into(),
            type_url: XdsType::Endpoint.type_url(),
            resources: resources.clone().into(),
            nonce: "5".into(),
            bodies: Bodies(Some(cache.clone())),
        };
        assert_ne!(sotw.framed().shared.expect("shared").as_ptr(), sa.as_ptr());
        assert_eq!(cache.len(), 1, "lists seen once keep nothing");
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_large_sotw_response_shares_its_body_and_a_small_one_goes_whole() {
        let cache = Arc::new(SharedBodies::default());
        let resp = |resources: Vec<Arc<Encoded>>, nonce: &str| SotwResponse {
            version_info: format!("v{nonce}"),
            type_url: XdsType::Cluster.type_url(),
            resources: resources.into(),
            nonce: nonce.into(),
            bodies: Bodies(Some(cache.clone())),
        };
        let resources = many(SHARE_MIN, cluster);
        resp(resources.clone(), "0").framed();
        let (one, two) = (resp(resources.clone(), "1"), resp(resources, "2"));
        let (a, b) = (one.framed(), two.framed());
        for (r, f) in [(&one, &a), (&two, &b)] {
            assert_eq!(
                DiscoveryResponse::decode(unframe(&joined(f))).expect("decodes"),
                DiscoveryResponse::decode(unframe(&r.frame())).expect("decodes"),
            );
        }
        assert_eq!(
            a.shared.expect("shared").as_ptr(),
            b.shared.expect("shared").as_ptr()
        );
        let small = resp(many(SHARE_MIN - 1, cluster), "3");
        assert!(matches!(small.kept_body(), KeptBody::Whole));
        let f = small.framed();
        assert!(f.shared.is_none(), "too few resources to share");
        assert_eq!(f.head, small.frame());
        assert_eq!(cache.len(), 1);
        // One large resource (a whole route table) is worth sharing.
        let mut table = (*cluster("table", "1")).clone();
        table.any.value = vec![7; SHARE_BYTES];
        let table = Arc::new(table);
        resp(vec![table.clone()], "3").framed();
        let (one, two) = (resp(vec![table.clone()], "4"), resp(vec![table], "5"));
        let (a, b) = (one.framed(), two.framed());
        assert_eq!(
            a.shared.as_ref().expect("shared").as_ptr(),
            b.shared.as_ref().expect("shared").as_ptr()
        );
        assert_eq!(
            DiscoveryResponse::decode(unframe(&joined(&b))).expect("decodes"),
            DiscoveryResponse::decode(unframe(&two.frame())).expect("decodes"),
        );
    }
}
