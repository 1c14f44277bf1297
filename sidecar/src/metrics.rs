//! Counters of the sidecar in the Prometheus text format (version 0.0.4), and the health
//! state behind /healthz.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the run duration histogram.
const BUCKETS: [f64; 9] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0];

#[derive(Default)]
struct Inner {
    rotations: BTreeMap<&'static str, u64>,
    rotation_last_success: Option<f64>,
    runs: BTreeMap<&'static str, u64>,
    run_last_success: Option<f64>,
    run_buckets: [u64; BUCKETS.len()],
    run_count: u64,
    run_sum: f64,
    passes: BTreeMap<&'static str, u64>,
    db_error: Option<String>,
    last_pass: Option<f64>,
    rotation_error: Option<String>,
    last_rotation_check: Option<f64>,
    submissions: BTreeMap<&'static str, u64>,
    submission_coverage: Option<f64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding the lock leaves plain counters: still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// `result`: succeeded, resumed, failed, refused or busy.
    pub fn rotation(&self, result: &'static str) {
        self.with(|m| {
            *m.rotations.entry(result).or_default() += 1;
            if result == "succeeded" || result == "resumed" {
                m.rotation_last_success = Some(now_secs());
            }
        });
    }

    /// One attempt of a scheduled run; `status`: succeeded or failed.
    pub fn run(&self, status: &'static str, seconds: f64) {
        self.with(|m| {
            *m.runs.entry(status).or_default() += 1;
            m.run_count += 1;
            m.run_sum += seconds;
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    m.run_buckets[i] += 1;
                }
            }
            if status == "succeeded" {
                m.run_last_success = Some(now_secs());
            }
        });
    }

    /// A hub submission file written (with its coverage) or not (None).
    pub fn submission(&self, coverage: Option<f64>) {
        self.with(|m| {
            let result = if coverage.is_some() {
                "written"
            } else {
                "failed"
            };
            *m.submissions.entry(result).or_default() += 1;
            if coverage.is_some() {
                m.submission_coverage = coverage;
            }
        });
    }

    /// The end of a scheduler pass: `error` is why it could not reach the database.
    pub fn pass(&self, error: Option<String>) {
        self.with(|m| {
            *m.passes
                .entry(if error.is_some() { "error" } else { "ok" })
                .or_default() += 1;
            m.db_error = error;
            m.last_pass = Some(now_secs());
        });
    }

    /// The end of a rotation check of the daemon: `error` is why it failed or was refused.
    /// A check that found nothing due, or another sidecar rotating, is a success.
    pub fn rotation_check(&self, error: Option<String>) {
        self.with(|m| {
            m.rotation_error = error;
            m.last_rotation_check = Some(now_secs());
        });
    }

    /// /healthz: healthy unless the last scheduler pass could not reach the database or the
    /// last rotation check failed (a refused secret included). Either stays unhealthy until a
    /// later pass or check succeeds.
    pub fn health(&self) -> (bool, String) {
        self.with(|m| {
            let time =
                |t: Option<f64>| t.map_or(serde_json::Value::Null, |t| (t.round() as i64).into());
            let errors: Vec<String> = [("scheduler", &m.db_error), ("rotation", &m.rotation_error)]
                .iter()
                .filter_map(|(what, e)| e.as_ref().map(|e| format!("{what}: {e}")))
                .collect();
            let mut body = serde_json::json!({
                "status": if errors.is_empty() { "ok" } else { "error" },
                "last_pass": time(m.last_pass),
                "last_rotation_check": time(m.last_rotation_check),
            });
            if !errors.is_empty() {
                body["error"] = errors.join("; ").into();
                body["scheduler_error"] = m.db_error.clone().into();
                body["rotation_error"] = m.rotation_error.clone().into();
            }
            (errors.is_empty(), body.to_string())
        })
    }

    pub fn render(&self) -> String {
        self.with(|m| {
            let mut o = String::new();
            let _ = writeln!(o, "# HELP enkf_sidecar_info Build information.\n# TYPE enkf_sidecar_info gauge");
            let _ = writeln!(o, "enkf_sidecar_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
            let _ = writeln!(o, "# HELP enkf_sidecar_rotations_total Credential rotations by result (succeeded, resumed, failed, refused, busy).\n# TYPE enkf_sidecar_rotations_total counter");
            for r in ["succeeded", "resumed", "failed", "refused", "busy"] {
                let _ = writeln!(o, "enkf_sidecar_rotations_total{{result=\"{r}\"}} {}", m.rotations.get(r).copied().unwrap_or(0));
            }
            let _ = writeln!(o, "# HELP enkf_sidecar_rotation_last_success_timestamp_seconds Time of the last completed rotation.\n# TYPE enkf_sidecar_rotation_last_success_timestamp_seconds gauge");
            let _ = writeln!(o, "enkf_sidecar_rotation_last_success_timestamp_seconds {}", m.rotation_last_success.unwrap_or(0.0));
            let _ = writeln!(o, "# HELP enkf_sidecar_runs_total Attempts of scheduled runs (assimilate + forecast) by status.\n# TYPE enkf_sidecar_runs_total counter");
            for s in ["succeeded", "failed"] {
                let _ = writeln!(o, "enkf_sidecar_runs_total{{status=\"{s}\"}} {}", m.runs.get(s).copied().unwrap_or(0));
            }
            let _ = writeln!(o, "# HELP enkf_sidecar_run_duration_seconds Duration of scheduled run attempts.\n# TYPE enkf_sidecar_run_duration_seconds histogram");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(o, "enkf_sidecar_run_duration_seconds_bucket{{le=\"{b}\"}} {}", m.run_buckets[i]);
            }
            let _ = writeln!(o, "enkf_sidecar_run_duration_seconds_bucket{{le=\"+Inf\"}} {}", m.run_count);
            let _ = writeln!(o, "enkf_sidecar_run_duration_seconds_sum {}", m.run_sum);
            let _ = writeln!(o, "enkf_sidecar_run_duration_seconds_count {}", m.run_count);
            let _ = writeln!(o, "# HELP enkf_sidecar_submissions_total Hub submission files after successful runs, by result (written, failed).\n# TYPE enkf_sidecar_submissions_total counter");
            for r in ["written", "failed"] {
                let _ = writeln!(o, "enkf_sidecar_submissions_total{{result=\"{r}\"}} {}", m.submissions.get(r).copied().unwrap_or(0));
            }
            let _ = writeln!(o, "# HELP enkf_sidecar_submission_coverage Share of the forecast locations in the last submission file written.\n# TYPE enkf_sidecar_submission_coverage gauge");
            let _ = writeln!(o, "enkf_sidecar_submission_coverage {}", m.submission_coverage.unwrap_or(0.0));
            let _ = writeln!(o, "# HELP enkf_sidecar_run_last_success_timestamp_seconds Time of the last successful scheduled run.\n# TYPE enkf_sidecar_run_last_success_timestamp_seconds gauge");
            let _ = writeln!(o, "enkf_sidecar_run_last_success_timestamp_seconds {}", m.run_last_success.unwrap_or(0.0));
            let _ = writeln!(o, "# HELP enkf_sidecar_scheduler_passes_total Scheduler passes by result (ok, error: database unreachable).\n# TYPE enkf_sidecar_scheduler_passes_total counter");
            for r in ["ok", "error"] {
                let _ = writeln!(o, "enkf_sidecar_scheduler_passes_total{{result=\"{r}\"}} {}", m.passes.get(r).copied().unwrap_or(0));
            }
            o
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.rotation("succeeded");
        m.rotation("failed");
        m.run("succeeded", 2.0);
        m.run("failed", 0.5);
        m.submission(Some(0.75));
        m.submission(None);
        let t = m.render();
        assert!(t.contains("enkf_sidecar_submissions_total{result=\"written\"} 1"));
        assert!(t.contains("enkf_sidecar_submissions_total{result=\"failed\"} 1"));
        assert!(t.contains("enkf_sidecar_submission_coverage 0.75"));
        assert!(t.contains("enkf_sidecar_rotations_total{result=\"succeeded\"} 1"));
        assert!(t.contains("enkf_sidecar_rotations_total{result=\"failed\"} 1"));
        assert!(t.contains("enkf_sidecar_runs_total{status=\"failed\"} 1"));
        assert!(t.contains("enkf_sidecar_run_duration_seconds_bucket{le=\"1\"} 1"));
        assert!(t.contains("enkf_sidecar_run_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(t.contains("enkf_sidecar_run_duration_seconds_count 2"));
        assert!(t.contains("enkf_sidecar_run_duration_seconds_sum 2.5"));
        assert!(!t.contains("enkf_sidecar_run_last_success_timestamp_seconds 0\n"));
    }

    #[test]
    fn health_follows_the_last_pass() {
        let m = Metrics::default();
        assert!(m.health().0);
        m.pass(Some("connection refused".into()));
        let (ok, body) = m.health();
        assert!(!ok && body.contains("connection refused"));
        m.pass(None);
        assert!(m.health().0);
    }

    #[test]
    fn health_follows_the_last_rotation_check() {
        let m = Metrics::default();
        m.pass(None);
        m.rotation_check(Some(
            "refusing to rotate: AWSCURRENT names \"victim\"".into(),
        ));
        let (ok, body) = m.health();
        assert!(!ok, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "error");
        assert!(
            v["rotation_error"].as_str().unwrap().contains("victim"),
            "{body}"
        );
        assert!(
            v["error"].as_str().unwrap().starts_with("rotation: "),
            "{body}"
        );
        assert!(v["scheduler_error"].is_null(), "{body}");
        m.rotation_check(None);
        let (ok, body) = m.health();
        assert!(ok, "{body}");
        assert!(body.contains("\"last_rotation_check\":"), "{body}");
    }
}
