//! The error of spec validation: a field that is wrong, by its path.

use crate::text;

/// A spec field that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field path, e.g. `spec.backends[1].weight`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Whether the field is valid but asks for something Rudder does not implement
    /// (status reason `UnsupportedValue` rather than `Invalid`).
    pub unsupported: bool,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: text::bound(message),
            unsupported: false,
        }
    }

    /// A valid field Rudder does not implement.
    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            unsupported: true,
            ..FieldError::new(field, message)
        }
    }
}
