//! Raising PostgreSQL errors: core errors mapped to SQLSTATEs, with the argument named in the
//! message and a hint.

use enkf_core::EnkfError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises `ERROR` and does not return.
pub fn raise(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<String>,
    hint: impl Into<String>,
) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "pg_enkf").set_hint(hint.into());
    if let Some(d) = detail {
        report = report.set_detail(d);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn sqlstate_of(err: &EnkfError) -> PgSqlErrorCode {
    match err {
        EnkfError::Shape { .. } | EnkfError::IndexOutOfRange { .. } => {
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR
        }
        EnkfError::InvalidValue { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        EnkfError::TooLarge { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        EnkfError::NotFinite { .. } => PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
    }
}

pub fn raise_core(err: EnkfError) -> ! {
    raise(
        sqlstate_of(&err),
        err.to_string(),
        None,
        err.hint().to_string(),
    )
}

/// Unwraps a core result or raises its error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, EnkfError> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise_core(e),
        }
    }
}

/// A required argument was NULL.
pub fn null_argument(arg: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{arg} must not be NULL"),
        None,
        format!("pass a value for {arg}"),
    )
}

/// An optional argument was passed as an explicit NULL.
pub fn null_option(arg: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{arg} must not be NULL"),
        None,
        format!("leave {arg} out to use its default"),
    )
}
