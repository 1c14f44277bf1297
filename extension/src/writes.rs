//! pg_enkf's own writes to its tables.
//!
//! Every function runs under its caller (SECURITY INVOKER), so an operator must hold INSERT on
//! `enkf.runs` for `enkf.assimilate` to record its run; but then the operator could also write
//! a run row of their own making (forged provenance, a `last_week` in 2100 that stops every
//! later forecast). The guard triggers of sql/security.sql refuse direct writes by anyone but a
//! superuser unless `enkf.writing()` is true, which it is only while a statement issued by
//! this module runs. Such statements read nothing but their own parameters and pg_enkf's
//! tables, so no code of the caller's runs while the flag is up.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

thread_local! {
    // Backends are single-threaded for SQL (worker threads never run SQL), so a thread-local
    // counter is the backend's state.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` (one of pg_enkf's own statements) with `enkf.writing()` true. The flag is lowered
/// on every way out, unwinding from an ERROR included, and at any transaction abort.
pub fn own_write<T>(f: impl FnOnce() -> T) -> T {
    struct Lower;
    impl Drop for Lower {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _lower = Lower;
    f()
}

/// Runs `f` with `enkf.writing()` false, whatever pg_enkf was doing: for the caller's own code
/// (their policies) that a check of pg_enkf's may run in the middle of one of its writes.
pub fn not_writing<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            let depth = self.0;
            DEPTH.with(|d| d.set(depth));
        }
    }
    let _restore = Restore(DEPTH.with(|d| d.replace(0)));
    f()
}

/// `enkf.writing()`: whether the statement running was issued by one of pg_enkf's functions.
/// Read by the guard triggers; any role may call it and learns nothing.
#[pg_extern(volatile, parallel_restricted, schema = "enkf", name = "writing")]
#[search_path(pg_catalog, pg_temp)]
fn writing() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    {
        DEPTH.with(|d| d.set(0));
    }
}

unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    _sub: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    // An ERROR caught by a savepoint unwinds through own_write's guard first; this only
    // catches a path that skipped it.
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        DEPTH.with(|d| d.set(0));
    }
}

/// Registers the abort callbacks (from `_PG_init`).
pub fn register() {
    // SAFETY: called once per backend from _PG_init; the callbacks touch only the thread-local.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flag_is_lowered_after_a_panic() {
        let caught = std::panic::catch_unwind(|| super::own_write(|| panic!("an ERROR")));
        assert!(caught.is_err());
        assert_eq!(super::DEPTH.with(|d| d.get()), 0);
        super::own_write(|| assert_eq!(super::DEPTH.with(|d| d.get()), 1));
    }
}
