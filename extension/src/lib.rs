//! pg_enkf: ensemble Kalman filter data assimilation and epidemic forecasting as SQL functions.
//!
//! A thin layer over `enkf-core`: each module binds one family of SQL functions, turning SQL
//! arguments into core calls and core errors into SQLSTATEs. Everything lives in schema `enkf`.

use pgrx::prelude::*;

mod analyze;
mod arrays;
mod error;
mod guc;
mod interrupts;
mod parallel;
mod spi;
mod sqltypes;
mod twin;
mod writes;

pgrx::pg_module_magic!(name, version);

/// Declares schema `enkf` (created with the extension, dropped with it); every function of
/// the extension names it with `schema = "enkf"`.
#[pg_schema]
mod enkf {}

extension_sql_file!(
    "../../sql/schema.sql",
    name = "schema",
    requires = [
        enkf,
        arrays::has_null_elements,
        twin::access::outputs_readable,
        twin::access::analyses_readable,
        twin::access::model_readable
    ]
);
extension_sql_file!(
    "../../sql/scheduler.sql",
    name = "scheduler",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/security.sql",
    name = "security",
    requires = [
        "schema",
        "scheduler",
        guc::suppression_threshold,
        writes::writing,
        twin::create::twin_config
    ]
);
extension_sql_file!("../../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    writes::register();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
