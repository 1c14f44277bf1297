//! Query cancel and statement_timeout inside long computations.

/// Handed to enkf-core's long loops: raises the pending cancel/timeout ERROR, if any, which
/// unwinds through the core's frames (dropping its buffers) back to PostgreSQL.
pub fn check() {
    pgrx::check_for_interrupts!();
}
