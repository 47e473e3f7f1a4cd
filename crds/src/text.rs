//! Bounded quoting of values from objects in error messages and logs: whatever an object
//! holds, a message about it stays short.

/// Longest value quoted whole, in characters.
const QUOTE_MAX: usize = 64;
/// Longest message kept whole, in characters.
const MESSAGE_MAX: usize = 512;

/// `s` quoted like `{:?}`; long values are cut to their start and their length is said.
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_MAX / 2).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

/// `s` cut to `max` characters, with `...` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}

/// A message bounded to a few hundred characters (a safety net for messages that embed
/// values, such as a deserializer's).
pub fn bound(message: impl Into<String>) -> String {
    let m = message.into();
    if m.chars().count() <= MESSAGE_MAX {
        m
    } else {
        format!("{} ({} bytes in all)", clip(&m, MESSAGE_MAX), m.len())
    }
}

/// A DNS-1123 label: lowercase alphanumerics and `-`, 1 to 63, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_measured() {
        assert_eq!(quote("web"), "\"web\"");
        let long = "a".repeat(65536);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("(65536 bytes)"), "{q}");
        assert!(bound(long.clone()).len() < 600);
        assert_eq!(clip("abcdef", 3), "abc...");
    }
}
