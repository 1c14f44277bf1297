//! `enkf.analyze`: one ensemble Kalman filter analysis step over arrays.

use enkf_core::{Method, Observations, Options};
use pgrx::datum::Array;
use pgrx::prelude::*;

use nalgebra::DMatrix;

use crate::arrays::{
    index_arg, matrix_arg, matrix_arg_as_result, vector_arg, Float8Array2, Float8ArrayArg,
};
use crate::error::{null_option, OrRaise};
use crate::guc;

#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, schema = "enkf", name = "analyze")]
#[search_path(pg_catalog, pg_temp)]
fn analyze(
    ensemble: Option<Float8ArrayArg<'_>>,
    observations: Option<Array<'_, f64>>,
    obs_variance: Option<Array<'_, f64>>,
    obs_index: Option<Array<'_, i32>>,
    method: default!(Option<&str>, "'etkf'"),
    inflation: default!(Option<f64>, 1.0),
    rtps: default!(Option<f64>, 0.0),
    loc_radius: default!(Option<f64>, "NULL"),
    periodic: default!(Option<bool>, false),
    seed: default!(Option<i64>, 0),
) -> Float8Array2 {
    let max = guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize;
    let opts = options(method, inflation, rtps, loc_radius, periodic, seed);
    // The ETKF updates the result array in place (the detoasted argument itself when detoasting
    // made a copy, else a copy made once); the other methods work on a matrix of their own,
    // copied out at the end.
    let ens = if enkf_core::filter::runs_in_place(&opts) {
        let (out, _, members) = matrix_arg_as_result("ensemble", ensemble, max);
        Ensemble::InPlace(out, members)
    } else {
        Ensemble::Owned(matrix_arg("ensemble", ensemble.map(|e| e.array()), max))
    };
    let values = vector_arg("observations", observations, max);
    let variance = vector_arg("obs_variance", obs_variance, max);
    let index = index_arg("obs_index", obs_index, ens.state_dim(), max);
    // Every matrix the method builds, bounded before any is allocated (a failed allocation
    // would abort the backend and restart the cluster).
    enkf_core::filter::workspace::check(ens.state_dim(), ens.members(), values.len(), &opts, max)
        .or_raise();
    let obs = Observations {
        values: &values,
        variance: &variance,
        index: &index,
    };
    ens.analyze(&obs, &opts)
}

/// The filter's options from the SQL arguments (each NULL refused by name).
fn options(
    method: Option<&str>,
    inflation: Option<f64>,
    rtps: Option<f64>,
    loc_radius: Option<f64>,
    periodic: Option<bool>,
    seed: Option<i64>,
) -> Options {
    let method: Method = method
        .unwrap_or_else(|| null_option("method"))
        .parse()
        .or_raise();
    Options {
        method,
        inflation: inflation.unwrap_or_else(|| null_option("inflation")),
        rtps: rtps.unwrap_or_else(|| null_option("rtps")),
        loc_radius,
        periodic: periodic.unwrap_or_else(|| null_option("periodic")),
        // Any int8 is a valid seed; the bits are reinterpreted.
        seed: seed.unwrap_or_else(|| null_option("seed")) as u64,
        rotate: false,
    }
}

/// The ensemble argument, ready for the method's way of working.
enum Ensemble {
    /// The result array holding a copy of the ensemble, and the number of members.
    InPlace(Float8Array2, usize),
    /// A members-major matrix (members x state_dim).
    Owned(DMatrix<f64>),
}

impl Ensemble {
    /// The analysis, on `enkf.threads` threads, as the array returned.
    fn analyze(self, obs: &Observations<'_>, opts: &Options) -> Float8Array2 {
        let threads = crate::parallel::Threads::from_guc();
        match self {
            Ensemble::InPlace(mut out, members) => {
                enkf_core::filter::analyze_flat(
                    out.data_mut(),
                    members,
                    obs,
                    opts,
                    &crate::interrupts::check,
                    &threads,
                )
                .or_raise();
                out
            }
            Ensemble::Owned(mut m) => {
                enkf_core::filter::analyze_members_major_with(
                    &mut m,
                    obs,
                    opts,
                    &crate::interrupts::check,
                    &threads,
                )
                .or_raise();
                Float8Array2::from_members_major(&m)
            }
        }
    }

    fn state_dim(&self) -> usize {
        match self {
            Ensemble::InPlace(out, members) => out.len() / members,
            Ensemble::Owned(m) => m.ncols(),
        }
    }

