//! Server settings (GUCs) of pg_enkf. Each is documented in docs/operations.md.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// Largest ensemble (state_dim x members) one call may process. A DBA sets it (SUSET) so that
/// one analyst's call cannot take the server's memory: peak use is about 6 x 8 bytes an element.
pub static MAX_ENSEMBLE_ELEMENTS: GucSetting<i32> = GucSetting::<i32>::new(10_000_000);

/// Threads one call may use for the per-location computations (model steps, analyses,
/// forecasts). Locations are independent, so the work splits without changing any result.
/// 1 keeps a backend on one core, as PostgreSQL itself does outside parallel query.
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(1);

/// Counts from 1 to this minus 1 are withheld in the publication views (small-cell
/// suppression). 11 is the CMS cell-size convention; CDC WONDER uses 10. SUSET: an analyst
/// must not be able to lower it for their own session and read the small cells.
pub static SUPPRESSION_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(11);

/// What a twin's counts are (`enkf.twins.classification`, docs/hipaa.md): public aggregate data,
/// published anyway, under no small-cell rule; or protected data, whose small counts readers
/// never see nor reach through any result.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Classification {
    #[name = c"public_aggregate"]
    PublicAggregate,
    #[name = c"protected"]
    Protected,
}

impl Classification {
    pub fn name(self) -> &'static str {
        match self {
            Classification::PublicAggregate => "public_aggregate",
            Classification::Protected => "protected",
        }
    }

    pub fn from_name(name: &str) -> Option<Classification> {
        [Classification::PublicAggregate, Classification::Protected]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// The classification of a twin created without one: the DBA's choice (SUSET), protected
/// unless configured, so that no twin starts out without the small-cell rule by accident.
pub static DEFAULT_CLASSIFICATION: GucSetting<Classification> =
    GucSetting::<Classification>::new(Classification::Protected);

pub fn register() {
    GucRegistry::define_enum_guc(
        c"enkf.default_classification",
        c"Classification of a twin created without one: protected (small-cell rule on) or public_aggregate.",
        c"A DBA's choice for the database (ALTER DATABASE ... SET). protected applies small-cell suppression to every result readers see; public_aggregate is for counts published anyway.",
        &DEFAULT_CLASSIFICATION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"enkf.suppression_threshold",
        c"Observed counts from 1 to this value minus 1 are withheld in pg_enkf's publication views.",
        c"11 follows the CMS cell-size suppression policy (CDC WONDER uses 10). 1 disables suppression.",
        &SUPPRESSION_THRESHOLD,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"enkf.threads",
        c"Threads a pg_enkf call may use: the twin's per-location computations and the ETKF's large products.",
        c"Results do not depend on it. Worker threads only compute: all database access stays on the backend's own thread.",
        &THREADS,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
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

/// `enkf.suppression_threshold()`: the setting, for the views. Calling a function of the
/// library loads it, so the GUC exists even in a session that has used nothing else.
#[pg_extern(stable, parallel_safe, schema = "enkf", name = "suppression_threshold")]
#[search_path(pg_catalog, pg_temp)]
pub fn suppression_threshold() -> i32 {
    SUPPRESSION_THRESHOLD.get()
}
