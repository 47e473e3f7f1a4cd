//! The connection manager's request path transformations, as Envoy's
//! `ConnectionManagerUtility::maybeNormalizePath` applies them before any HTTP filter
//! and routing: `path_with_escaped_slashes_action` first (`%2F`/`%2f` to `/`, `%5C`/`%5c`
//! to `\`; or 400), then `normalize_path` (Chromium's path canonicalization, which
//! Envoy uses: dot segments removed, `%2e`/`%2E` counted as dots, backslashes as
//! slashes, percent-encoded unreserved characters decoded, other escapes kept with
//! their hex case, characters a path may not hold escaped; an encoded or literal NUL
//! fails, answered 400), then `merge_slashes`. Only the path is transformed, never the
//! query. An unescape under `UNESCAPE_AND_REDIRECT` answers 307 with the transformed
//! path as `Location` (a gRPC request 400), counted as Envoy counts it.

use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Request, Response, StatusCode};

use super::req::{is_grpc, local, local_reply};
use crate::config::listener::{EscapedSlashes, PathNormalization};
use crate::data::ctx::Ctx;
use crate::data::upstream::io::Body;

/// What the transformations make of a request's path and query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing changed: the request goes on as it is.
    Unchanged,
    /// The request goes on with this path and query.
    Forward(String),
    /// The request is answered 307 with this path and query as `Location`.
    Redirect(String),
    /// The request is answered 400.
    Reject,
}

/// Applies `cfg` to `path_and_query` (origin form). A path that does not start with `/`
/// (`*`) is left alone: Envoy refuses it before it would transform it.
pub(crate) fn transform(cfg: &PathNormalization, path_and_query: &str) -> Outcome {
    if *cfg == PathNormalization::default() || !path_and_query.starts_with('/') {
        return Outcome::Unchanged;
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let mut path = path.to_string();
    let mut redirect = false;
    if cfg.escaped_slashes != EscapedSlashes::Keep
        && let Some(unescaped) = unescape_slashes(&path)
    {
        match cfg.escaped_slashes {
            EscapedSlashes::Reject => return Outcome::Reject,
            EscapedSlashes::UnescapeAndRedirect => redirect = true,
            EscapedSlashes::UnescapeAndForward | EscapedSlashes::Keep => {}
        }
        path = unescaped;
    }
    if cfg.normalize {
        match canonical_path(&path) {
            Some(p) => path = p,
            None => return Outcome::Reject,
        }
    }
    if cfg.merge_slashes
        && let Some(merged) = merge_slashes(&path)
    {
        path = merged;
    }
    path.push_str(query);
    if redirect {
        Outcome::Redirect(path)
    } else if path == path_and_query {
        Outcome::Unchanged
    } else {
        Outcome::Forward(path)
    }
}

/// The path with `%2F`, `%2f` to `/` and `%5C`, `%5c` to `\`; `None` when it has none.
pub(crate) fn unescape_slashes(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let (mut i, mut from, mut found) = (0, 0, false);
    while i + 2 < b.len() {
        let unescaped = match (b[i], b[i + 1], b[i + 2]) {
            (b'%', b'2', b'f' | b'F') => '/',
            (b'%', b'5', b'c' | b'C') => '\\',
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&path[from..i]);
        out.push(unescaped);
        found = true;
        i += 3;
        from = i;
    }
    if !found {
        return None;
    }
    out.push_str(&path[from..]);
    Some(out)
}

/// Runs of `/` collapsed, as Envoy's `mergeSlashes` does it: the non-empty segments
/// joined by `/`, with a leading and a trailing `/` when the path had them (so a path
/// of slashes only, `//`, stays `//`, as in Envoy). `None` when the path has no `//`.
pub(crate) fn merge_slashes(path: &str) -> Option<String> {
    if !path.contains("//") {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push('/');
    }
    let mut first = true;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if !first {
            out.push('/');
        }
        out.push_str(segment);
        first = false;
    }
    if path.ends_with('/') {
        out.push('/');
    }
    Some(out)
}

/// How the canonicalizer treats a byte of the path (Chromium's path character table,
/// as in the URL library Envoy builds with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Copied as it is, and kept escaped when it comes escaped.
    Pass,
    /// Copied as it is, and decoded when it comes escaped (unreserved characters).
    Unescape,
    /// Percent-encoded in the output (and kept escaped when it comes escaped).
    Escape,
    /// Percent-encoded, and the path fails (NUL).
    Invalid,
    /// `.`, `%` and `\`: handled on their own.
    Special,
}

