//! What Envoy accepts as a regular expression: RE2 syntax, and a compiled program of at
//! most 100 instructions (Envoy's default `re2.max_program_size.error_level`). A route
//! with anything else is rejected by every proxy it reaches, so objects carrying one are
//! refused up front.
//!
//! RE2 is not available here, so the syntax is checked with `regex-syntax` (whose syntax
//! RE2 shares, minus the extensions refused below) and the program size is an upper
//! bound computed from the parsed expression. The bound is exact for literals and ASCII
//! classes (the common case in paths and headers) and generous for Unicode classes;
//! `testbed/tests/envoy_limits.rs` checks it against Envoy itself.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Envoy's default limit on an RE2 program's size.
pub const MAX_PROGRAM_SIZE: u64 = 100;

/// Longest pattern looked at (anything longer is over the program limit anyway).
pub const MAX_PATTERN_LEN: usize = 1024;

/// Instructions every program has besides the expression's own (measured with Envoy:
/// `a{96}` is 100).
const OVERHEAD: u64 = 4;

/// Checks `pattern` as Envoy would; the error says what is wrong.
pub fn check(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    if let Some(what) = rust_only_syntax(pattern) {
        return Err(format!(
            "{} uses {what}, which RE2 (Envoy's regex engine) does not support",
            crate::text::quote(pattern)
        ));
    }
    let hir = regex_syntax::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(pattern)
        .map_err(|e| {
            let first = e.to_string();
            let last = first.lines().last().unwrap_or_default().trim().to_string();
            format!(
                "{} is not a valid RE2 regular expression: {last}",
                crate::text::quote(pattern)
            )
        })?;
    let size = program_size(&hir);
    if size > MAX_PROGRAM_SIZE {
        return Err(format!(
            "{} may compile to {size} RE2 instructions (an upper bound; large Unicode classes count in full); Envoy accepts at most {MAX_PROGRAM_SIZE}",
            crate::text::quote(pattern)
        ));
    }
    Ok(())
}

/// An upper bound of the RE2 program size of `hir`, overhead included.
pub fn program_size(hir: &Hir) -> u64 {
    size(hir).saturating_add(OVERHEAD)
}

fn size(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty => 0,
        HirKind::Literal(l) => l.0.len() as u64,
        HirKind::Class(Class::Unicode(c)) => {
            let (mut ascii, mut other) = (0u64, 0u64);
            for r in c.ranges() {
                if r.start() <= '\x7f' {
                    ascii += 1;
                }
                if r.end() > '\x7f' {
                    other += 1;
                }
            }
            // A non-ASCII range is up to four bytes; RE2 shares suffixes, so this is
            // an upper bound.
            (ascii + 4 * other).max(1)
        }
        HirKind::Class(Class::Bytes(c)) => (c.ranges().len() as u64).max(1),
        HirKind::Look(_) => 1,
        HirKind::Repetition(r) => {
            let s = size(&r.sub);
            let min = u64::from(r.min);
            match r.max {
                Some(max) => min
                    .saturating_mul(s)
                    .saturating_add(u64::from(max.saturating_sub(r.min)).saturating_mul(s + 1)),
                None if min == 0 => s + 1,
                None => min.saturating_mul(s).saturating_add(1),
            }
        }
        HirKind::Capture(c) => size(&c.sub).saturating_add(2),
        HirKind::Concat(subs) => subs.iter().map(size).fold(0, u64::saturating_add),
        HirKind::Alternation(subs) => subs
            .iter()
            .map(size)
            .fold(subs.len().saturating_sub(1) as u64, u64::saturating_add),
    }
}

