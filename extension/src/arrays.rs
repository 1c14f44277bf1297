//! PostgreSQL arrays in and out: shape and NULL checks, with errors that name the argument.
//!
//! PostgreSQL stores a 2-D array `[state_dim][members]` row-major (the last subscript varies
//! fastest); nalgebra is column-major, so the flat data read as a column-major
//! `members x state_dim` matrix is the transpose of the ensemble. The filters work on that
//! members-major layout directly, so ensembles cross the boundary as one copy each way.

use nalgebra::DMatrix;
use pgrx::array::RawArray;
use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Array;
use pgrx::datum::Datum;
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum, PgSqlErrorCode};

use crate::error::{null_argument, raise};

/// Dimensions and data of an array argument without NULL elements.
struct Dense<'a, T> {
    dims: Vec<usize>,
    data: &'a [T],
}

fn dense<'a, T: Copy>(arg: &str, arr: Array<'a, T>) -> Dense<'a, T> {
    // SAFETY: `arr` came from PostgreSQL, detoasted, and stays allocated in the current memory
    // context for the rest of the call; RawArray only reads its header, bitmap and data.
    let mut raw = unsafe { RawArray::from_array(arr) }.unwrap_or_else(|| null_argument(arg));
    let dims: Vec<usize> = raw.dims().iter().map(|&d| d as usize).collect();
    if unsafe { raw.any_nulls() } {
        let first = raw
            .nulls_bitslice()
            .and_then(|bits| unsafe { bits.as_ref() }.iter().position(|b| !*b))
            .unwrap_or(0);
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{arg} must not contain NULL elements"),
            Some(format!("element {} (in storage order, 1-based) is NULL", first + 1)),
            "replace NULLs before the call; drop missing observations together with their variance and index",
        );
    }
    let ptr = raw.data::<T>();
    // SAFETY: without NULLs the data area holds exactly len() values of T, and for the plain
    // numeric types used here every bit pattern is a valid value.
    let data: &'a [T] = unsafe { &*ptr.as_ptr() };
    Dense { dims, data }
}

/// The dimensions and values of a 2-D float8 array `[state_dim][members]`, checked against
/// `max_elements`. The values are the array's storage: members-major.
fn ensemble_dense<'a>(
    arg: &str,
    arr: Option<Array<'a, f64>>,
    max_elements: usize,
) -> (usize, usize, &'a [f64]) {
    let arr = arr.unwrap_or_else(|| null_argument(arg));
    let d = dense(arg, arr);
    if d.dims.len() != 2 {
        raise(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!("{arg} must be a 2-D array [state_dim][members], got {} dimension(s)", d.dims.len()),
            None,
            "build it as ARRAY[[x11, x12, ...], [x21, x22, ...]]: one inner array per state element, one value per member",
        );
    }
    let (n, members) = (d.dims[0], d.dims[1]);
    if n.saturating_mul(members) > max_elements {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{arg} has {n} x {members} = {} elements, more than enkf.max_ensemble_elements = {max_elements}", n * members),
            None,
            "reduce the state or the number of members, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
    (n, members, d.data)
}

/// A 2-D float8 array `[state_dim][members]` as a members-major nalgebra matrix
/// (members x state_dim): the array's storage order, copied once.
pub fn matrix_arg(arg: &str, arr: Option<Array<'_, f64>>, max_elements: usize) -> DMatrix<f64> {
    let (n, members, data) = ensemble_dense(arg, arr, max_elements);
    DMatrix::from_column_slice(members, n, data)
}

/// A 2-D float8 array `[state_dim][members]` as a result array of the same shape, to be
/// updated in place. When detoasting already made the function its own copy (the ensemble was
/// stored out of line or compressed, or came from a PL/pgSQL variable), that copy becomes the
/// result; otherwise the values are copied once into a new array. Returns it with
/// (state_dim, members).
pub fn matrix_arg_as_result(
    arg: &str,
    arr: Option<Float8ArrayArg<'_>>,
    max_elements: usize,
) -> (Float8Array2, usize, usize) {
    let arr = arr.unwrap_or_else(|| null_argument(arg));
    let (n, members, data) = ensemble_dense(arg, Some(arr.array()), max_elements);
    let len = data.len();
    // SAFETY: `arr.ptr` is a detoasted array (a readable header of at least ARRAY2_HEADER
    // bytes for a 2-D array, checked above).
    let reusable = arr.own
        && unsafe {
            (*arr.ptr).dataoffset == 0
                && pgrx::varsize_any(arr.ptr as *const pg_sys::varlena) == ARRAY2_HEADER + 8 * len
        };
    if reusable {
        // SAFETY: the array is this call's own palloc'd copy (nothing else refers to it), in
        // the memory context the result must live in, laid out as `Float8Array2::new` lays
        // out its arrays; only the lower bounds are reset to 1, as in every result.
        unsafe {
            let ints =
                (arr.ptr as *mut u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *mut i32;
            *ints.add(2) = 1;
            *ints.add(3) = 1;
        }
        return (Float8Array2 { arr: arr.ptr, len }, n, members);
    }
    let mut out = Float8Array2::new(n, members);
    out.data_mut().copy_from_slice(data);
    (out, n, members)
}

/// A float8[] argument, detoasted on arrival like any array, remembering whether detoasting
/// made a copy that belongs to this call (and may therefore be written and returned).
pub struct Float8ArrayArg<'fcx> {
    ptr: *mut pg_sys::ArrayType,
    own: bool,
    _call: std::marker::PhantomData<&'fcx ()>,
}

impl<'fcx> Float8ArrayArg<'fcx> {
    /// The value as pgrx's array type, for the shape and NULL checks.
    pub fn array(&self) -> Array<'fcx, f64> {
        // SAFETY: `ptr` is a detoasted float8[] (the SQL signature guarantees the type), so
        // pgrx's conversion finds nothing left to detoast and wraps the same storage.
        // With is_null false the conversion always gives Some.
        unsafe {
            Array::from_polymorphic_datum(
                pg_sys::Datum::from(self.ptr),
                false,
                pg_sys::FLOAT8ARRAYOID,
            )
        }
        .expect("a non-NULL datum converts")
    }
}

