//! The path transformations against the cases Envoy's own tests pin down (its
//! `PathUtil` and `PathTransformer` tests), and the escapes the RBAC `url_path` rules
//! must not be bypassed by.

use std::sync::Arc;

use super::*;
use crate::live::Live;
use crate::stats::Stats;

fn cfg(escaped_slashes: EscapedSlashes, normalize: bool, merge_slashes: bool) -> PathNormalization {
    PathNormalization {
        escaped_slashes,
        normalize,
        merge_slashes,
    }
}

/// What the control plane sets where a policy matches on the path.
fn all() -> PathNormalization {
    cfg(EscapedSlashes::UnescapeAndForward, true, true)
}

fn forward(s: &str) -> Outcome {
    Outcome::Forward(s.into())
}

#[test]
fn canonical_paths_stay_as_they_are() {
    for p in [
        "/xyz", "/x/y/z", "/A/B/C", "/", "/a/", "/a/..b", "/a/...", "/a.b/c.",
    ] {
        assert_eq!(canonical_path(p).as_deref(), Some(p), "{p}");
    }
}

#[test]
fn dot_segments_go_plain_or_percent_encoded_and_never_above_the_root() {
    for (from, to) in [
        ("/a/b/../c", "/a/c"),
        ("/a/b/./c", "/a/b/c"),
        ("a/b/../c", "/a/c"),
        ("/a/b/../../../../c", "/c"),
        ("/a/b/%2E%2E/c", "/a/c"),
        ("/a/b/%2e%2e/c", "/a/c"),
        ("/a/b/%2e./c", "/a/c"),
        ("/a/b/.%2E/c", "/a/c"),
        ("/a/%2e/c", "/a/c"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/..", "/"),
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/a/b/..", "/a/"),
        ("/%2e", "/"),
        ("/a/%2e%2E/", "/"),
        ("", "/"),
        // A dot not after a slash is part of a name, and is decoded there too.
        ("/a%2e%2e/b", "/a../b"),
    ] {
        assert_eq!(canonical_path(from).as_deref(), Some(to), "{from}");
    }
}

#[test]
fn backslashes_are_slashes_but_escaped_ones_stay_escaped() {
    assert_eq!(canonical_path("/a/..\\c").as_deref(), Some("/c"));
    assert_eq!(canonical_path("\\a\\b").as_deref(), Some("/a/b"));
    assert_eq!(canonical_path("/a\\.\\b").as_deref(), Some("/a/b"));
    assert_eq!(canonical_path("/%5c%25").as_deref(), Some("/%5c%25"));
    // Escaped slashes are not separators to the canonicalizer: that is the job of
    // `path_with_escaped_slashes_action`, which runs first.
    assert_eq!(
        canonical_path("/public%2F..%2Fadmin").as_deref(),
        Some("/public%2F..%2Fadmin")
    );
    assert_eq!(
        canonical_path("/a/%2F%2f/c").as_deref(),
        Some("/a/%2F%2f/c")
    );
}

#[test]
fn unreserved_escapes_are_decoded_and_the_rest_keep_their_hex_case() {
    assert_eq!(
        canonical_path("/%41%7e%2D%5f%30").as_deref(),
        Some("/A~-_0")
    );
    assert_eq!(canonical_path("/%c0%af").as_deref(), Some("/%c0%af"));
    assert_eq!(canonical_path("/%3f%3F%23").as_deref(), Some("/%3f%3F%23"));
    // Characters a path may not hold are escaped (upper-case hex).
    assert_eq!(
        canonical_path("/a\"{}|^ b").as_deref(),
        Some("/a%22%7B%7D%7C%5E%20b")
    );
    assert_eq!(canonical_path("/é").as_deref(), Some("/%C3%A9"));
    // A `%` that begins no escape is kept.
    assert_eq!(canonical_path("/a%zz%").as_deref(), Some("/a%zz%"));
    assert_eq!(canonical_path("/a%2").as_deref(), Some("/a%2"));
}

#[test]
fn nested_escapes_cannot_decode_into_a_new_one() {
    // `%%30%30` would read `%00` once its inner escapes are decoded.
    assert_eq!(canonical_path("/%%30%30").as_deref(), Some("/%2500"));
    assert_eq!(canonical_path("/%%341").as_deref(), Some("/%2541"));
    assert_eq!(canonical_path("/%%3g").as_deref(), Some("/%%3g"));
}

#[test]
fn a_nul_fails_literal_or_encoded() {
    for p in [
        "/xyz/.%00../abc",
        "/xyz/%00.%00./abc",
        "/xyz/AAAAA%%0000/abc",
        "/a\0b",
    ] {
        assert_eq!(canonical_path(p), None, "{p:?}");
    }
}

#[test]
fn escaped_slashes_unescape_in_any_case_and_only_whole_escapes() {
    let u = |p: &str| unescape_slashes(p);
    assert_eq!(u(""), None);
    assert_eq!(u("%2f%2F").as_deref(), Some("//"));
    assert_eq!(u("/a%2Fb%2fc/").as_deref(), Some("/a/b/c/"));
    assert_eq!(u("%2b"), None);
    assert_eq!(u("/a/b/c"), None);
    for incomplete in ["%2", "%", "/abc%2", "foo%"] {
        assert_eq!(u(incomplete), None, "{incomplete}");
    }
    assert_eq!(u("/a%2F").as_deref(), Some("/a/"));
    assert_eq!(u("%2fa/").as_deref(), Some("/a/"));
    assert_eq!(u("%%2fa/").as_deref(), Some("%/a/"));
    assert_eq!(u("%2%2fa/").as_deref(), Some("%2/a/"));
    assert_eq!(u("%5c%5C").as_deref(), Some("\\\\"));
    assert_eq!(u("/a%5Cb%5cc/").as_deref(), Some("/a\\b\\c/"));
    assert_eq!(
        u("/x/%2E%2e/z%2f%2Fabc%5C../def").as_deref(),
        Some("/x/%2E%2e/z//abc\\../def")
    );
}

#[test]
fn slashes_merge_as_envoy_merges_them() {
    let m = |p: &str| merge_slashes(p);
    assert_eq!(m(""), None);
    assert_eq!(m("/a"), None);
    assert_eq!(m("a//b/c").as_deref(), Some("a/b/c"));
    assert_eq!(m("/a//b/c/").as_deref(), Some("/a/b/c/"));
    assert_eq!(m("//a/b/c").as_deref(), Some("/a/b/c"));
    assert_eq!(m("/a/b/c//").as_deref(), Some("/a/b/c/"));
    assert_eq!(m("/a////b/c").as_deref(), Some("/a/b/c"));
    // Envoy keeps a leading and a trailing slash apart: slashes only stay two.
    assert_eq!(m("///").as_deref(), Some("//"));
}

#[test]
fn the_three_together_close_the_escapes_and_leave_the_query() {
    let t = |p: &str| transform(&all(), p);
    assert_eq!(t("/public/x"), Outcome::Unchanged);
    assert_eq!(t("/public/../admin"), forward("/admin"));
    assert_eq!(t("/public/%2e%2e/admin"), forward("/admin"));
    assert_eq!(t("/public//x"), forward("/public/x"));
    assert_eq!(t("/public%2F..%2Fadmin"), forward("/admin"));
    assert_eq!(t("/public%5C..%5Cadmin"), forward("/admin"));
    assert_eq!(t("/public\\..\\admin"), forward("/admin"));
    assert_eq!(t("/public/.//../admin"), forward("/public/admin"));
    assert_eq!(
        t("/x/%2E%2e/z%2f%2Fabc%5C../def"),
        forward("/z/def"),
        "unescaped, then normalized (`/z//def`), then merged"
    );
    assert_eq!(
        t("/a//b/%2e%2e/c?next=/x/../y//%2F&q=%2e"),
        forward("/a/c?next=/x/../y//%2F&q=%2e")
    );
    assert_eq!(t("/a?"), Outcome::Unchanged);
    assert_eq!(t("/a/%00"), Outcome::Reject);
    assert_eq!(t("*"), Outcome::Unchanged, "not a path: left alone");
}

#[test]
fn each_field_alone_does_only_its_part() {
    let none = PathNormalization::default();
    assert_eq!(transform(&none, "/a/../b//c%2F"), Outcome::Unchanged);
    assert_eq!(transform(&none, "/a/%00"), Outcome::Unchanged);

    let normalize = cfg(EscapedSlashes::Keep, true, false);
    assert_eq!(transform(&normalize, "/a/../b//c"), forward("/b//c"));
    assert_eq!(
        transform(&normalize, "/public%2F..%2Fadmin"),
        Outcome::Unchanged
    );

    let merge = cfg(EscapedSlashes::Keep, false, true);
    assert_eq!(transform(&merge, "//a/../b?x=//"), forward("/a/../b?x=//"));

    let unescape = cfg(EscapedSlashes::UnescapeAndForward, false, false);
    assert_eq!(
        transform(&unescape, "/a%2fb%5Cc?d=%2F"),
        forward("/a/b\\c?d=%2F")
    );
    assert_eq!(transform(&unescape, "/a/b?d=%2F"), Outcome::Unchanged);

    let reject = cfg(EscapedSlashes::Reject, true, true);
    assert_eq!(transform(&reject, "/a%2Fb"), Outcome::Reject);
    assert_eq!(transform(&reject, "/a/%5c"), Outcome::Reject);
    assert_eq!(transform(&reject, "/a/b?c=%2F"), Outcome::Unchanged);
    assert_eq!(transform(&reject, "/a//b"), forward("/a/b"));
}

#[test]
fn a_redirect_carries_the_path_after_every_transformation() {
    let redirect = cfg(EscapedSlashes::UnescapeAndRedirect, true, true);
    assert_eq!(
        transform(&redirect, "/a%2f%2Fb/../c?q=%2f"),
        Outcome::Redirect("/a/c?q=%2f".into())
    );
    // Without an escaped slash there is no redirect, only the other transformations.
    assert_eq!(transform(&redirect, "/a//b/../c"), forward("/a/c"));
    assert_eq!(transform(&redirect, "/a%2F%00"), Outcome::Reject);
}

fn request(uri: &str, grpc: bool) -> Request<()> {
    let mut b = Request::get(uri);
    if grpc {
        b = b.header(http::header::CONTENT_TYPE, "application/grpc");
    }
    b.body(()).expect("request")
}

fn ctx() -> Arc<Ctx> {
    Ctx::new(Arc::new(Live::default()), Arc::new(Stats::default()))
}

#[test]
fn the_request_takes_the_new_path_and_keeps_its_authority() {
    let ctx = ctx();
    let mut req = request("http://shop:80/public%2F..%2Fadmin?x=1", false);
    assert!(apply(&ctx, "inbound", &all(), &mut req).is_none());
    assert_eq!(req.uri().to_string(), "http://shop:80/admin?x=1");

    let mut req = request("/public/x", false);
    assert!(apply(&ctx, "inbound", &all(), &mut req).is_none());
    assert_eq!(req.uri(), "/public/x");
}

#[test]
fn refusals_are_400_and_redirects_307_counted_as_envoy_counts_them() {
    let ctx = ctx();
    let failed = |ctx: &Ctx| {
        ctx.stats
            .counter("http.inbound.downstream_rq_failed_path_normalization")
            .get()
    };
    let mut req = request("/a/%00", false);
    let resp = apply(&ctx, "inbound", &all(), &mut req).expect("refused");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(failed(&ctx), 1);

    let redirect = cfg(EscapedSlashes::UnescapeAndRedirect, true, true);
    let mut req = request("/a%2F..%2Fb?q", false);
    let resp = apply(&ctx, "inbound", &redirect, &mut req).expect("redirected");
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(resp.headers()[http::header::LOCATION], "/b?q");
    assert_eq!(
        ctx.stats
            .counter("http.inbound.downstream_rq_redirected_with_normalized_path")
            .get(),
        1
    );

    // gRPC clients do not follow redirects: refused (`grpc-status: 13`).
    let mut req = request("/a%2F..%2Fb", true);
    let resp = apply(&ctx, "inbound", &redirect, &mut req).expect("refused");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "13");
    assert_eq!(failed(&ctx), 2);
}
