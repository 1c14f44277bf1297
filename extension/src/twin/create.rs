//! `enkf.create_twin` and `enkf.drop_twin`.

use enkf_core::twin::TwinConfig;
use pgrx::datum::{DatumWithOid, JsonB};
use pgrx::prelude::*;

use super::catalog::{check_locations, check_observations};
use crate::error::{null_argument, null_option, raise, OrRaise};
use crate::guc::Classification;
use crate::spi;
use crate::sqltypes::{RegClass, SqlName};

/// The qualified, quoted name of a relation (independent of the caller's search_path).
fn qualified_name(client: &pgrx::spi::SpiClient<'_>, rel: RegClass) -> String {
    spi::one::<String>(
        client,
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[DatumWithOid::from(rel.0)],
    )
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", rel.0.to_u32()),
            None,
            "pass a table, view or hypertable name",
        )
    })
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "create_twin"
)]
#[search_path(pg_catalog, pg_temp)]
fn create_twin(
    name: Option<&str>,
    observations: Option<RegClass>,
    locations: Option<RegClass>,
    time_column: default!(Option<SqlName>, "'time'"),
    location_column: default!(Option<SqlName>, "'location'"),
    value_column: default!(Option<SqlName>, "'value'"),
    model: default!(Option<&str>, "'seirh'"),
    members: default!(Option<i32>, 300),
    config: default!(Option<JsonB>, "'{}'"),
    as_of_column: default!(Option<SqlName>, "NULL"),
    ed_column: default!(Option<SqlName>, "NULL"),
    classification: default!(Option<&str>, "NULL"),
) -> i64 {
    let name = name.unwrap_or_else(|| null_argument("name"));
    if name.trim().is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "name must not be empty",
            None,
            "give the twin a name such as 'flu_states'",
        );
    }
    // The hubverse names each model's forecasts "<twin>-<model>" (the twin's own: "<twin>"), so
    // a twin named like another's model would mix into its forecasts wherever they are read
    // by model_id (hub_submission, BI tools).
    if let Some(suffix) = MODEL_SUFFIXES.iter().find(|m| name.ends_with(*m)) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("name \"{name}\" ends in \"{suffix}\", the hubverse model_id of a model of twin \"{}\"", &name[..name.len() - suffix.len()]),
            None,
            "choose a name that does not end in -baseline, -trend, -pooled, -combined or -climatology, e.g. with an underscore",
        );
    }
    let observations = observations.unwrap_or_else(|| null_argument("observations"));
    let locations = locations.unwrap_or_else(|| null_argument("locations"));
    let time_column = time_column.unwrap_or_else(|| null_option("time_column")).0;
    let location_column = location_column
        .unwrap_or_else(|| null_option("location_column"))
        .0;
    let value_column = value_column
        .unwrap_or_else(|| null_option("value_column"))
        .0;
    let model = model.unwrap_or_else(|| null_option("model"));
    if model != "seirh" {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("model \"{model}\" is unknown"),
            None,
            "the available model is 'seirh' (S, E, I, R and weekly admissions per location)",
        );
    }
    let members = members.unwrap_or_else(|| null_option("members"));
    if !(2..=100_000).contains(&members) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("members must lie in 2..100000, got {members}"),
            None,
            "300 members is usual for a weekly epidemic twin; 100 is enough for county-scale runs",
        );
    }
    let config = config.unwrap_or_else(|| null_option("config"));
    let mut cfg = TwinConfig::from_json(&config.0.to_string()).or_raise();
    super::catalog::check_ed(&cfg, ed_column.is_some());
    // Naming the ED column turns the stream on (state of 10 rows per member).
    cfg.ed.enabled = ed_column.is_some();
    super::catalog::check_size(members as usize, &cfg);
    let cfg_json = cfg.to_json();
    let classification = classification_arg(classification);

    Spi::connect_mut(|client| {
        let obs_rel = qualified_name(client, observations);
        let loc_rel = qualified_name(client, locations);
        // The twin reads these under whoever runs it; its creator must be able to read them
        // too, so that no one registers a twin over data they may not see.
        for (arg, rel, oid) in [
            ("observations", &obs_rel, observations),
            ("locations", &loc_rel, locations),
        ] {
            let readable = spi::one::<bool>(
                client,
                "SELECT pg_catalog.has_table_privilege($1::pg_catalog.oid, 'SELECT')",
                &[DatumWithOid::from(oid.0)],
            );
            if readable != Some(true) {
                raise(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("{arg}: permission denied for {rel}"),
                    Some("pg_enkf reads the caller's tables under the caller's role".into()),
                    format!("ask the owner of {rel} to GRANT SELECT ON {rel} TO the role creating the twin"),
                );
            }
        }
        check_observations(
            client,
            &obs_rel,
            &time_column,
            &location_column,
            &value_column,
        );
        check_locations(client, &loc_rel);
        if let Some(as_of) = &as_of_column {
            super::catalog::check_as_of(client, &obs_rel, &as_of.0);
        }
        if let Some(ed) = &ed_column {
            super::catalog::check_ed_column(client, &obs_rel, &ed.0);
        }
        let exists = spi::one::<bool>(
            client,
            "SELECT true FROM enkf.twins WHERE name = $1",
            &[DatumWithOid::from(name)],
        );
        if exists.is_some() {
            raise(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!("twin \"{name}\" already exists"),
                None,
                "choose another name, or remove the old twin with enkf.drop_twin()",
            );
        }
        // The tables by OID (regclass): the twin keeps reading the tables its creator checked
        // above, whatever is later renamed or created under their names. The guard trigger
        // fills in the normalised configuration, its hash and the creator.
        let rows = spi::update_rows(
            client,
            "INSERT INTO enkf.twins (name, observations, locations, time_column, location_column, value_column,
                                     model, members, config, config_hash, created_by, as_of_column, ed_column,
                                     classification)
             VALUES ($1, $2::pg_catalog.oid::pg_catalog.regclass, $3::pg_catalog.oid::pg_catalog.regclass,
                     $4::pg_catalog.name, $5::pg_catalog.name, $6::pg_catalog.name, $7, $8, $9::pg_catalog.jsonb, '',
                     CURRENT_USER::pg_catalog.text::pg_catalog.regrole, $10::pg_catalog.name, $11::pg_catalog.name,
                     $12)
             RETURNING twin_id",
            &[
                DatumWithOid::from(name),
                DatumWithOid::from(observations.0),
                DatumWithOid::from(locations.0),
                DatumWithOid::from(time_column.as_str()),
                DatumWithOid::from(location_column.as_str()),
                DatumWithOid::from(value_column.as_str()),
                DatumWithOid::from(model),
                DatumWithOid::from(members),
                DatumWithOid::from(cfg_json.as_str()),
                as_of_column.as_ref().map_or(DatumWithOid::null::<String>(), |c| {
                    DatumWithOid::from(c.0.as_str())
                }),
                ed_column.as_ref().map_or(DatumWithOid::null::<String>(), |c| {
                    DatumWithOid::from(c.0.as_str())
                }),
                DatumWithOid::from(classification.name()),
            ],
            |r| r.get::<i64>(1),
        );
        rows.into_iter().next().flatten().unwrap_or_default()
    })
}

