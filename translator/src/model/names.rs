//! [`NameRule`]: the kinds of name Kubernetes validates (RFC 1123 labels and
//! subdomains), with their limits, shared by object validation and the scope annotations.

use crds::text::{is_dns_label, is_dns_subdomain, quote};

/// The kinds of name Kubernetes validates, with their limits.
#[derive(Clone, Copy)]
pub(crate) enum NameRule {
    /// RFC 1123 label, at most 63 characters.
    Label,
    /// RFC 1123 subdomain, at most 253 characters.
    Subdomain,
}

impl NameRule {
    fn max(self) -> usize {
        match self {
            NameRule::Label => 63,
            NameRule::Subdomain => 253,
        }
    }

    /// Checks `value`: its length first, then its characters.
    pub(crate) fn check(self, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err("is required".into());
        }
        if value.len() > self.max() {
            return Err(format!(
                "is {} characters long; at most {} are allowed",
                value.len(),
                self.max()
            ));
        }
        let ok = match self {
            NameRule::Label => is_dns_label(value),
            NameRule::Subdomain => is_dns_subdomain(value),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not a valid DNS name: lowercase letters, digits and '-'{}, starting and ending with a letter or digit",
                quote(value),
                if matches!(self, NameRule::Subdomain) {
                    " (and '.' between parts)"
                } else {
                    ""
                }
            ))
        }
    }
}