/// `enkf.has_null_elements(float8[])`: whether the array holds a NULL element, from its header
/// alone (no scan): the CHECK constraints of the twins' tables, which every reader of the
/// arrays relies on.
#[pg_extern(
    immutable,
    parallel_safe,
    strict,
    schema = "enkf",
    name = "has_null_elements"
)]
#[search_path(pg_catalog, pg_temp)]
fn has_null_elements(arr: Float8ArrayArg<'_>) -> bool {
    // SAFETY: `ptr` is a detoasted array; a non-zero dataoffset means it has a NULL bitmap,
    // which PostgreSQL only keeps when some element is NULL.
    unsafe { (*arr.ptr).dataoffset != 0 }
}

impl FromDatum for Float8ArrayArg<'_> {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        let raw = datum.cast_mut_ptr::<pg_sys::varlena>();
        // SAFETY: a non-NULL float8[] datum is a varlena pointer; pg_detoast_datum returns it
        // unchanged when it is a plain in-memory value (the caller's storage: read only) and a
        // fresh palloc'd copy otherwise.
        let ptr = unsafe { pg_sys::pg_detoast_datum(raw) };
        Some(Float8ArrayArg {
            ptr: ptr as *mut pg_sys::ArrayType,
            own: ptr != raw,
            _call: std::marker::PhantomData,
        })
    }
}

// SAFETY: the argument is unboxed through FromDatum from a float8[] datum.
unsafe impl<'fcx> ArgAbi<'fcx> for Float8ArrayArg<'fcx> {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { crate::sqltypes::unbox_non_null(arg) }
    }
}

// SAFETY: the SQL type is float8[], which is what from_polymorphic_datum reads.
unsafe impl SqlTranslatable for Float8ArrayArg<'_> {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Float8ArrayArg<'static>);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("double precision[]"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(
        SqlMappingRef::literal("double precision[]"),
    ));
}

/// A 1-D float8 array (an empty array counts as length 0) of at most `max` values.
pub fn vector_arg(arg: &str, arr: Option<Array<'_, f64>>, max: usize) -> Vec<f64> {
    let arr = arr.unwrap_or_else(|| null_argument(arg));
    let d = dense(arg, arr);
    one_dimensional(arg, &d.dims);
    at_most(arg, d.data.len(), max);
    d.data.to_vec()
}

