//! Errors of the numerics. Each message names the argument at fault with the name the SQL API
//! gives it, so that the extension can pass the message through unchanged and pick a SQLSTATE
//! by kind.

use thiserror::Error;

pub type Result<T> = std::result::Result<T, EnkfError>;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum EnkfError {
    /// An array has the wrong number of dimensions or a length that does not match another's.
    #[error("{detail}")]
    Shape {
        arg: &'static str,
        detail: String,
        hint: String,
    },
    /// An index points outside the array it indexes.
    #[error("{detail}")]
    IndexOutOfRange {
        arg: &'static str,
        detail: String,
        hint: String,
    },
    /// A value is NaN, infinite, or outside the range the argument allows.
    #[error("{detail}")]
    InvalidValue {
        arg: &'static str,
        detail: String,
        hint: String,
    },
    /// The problem is larger than the configured limit.
    #[error("{detail}")]
    TooLarge {
        arg: &'static str,
        detail: String,
        hint: String,
    },
    /// The computation produced a non-finite number from finite input (overflow).
    #[error("{detail}")]
    NotFinite { detail: String, hint: String },
}

impl EnkfError {
    pub fn hint(&self) -> &str {
        match self {
            EnkfError::Shape { hint, .. }
            | EnkfError::IndexOutOfRange { hint, .. }
            | EnkfError::InvalidValue { hint, .. }
            | EnkfError::TooLarge { hint, .. }
            | EnkfError::NotFinite { hint, .. } => hint,
        }
    }

    /// The argument the error is about, if any.
    pub fn argument(&self) -> Option<&'static str> {
        match self {
            EnkfError::Shape { arg, .. }
            | EnkfError::IndexOutOfRange { arg, .. }
            | EnkfError::InvalidValue { arg, .. }
            | EnkfError::TooLarge { arg, .. } => Some(arg),
            EnkfError::NotFinite { .. } => None,
        }
    }

    pub(crate) fn shape(
        arg: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        EnkfError::Shape {
            arg,
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn invalid(
        arg: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        EnkfError::InvalidValue {
            arg,
            detail: detail.into(),
            hint: hint.into(),
        }
    }
}
