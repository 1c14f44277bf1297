//! The week's file for the FluSight hub, after a successful scheduled run: the newest reference
//! date's `enkf.hub_submission` (which checks the hub's levels, sample count, horizons and 75%
//! coverage itself, under the sidecar's role) written as `<reference_date>-<team>-<model>.csv`,
//! whole or not at all (a temporary file renamed into place), with its SHA-256, rows and
//! coverage for the log and the metrics.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::config::SubmissionConfig;

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    pub sha256: String,
    pub rows: usize,
    pub locations: usize,
    /// Locations in the file over locations forecast for that reference date.
    pub coverage: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("the twin has no forecast yet")]
    NoForecast,
    #[error("the database refused the submission: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

const COLUMNS: [&str; 8] = [
    "reference_date",
    "target",
    "horizon",
    "target_end_date",
    "location",
    "output_type",
    "output_type_id",
    "value",
];

/// Writes the file of `twin`'s newest reference date into `cfg.directory`.
pub async fn write(
    client: &Client,
    twin: &str,
    cfg: &SubmissionConfig,
) -> Result<Written, SubmissionError> {
    let (model, directory) = (cfg.model.as_str(), cfg.directory.as_path());
    let newest = client
        .query_one(
            "SELECT pg_catalog.max(f.reference_date), pg_catalog.count(DISTINCT f.location)
               FROM enkf.forecasts f JOIN enkf.twins t USING (twin_id)
              WHERE t.name OPERATOR(pg_catalog.=) $1
                AND f.reference_date OPERATOR(pg_catalog.=)
                    (SELECT pg_catalog.max(g.reference_date) FROM enkf.forecasts g WHERE g.twin_id OPERATOR(pg_catalog.=) t.twin_id)",
            &[&twin],
        )
        .await?;
    let reference: NaiveDate = newest
        .get::<_, Option<NaiveDate>>(0)
        .ok_or(SubmissionError::NoForecast)?;
    let forecast_locations: i64 = newest.get(1);
    // Text as COPY would write it (float8's shortest exact form), NULL as empty.
    let rows = client
        .query(
            "SELECT reference_date::pg_catalog.text, target, horizon::pg_catalog.text,
                    target_end_date::pg_catalog.text, location, output_type, output_type_id,
                    value::pg_catalog.text
               FROM enkf.hub_submission($1, $2, $3, $4)",
            &[&twin, &reference, &model, &cfg.partial],
        )
        .await?;
    let mut text = String::new();
    push_line(&mut text, COLUMNS.iter().map(|c| Some(*c)));
    let mut locations = std::collections::BTreeSet::new();
    for r in &rows {
        let fields: Vec<Option<&str>> = (0..COLUMNS.len()).map(|i| r.get(i)).collect();
        if let Some(l) = fields[4] {
            locations.insert(l.to_string());
        }
        push_line(&mut text, fields.into_iter());
    }
    let name = format!("{reference}-{}-{model}.csv", cfg.team);
    let path = directory.join(&name);
    write_atomically(directory, &name, text.as_bytes()).map_err(|source| SubmissionError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(Written {
        sha256: hex(&Sha256::digest(text.as_bytes())),
        rows: rows.len(),
        locations: locations.len(),
        coverage: if forecast_locations > 0 {
            locations.len() as f64 / forecast_locations as f64
        } else {
            0.0
        },
        path,
    })
}

/// One CSV line: a field with a comma, quote or line break quoted, its quotes doubled (RFC 4180,
/// as COPY's CSV format); None as an empty field.
fn push_line<'a>(out: &mut String, fields: impl Iterator<Item = Option<&'a str>>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = f.unwrap_or("");
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

/// The file appears whole or not at all: written beside its place, flushed, then renamed.
fn write_atomically(directory: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(directory)?;
    let temporary = directory.join(format!(".{name}.partial"));
    let mut f = std::fs::File::create(&temporary)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&temporary, directory.join(name))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_as_copy_quotes_them() {
        let mut s = String::new();
        push_line(
            &mut s,
            [Some("a"), None, Some("b,c"), Some("say \"hi\""), Some("2")].into_iter(),
        );
        assert_eq!(s, "a,,\"b,c\",\"say \"\"hi\"\"\",2\n");
    }

    #[test]
    fn the_file_is_renamed_into_place_whole() {
        let dir = std::env::temp_dir().join(format!("enkf-submission-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, "x.csv", b"a,b\n1,2\n").unwrap();
        assert_eq!(std::fs::read(dir.join("x.csv")).unwrap(), b"a,b\n1,2\n");
        assert!(!dir.join(".x.csv.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
