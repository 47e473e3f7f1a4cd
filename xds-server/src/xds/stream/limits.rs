//! The bounds on what a request may carry: name, version and nonce sizes, and the
//! length of a NACK's error text kept.

use xds_types::XdsType;

use crate::xds::stream::event::Refusal;

/// Longest resource name a request may carry, in bytes (Rudder's own names stay under
/// 300: `outbound|PORT||` and a 253-character Service name with its domain; endpoints
/// are named shorter, `NAME.NS:PORT`).
pub(crate) const MAX_NAME_BYTES: usize = 512;
/// Longest version or nonce a request may carry, in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 128;
/// Longest proxy error text kept from a NACK, in bytes: it is untrusted input that is
/// stored, logged and written into CRD status.
pub(crate) const NACK_TEXT_MAX: usize = 4096;

/// Checks the sizes of what a request names: each name, version and nonce. Returns the
/// bytes of the names.
pub(crate) fn check_request_sizes<'a>(
    kind: XdsType,
    names: impl IntoIterator<Item = &'a str>,
    tokens: impl IntoIterator<Item = &'a str>,
) -> Result<usize, Refusal> {
    let refuse = |reason: String| Refusal {
        limit: "name_size",
        reason,
    };
    let mut total = 0usize;
    for n in names {
        if n.len() > MAX_NAME_BYTES {
            return Err(refuse(format!(
                "{kind}: a resource name of {} bytes is longer than {MAX_NAME_BYTES}",
                n.len()
            )));
        }
        total = total.saturating_add(n.len());
    }
    if let Some(t) = tokens.into_iter().find(|t| t.len() > MAX_TOKEN_BYTES) {
        return Err(refuse(format!(
            "{kind}: a version or nonce of {} bytes is longer than {MAX_TOKEN_BYTES}",
            t.len()
        )));
    }
    Ok(total)
}

/// A NACK's error text cut to [`NACK_TEXT_MAX`] bytes (at a character boundary).
pub(crate) fn bound_nack_text(text: &str) -> String {
    if text.len() <= NACK_TEXT_MAX {
        return text.to_string();
    }
    let mut end = NACK_TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}