    fn members(&self) -> usize {
        match self {
            Ensemble::InPlace(_, members) => *members,
            Ensemble::Owned(m) => m.nrows(),
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use enkf_core::model::lorenz96::Lorenz96;
    use enkf_core::rng::{normal, seeded};
    use enkf_core::{Method, Observations, Options};
    use nalgebra::DMatrix;
    use pgrx::prelude::*;

    /// A float8[] literal; `{:?}` prints the shortest text that reads back to the same f64.
    fn literal_matrix(m: &DMatrix<f64>) -> String {
        let rows: Vec<String> = m
            .row_iter()
            .map(|r| {
                format!(
                    "{{{}}}",
                    r.iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        format!("'{{{}}}'::float8[]", rows.join(","))
    }

    fn literal_vec<T: std::fmt::Debug>(v: &[T], ty: &str) -> String {
        format!(
            "'{{{}}}'::{ty}[]",
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    fn sql_analyze(
        ens: &DMatrix<f64>,
        y: &[f64],
        r: &[f64],
        idx0: &[usize],
        args: &str,
    ) -> DMatrix<f64> {
        let idx1: Vec<i32> = idx0.iter().map(|&i| i as i32 + 1).collect();
        let q = format!(
            "SELECT enkf.analyze({}, {}, {}, {}{args})",
            literal_matrix(ens),
            literal_vec(y, "float8"),
            literal_vec(r, "float8"),
            literal_vec(&idx1, "int4"),
        );
        let flat: Vec<f64> = Spi::get_one(&q).expect("spi").expect("not null");
        DMatrix::from_row_slice(ens.nrows(), ens.ncols(), &flat)
    }

    #[pg_test]
    fn sql_result_is_the_core_result_bit_for_bit() {
        let mut rng = seeded(7);
        let (n, members, m) = (12, 9, 7);
        let ens = DMatrix::from_fn(n, members, |i, _| i as f64 + normal(&mut rng));
        let y: Vec<f64> = (0..m).map(|k| 2.0 * k as f64 + normal(&mut rng)).collect();
        let r: Vec<f64> = (0..m).map(|k| 0.5 + k as f64 * 0.1).collect();
        let idx: Vec<usize> = (0..m).map(|k| (k * 5 + 1) % n).collect();
        let cases: [(Options, &str); 5] = [
            (
                Options {
                    method: Method::Etkf,
                    inflation: 1.1,
                    rtps: 0.3,
                    ..Options::default()
                },
                ", method => 'etkf', inflation => 1.1, rtps => 0.3",
            ),
            (
                Options {
                    method: Method::Enkf,
                    seed: 42,
                    ..Options::default()
                },
                ", 'enkf', seed => 42",
            ),
            (
                Options {
                    method: Method::Eakf,
                    loc_radius: Some(2.5),
                    ..Options::default()
                },
                ", method => 'eakf', loc_radius => 2.5",
            ),
            (
                Options {
                    method: Method::Letkf,
                    loc_radius: Some(2.0),
                    periodic: true,
                    inflation: 1.05,
                    ..Options::default()
                },
                ", 'letkf', 1.05, 0.0, 2.0, true",
            ),
            (
                Options {
                    method: Method::Enkf,
                    loc_radius: Some(3.0),
                    seed: -5i64 as u64,
                    ..Options::default()
                },
                ", 'enkf', loc_radius => 3.0, seed => -5",
            ),
        ];
        for (opts, args) in cases {
            let want = enkf_core::analyzed(
                &ens,
                &Observations {
                    values: &y,
                    variance: &r,
                    index: &idx,
                },
                &opts,
            )
            .unwrap();
            let got = sql_analyze(&ens, &y, &r, &idx, args);
            assert_eq!(got, want, "{args}");
            assert_ne!(got, ens, "{args}: the analysis changed nothing");
        }
    }

    /// The ETKF writes into the detoasted ensemble when detoasting made a copy: whatever the
    /// storage the value came from, the result must equal the core's and the stored value must
    /// stay as it was (out of line, compressed, plain, short header, a PL/pgSQL variable).
    #[pg_test]
    fn the_ensemble_argument_is_never_written_whatever_its_storage() {
        let mut rng = seeded(11);
        let big = DMatrix::from_fn(300, 20, |i, _| (i % 7) as f64 + normal(&mut rng));
        let compressible = DMatrix::from_fn(300, 20, |i, j| ((i + j) % 4) as f64);
        let plain = DMatrix::from_fn(4, 3, |i, j| (i * 3 + j * j) as f64);
        let short = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 3.0, 5.0]);
        Spi::run(&format!(
            "CREATE TABLE storage_kinds (e_ext float8[], e_main float8[], e_plain float8[], e_short float8[]);
             ALTER TABLE storage_kinds ALTER e_ext SET STORAGE EXTERNAL, ALTER e_main SET STORAGE MAIN,
                 ALTER e_plain SET STORAGE PLAIN;
             INSERT INTO storage_kinds VALUES ({}, {}, {}, '[0:1][2:3]={{{{1,2}},{{3,5}}}}');",
            literal_matrix(&big),
            literal_matrix(&compressible),
            literal_matrix(&plain),
        ))
        .expect("spi");
        let opts = Options {
            inflation: 1.1,
            ..Options::default()
        };
        let call = |col: &str, n: usize| {
            format!("enkf.analyze({col}, '{{0.5, 1.5}}', '{{1, 2}}', '{{1, {n}}}', 'etkf', 1.1)")
        };
        let short_literal = "'[0:1][2:3]={{1,2},{3,5}}'::float8[]".to_string();
        for (col, ens, stored) in [
            ("e_ext", &big, literal_matrix(&big)),
            ("e_main", &compressible, literal_matrix(&compressible)),
            ("e_plain", &plain, literal_matrix(&plain)),
            ("e_short", &short, short_literal),
        ] {
            let n = ens.nrows();
            let want = enkf_core::analyzed(
                ens,
                &Observations {
                    values: &[0.5, 1.5],
                    variance: &[1.0, 2.0],
                    index: &[0, n - 1],
                },
                &opts,
            )
            .unwrap();
            let got: Vec<f64> =
                Spi::get_one(&format!("SELECT {} FROM storage_kinds", call(col, n)))
                    .expect("spi")
                    .expect("not null");
            assert_eq!(DMatrix::from_row_slice(n, ens.ncols(), &got), want, "{col}");
            let same: Option<bool> = Spi::get_one(&format!(
                "SELECT {} = {} AND {col} = {} FROM storage_kinds",
                call(col, n),
                call(col, n),
                stored,
            ))
            .expect("spi");
            assert_eq!(same, Some(true), "{col}: a call changed its argument");
            let bounds: Option<String> = Spi::get_one(&format!(
                "SELECT format('%s %s %s', array_lower({c}, 1), array_lower({c}, 2), array_lower({col}, 1)) FROM storage_kinds",
                c = call(col, n),
            ))
            .expect("spi");
            let stored_lower = if col == "e_short" { 0 } else { 1 };
            assert_eq!(bounds, Some(format!("1 1 {stored_lower}")), "{col}");
        }
        Spi::run(&format!(
            "CREATE FUNCTION pg_temp.twice_unchanged() RETURNS bool LANGUAGE plpgsql AS $$
             DECLARE v float8[] := (SELECT e_ext FROM storage_kinds); a float8[]; b float8[];
             BEGIN a := {a}; b := {a};
               RETURN a = b AND v = (SELECT e_ext FROM storage_kinds); END $$",
            a = call("v", 300),
        ))
        .expect("spi");
        let unchanged: Option<bool> =
            Spi::get_one("SELECT pg_temp.twice_unchanged()").expect("spi");
        assert_eq!(unchanged, Some(true), "a PL/pgSQL variable changed");
    }

    /// The Lorenz-96 twin experiment of the core tests (ETKF, N = 24, inflation 1.013), with
    /// every analysis done by the SQL function.
    #[pg_test]
    fn lorenz96_twin_experiment_through_sql() {
        let model = Lorenz96::default();
        let (n, members, burn_in, cycles) = (40, 24, 400, 1000);
        let mut truth = vec![8.0; n];
        truth[0] += 0.01;
        for _ in 0..5000 {
            model.step(&mut truth);
        }
        let mut rng = seeded(11);
        let mut ens = DMatrix::from_fn(n, members, |i, _| truth[i] + normal(&mut rng));
        let idx: Vec<usize> = (0..n).collect();
        let r = vec![1.0; n];
        let mut member = vec![0.0; n];
        let mut sum = 0.0;
        for cycle in 0..burn_in + cycles {
            model.step(&mut truth);
            for j in 0..members {
                member.copy_from_slice(ens.column(j).as_slice());
                model.step(&mut member);
                ens.column_mut(j).copy_from_slice(&member);
            }
            let y: Vec<f64> = truth.iter().map(|t| t + normal(&mut rng)).collect();
            ens = sql_analyze(&ens, &y, &r, &idx, ", 'etkf', 1.013");
            if cycle >= burn_in {
                let mean = ens.column_mean();
                let mse: f64 = mean
                    .iter()
                    .zip(&truth)
                    .map(|(m, t)| (m - t).powi(2))
                    .sum::<f64>()
                    / n as f64;
                sum += mse.sqrt();
            }
        }
        let rmse = sum / cycles as f64;
        pgrx::info!("Lorenz-96 ETKF N=24 through SQL: analysis RMSE {rmse:.4} (published 0.18)");
        assert!((rmse - 0.18).abs() / 0.18 <= 0.15, "RMSE {rmse}");
    }

    #[pg_test]
    fn analyze_is_declared_immutable_parallel_safe_and_commented() {
        let row: (Option<String>, Option<String>, Option<String>) = Spi::get_three(
            "SELECT p.provolatile::text, p.proparallel::text, obj_description(p.oid, 'pg_proc')
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'enkf' AND p.proname = 'analyze'",
        )
        .unwrap();
        assert_eq!(row.0.as_deref(), Some("i"));
        assert_eq!(row.1.as_deref(), Some("s"));
        assert!(row.2.unwrap_or_default().contains("analysis step"));
    }
}