/// A 1-D int4 array of at most `max` 1-based indices, returned 0-based. Indices below 1 are
/// out of range.
pub fn index_arg(
    arg: &'static str,
    arr: Option<Array<'_, i32>>,
    upper: usize,
    max: usize,
) -> Vec<usize> {
    let arr = arr.unwrap_or_else(|| null_argument(arg));
    let d = dense(arg, arr);
    one_dimensional(arg, &d.dims);
    at_most(arg, d.data.len(), max);
    d.data
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            if i < 1 || i as usize > upper {
                raise(
                    PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
                    format!("{arg} element {} is {i}, outside 1..{upper}", k + 1),
                    None,
                    "obs_index is 1-based and must not exceed the number of state elements (rows of ensemble)",
                );
            }
            i as usize - 1
        })
        .collect()
}

/// Refuses (54000) an array argument longer than `max` before it is copied: the copies and the
/// work arrays made from it grow with it.
fn at_most(arg: &str, len: usize, max: usize) {
    if len > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{arg} has {len} elements, more than enkf.max_ensemble_elements = {max}"),
            None,
            "pass fewer values per call, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
}

fn one_dimensional(arg: &str, dims: &[usize]) {
    if dims.len() > 1 {
        raise(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!("{arg} must be a 1-D array, got {} dimensions", dims.len()),
            None,
            format!("pass {arg} as ARRAY[v1, v2, ...], one value per observation"),
        );
    }
}

/// A 2-D `float8[]` of shape [rows][cols] allocated in the current memory context, its values
/// written in place before it is returned.
pub struct Float8Array2 {
    arr: *mut pg_sys::ArrayType,
    len: usize,
}

/// PostgreSQL's MaxAllocSize (memutils.h): the largest palloc, and of any varlena value.
const MAX_ALLOC_SIZE: usize = 0x3fff_ffff;

/// MAXALIGN(sizeof(ArrayType) + 2 dims + 2 lower bounds): where the values start.
const ARRAY2_HEADER: usize = 32;

impl Float8Array2 {
    pub fn new(rows: usize, cols: usize) -> Self {
        let len = rows * cols;
        let bytes = ARRAY2_HEADER + 8 * len;
        if bytes > MAX_ALLOC_SIZE {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "a {rows} x {cols} float8 array exceeds the 1 GB limit of a PostgreSQL value"
                ),
                None,
                "reduce the state or the number of members",
            );
        }
        // SAFETY: a fresh allocation of `bytes` in the current memory context, laid out as a
        // 2-D ArrayType without a NULL bitmap (dataoffset 0): the header is zeroed and filled
        // in here; the values are left for the caller, who overwrites all of them.
        unsafe {
            let arr = pg_sys::palloc(bytes) as *mut pg_sys::ArrayType;
            std::ptr::write_bytes(arr as *mut u8, 0, ARRAY2_HEADER);
            pgrx::set_varsize_4b(arr as *mut pg_sys::varlena, bytes as i32);
            (*arr).ndim = 2;
            (*arr).dataoffset = 0;
            (*arr).elemtype = pg_sys::FLOAT8OID;
            let ints = (arr as *mut u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *mut i32;
            *ints = rows as i32;
            *ints.add(1) = cols as i32;
            *ints.add(2) = 1;
            *ints.add(3) = 1;
            Float8Array2 { arr, len }
        }
    }

    /// A members-major ensemble (members x state_dim) as `[state_dim][members]`.
    pub fn from_members_major(m: &DMatrix<f64>) -> Self {
        let mut out = Float8Array2::new(m.ncols(), m.nrows());
        out.data_mut().copy_from_slice(m.as_slice());
        out
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The values, row-major ([rows][cols]).
    pub fn data_mut(&mut self) -> &mut [f64] {
        // SAFETY: `new` allocated room for `len` float8 values at ARRAY2_HEADER, 8-byte
        // aligned (palloc returns MAXALIGNed memory); every bit pattern is a valid f64.
        unsafe {
            std::slice::from_raw_parts_mut(
                (self.arr as *mut u8).add(ARRAY2_HEADER) as *mut f64,
                self.len,
            )
        }
    }
}

impl IntoDatum for Float8Array2 {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.arr))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::FLOAT8ARRAYOID
    }
}

// SAFETY: the datum is returned straight to the function manager, as for any IntoDatum type.
unsafe impl BoxRet for Float8Array2 {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: the SQL type is float8[], which is what into_datum produces.
unsafe impl SqlTranslatable for Float8Array2 {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Float8Array2);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        Ok(SqlMappingRef::literal("double precision[]"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(
        SqlMappingRef::literal("double precision[]"),
    ));
}
