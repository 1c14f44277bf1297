//! SQL argument types pgrx does not map by itself: `regclass` and `name`, so that the SQL
//! signatures read exactly as in the API contract (`observations regclass`, `time_column name`).

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::FromDatum;

/// `ArgAbi::unbox_arg_unchecked` through `FromDatum`, for the argument types of this crate.
/// pgrx only calls it for a non-NULL argument (NULLs come as `Option`'s None).
///
/// # Safety
/// As `ArgAbi::unbox_arg_unchecked`: the datum has the type `T` reads.
pub(crate) unsafe fn unbox_non_null<'fcx, T: FromDatum>(arg: Arg<'_, 'fcx>) -> T {
    let index = arg.index();
    unsafe { arg.unbox_arg_using_from_datum() }
        .unwrap_or_else(|| panic!("argument {index} must not be null"))
}

/// A `regclass` argument: PostgreSQL has already resolved the name (42P01 if it does not exist).
#[derive(Debug, Clone, Copy)]
pub struct RegClass(pub pg_sys::Oid);

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: regclass is an oid passed by value.
        unsafe { pg_sys::Oid::from_polymorphic_datum(datum, is_null, typoid) }.map(RegClass)
    }
}

// SAFETY: the argument is declared regclass, an oid by value.
unsafe impl<'fcx> ArgAbi<'fcx> for RegClass {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { unbox_non_null(arg) }
    }
}

// SAFETY: the SQL type is regclass.
unsafe impl SqlTranslatable for RegClass {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RegClass);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("regclass"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("regclass")));
}

/// A `name` argument (an identifier, at most 63 bytes).
#[derive(Debug, Clone)]
pub struct SqlName(pub String);

impl FromDatum for SqlName {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a name datum points to a NUL-terminated NameData of NAMEDATALEN bytes.
        let cstr = unsafe { CStr::from_ptr(datum.cast_mut_ptr::<std::ffi::c_char>()) };
        Some(SqlName(cstr.to_string_lossy().into_owned()))
    }
}

// SAFETY: the argument is declared name, passed by reference.
unsafe impl<'fcx> ArgAbi<'fcx> for SqlName {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { unbox_non_null(arg) }
    }
}

// SAFETY: the SQL type is name.
unsafe impl SqlTranslatable for SqlName {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(SqlName);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("name"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("name")));
}