/// The suffixes of the hubverse model_id of every model but the twin's.
const MODEL_SUFFIXES: [&str; 5] = [
    "-baseline",
    "-trend",
    "-pooled",
    "-combined",
    "-climatology",
];

/// A twin's classification: named, or `enkf.default_classification` (22023 for another name).
pub(super) fn classification_arg(arg: Option<&str>) -> Classification {
    match arg {
        None => crate::guc::DEFAULT_CLASSIFICATION.get(),
        Some(name) => Classification::from_name(name).unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("classification \"{name}\" is unknown"),
                None,
                "'public_aggregate' for counts published anyway (no small-cell rule), 'protected' for the rest; leave it out for enkf.default_classification",
            )
        }),
    }
}

#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "drop_twin"
)]
#[search_path(pg_catalog, pg_temp)]
fn drop_twin(name: Option<&str>) -> bool {
    let name = name.unwrap_or_else(|| null_argument("name"));
    Spi::connect_mut(|client| {
        // Locked, but not checked: a twin whose tables are gone can still be dropped.
        let id = super::catalog::lock_by_name(client, name);
        spi::update(
            client,
            "DELETE FROM enkf.twins WHERE twin_id = $1",
            &[DatumWithOid::from(id)],
        );
        true
    })
}

/// `enkf.twin_config(config jsonb)`: the configuration as a twin stores it, every default
/// filled in (the text whose SHA-256 is the twin's config_hash); 22023 naming the key for an
/// invalid one. The twins' guard trigger runs every stored configuration through it.
#[pg_extern(
    immutable,
    parallel_safe,
    strict,
    schema = "enkf",
    name = "twin_config"
)]
#[search_path(pg_catalog, pg_temp)]
pub fn twin_config(config: JsonB) -> String {
    TwinConfig::from_json(&config.0.to_string())
        .or_raise()
        .to_json()
}
