//! Server settings (GUCs) of pg_enkf. Each is documented in docs/operations.md.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Largest ensemble (state_dim x members) one call may process. A DBA sets it (SUSET) so that
/// one analyst's call cannot take the server's memory: peak use is about 6 x 8 bytes an element.
pub static MAX_ENSEMBLE_ELEMENTS: GucSetting<i32> = GucSetting::<i32>::new(10_000_000);

pub fn register() {
    GucRegistry::define_int_guc(
        c"enkf.max_ensemble_elements",
        c"Largest ensemble (state elements x members) one pg_enkf call may process.",
        c"Calls with a larger ensemble fail with SQLSTATE 54000. Peak memory is about 48 bytes an element.",
        &MAX_ENSEMBLE_ELEMENTS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
}