fn class(b: u8) -> Class {
    match b {
        0 => Class::Invalid,
        b'.' | b'%' | b'\\' => Class::Special,
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'_' | b'~' => Class::Unescape,
        b'!' | b'$' | b'&'..=b',' | b'/' | b':' | b';' | b'=' | b'@' | b'[' | b']' => Class::Pass,
        // Controls, space, `"`, `#`, `<`, `>`, `?`, `^`, `` ` ``, `{`, `|`, `}`, DEL and
        // every byte above ASCII.
        _ => Class::Escape,
    }
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// The length of the dot at `i`: 1 for `.`, 3 for `%2e` or `%2E`, 0 for none.
fn dot_len(s: &[u8], i: usize) -> usize {
    match s.get(i..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

/// The byte a valid `%XX` at `i` encodes.
fn decode_escape(s: &[u8], i: usize) -> Option<u8> {
    match s.get(i..i + 3) {
        Some([b'%', h, l]) => {
            let hex = |c: &u8| char::from(*c).to_digit(16);
            u8::try_from(hex(h)? * 16 + hex(l)?).ok()
        }
        _ => None,
    }
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// What a dot segment does, and how many input bytes after its first dot it takes.
enum Dots {
    /// Not a segment of dots: the dot is part of a name.
    Name,
    /// `.`: dropped.
    Current(usize),
    /// `..`: the previous segment is dropped too.
    Parent(usize),
}

/// What the dot that ends before `after` (and follows a slash) begins.
fn classify_dots(s: &[u8], after: usize) -> Dots {
    match s.get(after) {
        None => return Dots::Current(0),
        Some(&b) if is_slash(b) => return Dots::Current(1),
        Some(_) => {}
    }
    let second = dot_len(s, after);
    if second == 0 {
        return Dots::Name;
    }
    match s.get(after + second) {
        None => Dots::Parent(second),
        Some(&b) if is_slash(b) => Dots::Parent(second + 1),
        Some(_) => Dots::Name,
    }
}

/// Drops the output's last segment: `out` ends with `/`; it is cut after the slash
/// before it, never above the first.
fn back_up(out: &mut Vec<u8>) {
    let Some(mut i) = out.len().checked_sub(1) else {
        return;
    };
    if i == 0 {
        return;
    }
    i -= 1;
    while i > 0 && out[i] != b'/' {
        i -= 1;
    }
    out.truncate(i + 1);
}

/// After a character was decoded within two output bytes of an earlier `%` that began
/// no valid escape: if the output now reads as an escape there (`%%30%30` would
/// become `%00`), that `%` is written as `%25`, so the output cannot decode to
/// something the input did not say. `next` is the next input index.
fn fix_nested_escape(s: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let Some(&last) = out.last() else {
        return;
    };
    let append_next = percent + 2 == len;
    if append_next {
        match s.get(next) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if decode_escape(out, percent).is_some() {
        if !append_next {
            out.push(out[percent + 1]);
        }
        out[percent + 1] = b'2';
        out[percent + 2] = b'5';
        out.push(last);
    } else if append_next {
        out.truncate(len);
    }
}

/// The path as Envoy's `normalize_path` canonicalizes it (Chromium's
/// `CanonicalizePath`): `None` when it fails (a NUL, literal or encoded).
pub(crate) fn canonical_path(path: &str) -> Option<String> {
    let s = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len() + 1);
    match s.first() {
        None => return Some("/".into()),
        Some(&b) if !is_slash(b) => out.push(b'/'),
        Some(_) => {}
    }
    let mut ok = true;
    // The output index of the last `%` that began no valid escape.
    let mut bad_percent: Option<usize> = None;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match class(b) {
            Class::Pass | Class::Unescape => {
                out.push(b);
                i += 1;
                continue;
            }
            Class::Escape => {
                push_escaped(&mut out, b);
                i += 1;
                continue;
            }
            Class::Invalid => {
                push_escaped(&mut out, b);
                ok = false;
                i += 1;
                continue;
            }
            Class::Special => {}
        }
        let dot = dot_len(s, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify_dots(s, i + dot) {
                    Dots::Name => {
                        out.push(b'.');
                        i += dot;
                    }
                    Dots::Current(taken) => i += dot + taken,
                    Dots::Parent(taken) => {
                        back_up(&mut out);
                        i += dot + taken;
                    }
                }
            } else {
                out.push(b'.');
                i += dot;
            }
        } else if b == b'\\' {
            out.push(b'/');
            i += 1;
        } else if let Some(v) = decode_escape(s, i) {
            match class(v) {
                Class::Unescape => {
                    out.push(v);
                    if let Some(p) = bad_percent
                        && p + 3 >= out.len()
                    {
                        fix_nested_escape(s, i + 3, p, &mut out);
                    }
                }
                c => {
                    // Kept as it came, hex case included.
                    out.extend_from_slice(&s[i..i + 3]);
                    ok &= c != Class::Invalid;
                }
            }
            i += 3;
        } else {
            // A `%` that begins no valid escape is kept, as Chromium (permissively) does.
            bad_percent = Some(out.len());
            out.push(b'%');
            i += 1;
        }
    }
    if !ok {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Applies the connection manager's path transformations to `req` (not a CONNECT),
/// replacing its path when they changed it; the local reply that answers it instead
/// (400, or a 307 redirect, counted under `http.<stat_prefix>.`), if any.
pub(super) fn apply<B>(
    ctx: &Ctx,
    prefix: &str,
    cfg: &PathNormalization,
    req: &mut Request<B>,
) -> Option<Response<Body>> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let reject = |req: &Request<B>| {
        ctx.stats
            .counter(&format!(
                "http.{prefix}.downstream_rq_failed_path_normalization"
            ))
            .inc();
        local_reply(req.headers(), StatusCode::BAD_REQUEST, "")
    };
    match transform(cfg, pq) {
        Outcome::Unchanged => None,
        Outcome::Reject => Some(reject(req)),
        // gRPC clients do not follow redirects: Envoy refuses them instead.
        Outcome::Redirect(_) if is_grpc(req.headers()) => Some(reject(req)),
        Outcome::Redirect(to) => {
            let Ok(location) = HeaderValue::from_str(&to) else {
                return Some(reject(req));
            };
            ctx.stats
                .counter(&format!(
                    "http.{prefix}.downstream_rq_redirected_with_normalized_path"
                ))
                .inc();
            let mut resp = local(StatusCode::TEMPORARY_REDIRECT, "");
            resp.headers_mut().insert(http::header::LOCATION, location);
            Some(resp)
        }
        Outcome::Forward(to) => {
            let Some(uri) = with_path(req.uri(), to) else {
                return Some(reject(req));
            };
            *req.uri_mut() = uri;
            None
        }
    }
}

/// `uri` (its scheme and authority, if it has them) with the path and query `pq`.
fn with_path(uri: &Uri, pq: String) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