/// Syntax `regex-syntax` accepts and RE2 does not: class set operations and nested
/// classes, the extra word-boundary assertions, the `x`, `u` and `R` flags, and
/// repetition counts above 1000 (checked on the text: the parser drops a repeated
/// empty group before it could be seen).
fn rust_only_syntax(pattern: &str) -> Option<&'static str> {
    let b = pattern.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if depth == 0 => {
                let counts = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit() || **c == b',');
                let text: Vec<u8> = counts.copied().collect();
                let over = text
                    .split(|c| *c == b',')
                    .filter_map(|d| std::str::from_utf8(d).ok()?.parse::<u64>().ok())
                    .any(|n| n > 1000);
                if over || (text.len() > 9 && !text.contains(&b',')) {
                    return Some("a repetition count above 1000");
                }
            }
            b'(' if depth == 0 && b.get(i + 1) == Some(&b'?') => {
                let flags = b[i + 2..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic() || **c == b'-');
                if flags.clone().any(|c| matches!(c, b'x' | b'u' | b'R')) {
                    return Some("an x, u or R flag");
                }
            }
            b'\\' => {
                match b.get(i + 1) {
                    Some(b'<' | b'>') => return Some("a \\< or \\> word boundary"),
                    Some(b'b' | b'B') if b.get(i + 2) == Some(&b'{') => {
                        return Some("a \\b{...} word boundary");
                    }
                    _ => {}
                }
                i += 2;
                continue;
            }
            b'[' if depth > 0 && b.get(i + 1) != Some(&b':') => {
                return Some("a nested character class");
            }
            b'[' if depth > 0 => {
                // `[:alpha:]` inside a class: skip to its closing `:]`.
                if let Some(end) = pattern[i..].find(":]") {
                    i += end + 2;
                    continue;
                }
            }
            b'[' => {
                depth = 1;
                // A `]` or `^]` right after the opening is a literal.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if depth > 0 => depth = 0,
            b'&' | b'-' | b'~' if depth > 0 && b.get(i + 1) == Some(&b[i]) => {
                return Some("a character class set operation (&&, --, ~~)");
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(p: &str) -> u64 {
        let hir = regex_syntax::Parser::new().parse(p).expect("parses");
        program_size(&hir)
    }

    #[test]
    fn sizes_are_at_least_what_envoy_measured() {
        // (pattern, RE2 program size Envoy 1.40 reported, overhead included)
        for (p, envoy) in [
            ("a{96}", 100),
            ("a{98}", 102),
            ("[a-z0-9-]", 7),
            ("[^/]+", 7),
            (".*", 6),
            ("\\pL+", 12),
            ("(a|b)+", 8),
            ("a{2,5}", 12),
            ("(ab){3}", 16),
            ("é", 6),
        ] {
            assert!(size_of(p) >= envoy, "{p}: {} < {envoy}", size_of(p));
        }
        // Literals and ASCII classes are exact, so nothing Envoy takes is refused there.
        assert_eq!(size_of("a{96}"), 100);
        assert_eq!(size_of("[a-z0-9-]"), 7);
    }

    #[test]
    fn envoy_s_limits_are_refused_with_a_reason() {
        assert!(check("/api/v[0-9]+/users/[a-z0-9-]+").is_ok());
        assert!(check("/x/[^/]+/y/[^/]+/z/[^/]+/w/[^/]+/v/[^/]+").is_ok());
        assert!(check(&"a".repeat(96)).is_ok());
        let e = check(&"a".repeat(97)).expect_err("over 100");
        assert!(e.contains("101 RE2 instructions"), "{e}");
        // A large Unicode class cannot be bounded tightly: refused, and the message says why.
        assert!(
            check("\\pL+")
                .expect_err("\\pL")
                .contains("large Unicode classes")
        );
        assert!(check("a{1000}").is_err());
        assert!(
            check("(unclosed")
                .expect_err("syntax")
                .contains("not a valid RE2")
        );
        assert!(check("a\\Z").is_err(), "RE2 has no \\Z");
        for p in [
            "[a-z&&[^x]]",
            "[a--b]",
            "\\<word\\>",
            "\\b{start}x",
            "[[a]]",
        ] {
            let e = check(p).expect_err(p);
            assert!(e.contains("RE2"), "{p}: {e}");
        }
        assert!(check("[[:alpha:]]+").is_ok());
        assert!(check("(?x) a b").expect_err("x flag").contains("flag"));
        assert!(check("(?iu:a)").is_err());
        assert!(check("(?i)a(?s:.)").is_ok());
        assert!(
            check("x(?:){1001}")
                .expect_err("count")
                .contains("above 1000")
        );
        assert!(check("a{2,99999999999999999999}").is_err());
        assert!(check("x(?:){2,1000}").is_ok());
        assert!(check("[]a]").is_ok());
        assert!(check(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
    }
}
