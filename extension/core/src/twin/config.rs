//! A twin's configuration: the `config` jsonb of `enkf.create_twin`, with defaults for every
//! key. Unknown keys are refused so that a typo never silently falls back to a default.

use serde::{Deserialize, Serialize};

use super::combine::CombinationConfig;
use super::ed::EdConfig;
use super::models::Component;
use super::nowcast::NowcastConfig;
use super::pooled::PooledConfig;
use super::targets::TargetsConfig;
use super::trend::TrendConfig;
use crate::error::{EnkfError, Result};
use crate::filter::{Method, Options};
use crate::model::seirh::{Bounds, Dynamics};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwinConfig {
    /// Seed of the prior ensemble and of the forecast noise: same data, same seed, same results.
    pub seed: i64,
    pub filter: FilterConfig,
    pub observation_error: ObservationError,
    pub priors: Priors,
    pub bounds: BoundsConfig,
    pub dynamics: DynamicsConfig,
    pub forecast: ForecastConfig,
    pub process_noise: ProcessNoise,
    pub checkpoints: CheckpointConfig,
    pub revisions: RevisionConfig,
    /// The local trend model, a component of the combination (twin/trend.rs).
    pub trend: TrendConfig,
    /// The pooled model over every location and past season (twin/pooled.rs).
    pub pooled: PooledConfig,
    /// The nowcast of the newest weeks from the table's versions (twin/nowcast.rs).
    pub nowcast: NowcastConfig,
    /// The combined forecast of the components (twin/combine.rs).
    pub combination: CombinationConfig,
    /// The weekday weeks end on ("saturday" for MMWR epidemiological weeks): daily or
    /// irregular rows are summed into the week that ends on or after their date.
    pub week_ends_on: String,
    /// When the sidecar runs this twin: a 5-field cron expression in a time zone.
    pub schedule: Option<Schedule>,
    /// The hub's other targets: samples, rate change, peak, season (twin/targets.rs).
    pub targets: TargetsConfig,
    /// The ED-visit proportion as a second observed stream (twin/ed.rs), off by default.
    pub ed: EdConfig,
}

impl Default for TwinConfig {
    fn default() -> Self {
        TwinConfig {
            seed: 1,
            filter: FilterConfig::default(),
            observation_error: ObservationError::default(),
            priors: Priors::default(),
            bounds: BoundsConfig::default(),
            dynamics: DynamicsConfig::default(),
            forecast: ForecastConfig::default(),
            process_noise: ProcessNoise::default(),
            checkpoints: CheckpointConfig::default(),
            revisions: RevisionConfig::default(),
            trend: TrendConfig::default(),
            pooled: PooledConfig::default(),
            nowcast: NowcastConfig::default(),
            combination: CombinationConfig::default(),
            week_ends_on: "saturday".into(),
            schedule: None,
            targets: TargetsConfig::default(),
            ed: EdConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// 'eakf' (serial EAKF, the default of the epidemic forecasting literature), 'etkf', 'enkf'.
    pub method: Method,
    /// Multiplicative prior inflation against ensemble collapse.
    pub inflation: f64,
    pub rtps: f64,
    /// "log" (default): the update works on log(1 + count) and log(parameter), so that it is
    /// multiplicative and keeps every quantity positive without clipping skewed ensembles;
    /// "linear": on the counts themselves, as in Shaman and Karspeck (2012).
    pub space: UpdateSpace,
    /// Whether the observation updates the susceptibles. `false` leaves S to the dynamics, so
    /// that the filter follows a turn in the counts with transmission and prevalence rather
    /// than by depleting S, which made the forecasts crash after a peak.
    pub update_susceptible: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            method: Method::Eakf,
            inflation: 1.01,
            rtps: 0.0,
            space: UpdateSpace::Log,
            // Chosen by the leave-one-season-out tuning on all three seasons (docs/backtest.md).
            update_susceptible: false,
        }
    }
}

/// Where the analysis updates the ensemble: on log(1 + count) and log(parameter), or on the
/// counts themselves. Stored as its name; read case-insensitively, as the methods are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateSpace {
    Log,
    Linear,
}

impl UpdateSpace {
    fn name(&self) -> &'static str {
        match self {
            UpdateSpace::Log => "log",
            UpdateSpace::Linear => "linear",
        }
    }
}

impl Serialize for UpdateSpace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for UpdateSpace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "log" => Ok(UpdateSpace::Log),
            "linear" => Ok(UpdateSpace::Linear),
            _ => Err(serde::de::Error::custom(format!(
                "filter.space \"{text}\" is unknown: 'log' (default) or 'linear'"
            ))),
        }
    }
}

/// Observation error variance of a weekly count, after Shaman and Karspeck (2012) and Pei et al.
/// (2018): `floor + mean^2 / divisor`, where `mean` is the average of the last `window` counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservationError {
    pub floor: f64,
    pub divisor: f64,
    pub window: usize,
}

impl Default for ObservationError {
    fn default() -> Self {
        ObservationError {
            floor: 50.0,
            divisor: 20.0,
            window: 3,
        }
    }
}

impl ObservationError {
    pub fn variance(&self, recent_mean: f64) -> f64 {
        self.floor + recent_mean.max(0.0).powi(2) / self.divisor
    }
}

/// Ranges the prior ensemble is drawn from (uniform; `ihr` and `infectious` log-uniform).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Priors {
    /// Basic reproduction number; beta = r0 / infectious_days.
    pub r0: (f64, f64),
    pub ihr: (f64, f64),
    /// Initial susceptible fraction.
    pub susceptible: (f64, f64),
    /// Initial infectious fraction (E starts equal to I).
    pub infectious: (f64, f64),
}

impl Default for Priors {
    fn default() -> Self {
        Priors {
            r0: (1.0, 2.2),
            ihr: (5e-4, 2e-2),
            susceptible: (0.4, 0.9),
            infectious: (1e-6, 1e-4),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoundsConfig {
    pub beta: (f64, f64),
    pub ihr: (f64, f64),
}

impl Default for BoundsConfig {
    fn default() -> Self {
        let b = Bounds::default();
        BoundsConfig {
            beta: b.beta,
            ihr: b.ihr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicsConfig {
    pub latent_days: f64,
    pub infectious_days: f64,
    /// Mean duration of immunity; 0 or null = lifelong.
    pub immunity_days: f64,
    pub importation: f64,
    pub seasonal_amplitude: f64,
    pub seasonal_peak_day: f64,
}

impl Default for DynamicsConfig {
    fn default() -> Self {
        let d = Dynamics::default();
        DynamicsConfig {
            latent_days: d.latent_days,
            infectious_days: d.infectious_days,
            immunity_days: d.immunity_days,
            importation: d.importation,
            seasonal_amplitude: d.seasonal_amplitude,
            seasonal_peak_day: d.seasonal_peak_day,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Horizons 0 .. horizons-1 weeks after the reference date.
    pub horizons: u32,
    /// Observation-noise draws per member in the predictive distribution.
    pub draws_per_member: u32,
    /// Standard deviation of those draws, as a multiple of the observation error's.
    pub noise_scale: f64,
    /// The hubverse target name of the forecasts.
    pub target: String,
    /// The parameters' random walk while forecasting, as a multiple of `process_noise`: the
    /// filter needs a fast walk to follow changes in transmission, but compounded over the
    /// forecast weeks the same walk spreads exponential growth far too wide.
    pub process_noise_scale: f64,
    /// Each forecast week, every member's log(R_eff) is multiplied by this (through beta):
    /// 1 = the model's own dynamics; below 1, growth and decline slow towards flat, as in a
    /// damped trend.
    pub growth_damping: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            horizons: 4,
            draws_per_member: 10,
            noise_scale: 1.0,
            target: "wk inc flu hosp".into(),
            process_noise_scale: 1.0,
            // Chosen by the leave-one-season-out tuning (docs/backtest.md).
            growth_damping: 0.7,
        }
    }
}

/// Weekly random walk of the parameters (standard deviation of the log change per week): lets
/// transmission and ascertainment drift with the season without inflating the compartments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessNoise {
    pub beta: f64,
    pub ihr: f64,
}

impl Default for ProcessNoise {
    fn default() -> Self {
        ProcessNoise {
            beta: 0.05,
            ihr: 0.02,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Keep analysis checkpoints of the last this many weeks (null = all). A revision older
    /// than the oldest kept checkpoint re-assimilates that location from its prior.
    pub keep_weeks: Option<u32>,
}

/// How far back `enkf.assimilate` compares the table with the counts it assimilated, to find
/// revised weeks (NHSN backfill). `null` compares the whole history: exact, and a full read of
/// the table each run; a window bounds the work for large tables (revisions older than it are
/// not looked for).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevisionConfig {
    pub lookback_weeks: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".into()
}

fn invalid(path: &str, detail: String, hint: &str) -> EnkfError {
    EnkfError::InvalidValue {
        arg: "config",
        detail: format!("config {path}: {detail}"),
        hint: hint.into(),
    }
}

fn range(path: &str, (lo, hi): (f64, f64), min: f64, max: f64) -> Result<()> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi && lo >= min && hi <= max) {
        return Err(invalid(
            path,
            format!("[{lo}, {hi}] is not a range within [{min}, {max}]"),
            "give [low, high] with low <= high",
        ));
    }
    Ok(())
}

fn positive(path: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(
            path,
            format!("{v} must be a positive number"),
            "see docs/twin.md for the defaults",
        ));
    }
    Ok(())
}

impl TwinConfig {
    /// Parses the jsonb text of `create_twin`'s config, applying defaults for missing keys.
    pub fn from_json(text: &str) -> Result<TwinConfig> {
        let cfg: TwinConfig = serde_json::from_str(text).map_err(|e| EnkfError::InvalidValue {
            arg: "config",
            detail: format!("config is not valid: {e}"),
            hint: "keys: seed, filter{method, inflation, rtps, space, update_susceptible}, observation_error{floor, divisor, window}, priors{r0, ihr, susceptible, infectious}, bounds{beta, ihr}, dynamics{latent_days, infectious_days, immunity_days, importation, seasonal_amplitude, seasonal_peak_day}, process_noise{beta, ihr}, forecast{horizons, draws_per_member, noise_scale, target, process_noise_scale, growth_damping}, checkpoints{keep_weeks}, revisions{lookback_weeks}, trend{window, damping, error_weeks}, pooled{enabled, power, window_weeks, own_changes, aggregate_changes, widen, shrinkage_rows, train_from, min_rows, population_weights}, nowcast{lags, window_weeks, min_age_weeks, shrinkage}, combination{components, window_weeks, power, recalibrate, min_scored, scoring}, week_ends_on, schedule{cron, timezone}, targets{samples, noise, nowcast, season_first_week, season_last_week, peak_damped_weeks, baseline_paths, climatology_window_weeks, climatology_pseudo_count, probability_floor}, ed{enabled, observation_error, ratio_per_ihr, background, process_noise}; see docs/twin.md".into(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The whole configuration with defaults filled in, as stored with the twin and its runs.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Checks every key against its range; each error names the key.
    pub fn validate(&self) -> Result<()> {
        self.validate_filter()?;
        self.validate_observation_error()?;
        self.validate_priors()?;
        self.validate_dynamics()?;
        self.validate_forecast()?;
        self.validate_components()?;
        self.targets.validate()?;
        self.ed.validate()?;
        self.validate_schedule()
    }

    /// The analysis: inflation and relaxation (method and space are enums, checked by parsing).
    fn validate_filter(&self) -> Result<()> {
        if !(self.filter.inflation.is_finite()
            && self.filter.inflation >= 1.0
            && self.filter.inflation <= 10.0)
        {
            return Err(invalid(
                "filter.inflation",
                format!("{} must lie in [1, 10]", self.filter.inflation),
                "1.0 = none; 1.01 to 1.1 are usual",
            ));
        }
        if !(0.0..=1.0).contains(&self.filter.rtps) {
            return Err(invalid(
                "filter.rtps",
                format!("{} must lie in [0, 1]", self.filter.rtps),
                "0 = none",
            ));
        }
        Ok(())
    }

    /// The observation error variance.
    fn validate_observation_error(&self) -> Result<()> {
        if !(self.observation_error.floor.is_finite() && self.observation_error.floor > 0.0) {
            return Err(invalid(
                "observation_error.floor",
                format!("{} must be positive", self.observation_error.floor),
                "a positive floor keeps weeks with zero counts from having zero error variance",
            ));
        }
        positive("observation_error.divisor", self.observation_error.divisor)?;
        if self.observation_error.window == 0 || self.observation_error.window > 52 {
            return Err(invalid(
                "observation_error.window",
                format!("{} must lie in 1..52", self.observation_error.window),
                "3 weeks is usual",
            ));
        }
        Ok(())
    }

    /// The prior ensemble's ranges and the bounds kept after every update.
    fn validate_priors(&self) -> Result<()> {
        range("priors.r0", self.priors.r0, 0.0, 20.0)?;
        range("priors.ihr", self.priors.ihr, 1e-9, 1.0)?;
        range("priors.susceptible", self.priors.susceptible, 0.0, 1.0)?;
        range("priors.infectious", self.priors.infectious, 1e-12, 0.5)?;
        range("bounds.beta", self.bounds.beta, 0.0, 100.0)?;
        range("bounds.ihr", self.bounds.ihr, 0.0, 1.0)?;
        Ok(())
    }

    /// The model's fixed rates and the parameters' random walk.
    fn validate_dynamics(&self) -> Result<()> {
        let d = &self.dynamics;
        positive("dynamics.latent_days", d.latent_days)?;
        positive("dynamics.infectious_days", d.infectious_days)?;
        if !(d.immunity_days.is_finite() && d.immunity_days >= 0.0) {
            return Err(invalid(
                "dynamics.immunity_days",
                format!("{} must be >= 0", d.immunity_days),
                "0 means lifelong immunity",
            ));
        }
        if !(d.importation.is_finite() && d.importation >= 0.0 && d.importation < 1.0) {
            return Err(invalid(
                "dynamics.importation",
                format!("{} must lie in [0, 1)", d.importation),
                "infections per person per day from outside, e.g. 2e-7",
            ));
        }
        if !(d.seasonal_amplitude.is_finite() && (0.0..1.0).contains(&d.seasonal_amplitude)) {
            return Err(invalid(
                "dynamics.seasonal_amplitude",
                format!("{} must lie in [0, 1)", d.seasonal_amplitude),
                "0 = no seasonal forcing",
            ));
        }
        if !(d.seasonal_peak_day.is_finite() && (0.0..=366.0).contains(&d.seasonal_peak_day)) {
            return Err(invalid(
                "dynamics.seasonal_peak_day",
                format!("{} must lie in [0, 366]", d.seasonal_peak_day),
                "day of the year of peak transmission",
            ));
        }
        for (path, v) in [
            ("process_noise.beta", self.process_noise.beta),
            ("process_noise.ihr", self.process_noise.ihr),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(invalid(
                    path,
                    format!("{v} must lie in [0, 1]"),
                    "standard deviation of the weekly log change; 0 = fixed parameter",
                ));
            }
        }
        Ok(())
    }

    /// The forecast's horizons, draws and spread.
    fn validate_forecast(&self) -> Result<()> {
        if self.forecast.horizons == 0 || self.forecast.horizons > 52 {
            return Err(invalid(
                "forecast.horizons",
                format!("{} must lie in 1..52", self.forecast.horizons),
                "4 gives horizons 0..3",
            ));
        }
        if self.forecast.draws_per_member == 0 || self.forecast.draws_per_member > 1000 {
            return Err(invalid(
                "forecast.draws_per_member",
                format!("{} must lie in 1..1000", self.forecast.draws_per_member),
                "10 is the default",
            ));
        }
        if !(self.forecast.noise_scale.is_finite()
            && (0.0..=10.0).contains(&self.forecast.noise_scale))
        {
            return Err(invalid(
                "forecast.noise_scale",
                format!("{} must lie in [0, 10]", self.forecast.noise_scale),
                "1 = the observation error of the filter",
            ));
        }
        if !(self.forecast.process_noise_scale.is_finite()
            && (0.0..=10.0).contains(&self.forecast.process_noise_scale))
        {
            return Err(invalid(
                "forecast.process_noise_scale",
                format!("{} must lie in [0, 10]", self.forecast.process_noise_scale),
                "1 = the filter's random walk; 0 = parameters held while forecasting",
            ));
        }
        if !(self.forecast.growth_damping.is_finite()
            && (0.0..=1.0).contains(&self.forecast.growth_damping))
        {
            return Err(invalid(
                "forecast.growth_damping",
                format!("{} must lie in [0, 1]", self.forecast.growth_damping),
                "1 = no damping; 0 = R_eff held at 1 while forecasting",
            ));
        }
        if self.forecast.target.trim().is_empty() {
            return Err(invalid(
                "forecast.target",
                "must not be empty".into(),
                "the default is \"wk inc flu hosp\"",
            ));
        }
        Ok(())
    }

    /// Checkpoints kept, revisions looked for, the week's end and the schedule.
    fn validate_schedule(&self) -> Result<()> {
        if let Some(k) = self.checkpoints.keep_weeks {
            if k == 0 {
                return Err(invalid(
                    "checkpoints.keep_weeks",
                    "0 keeps nothing to resume from".into(),
                    "use null to keep all, or at least 1",
                ));
            }
        }
        if self.revisions.lookback_weeks == Some(0) {
            return Err(invalid(
                "revisions.lookback_weeks",
                "0 would never look for revisions".into(),
                "use null for the whole history, or at least 1",
            ));
        }
        if self.week_end_weekday().is_none() {
            return Err(invalid(
                "week_ends_on",
                format!("\"{}\" is not a weekday", self.week_ends_on),
                "a weekday name such as \"saturday\"",
            ));
        }
        if let Some(s) = &self.schedule {
            if s.cron.split_whitespace().count() != 5 {
                return Err(invalid(
                    "schedule.cron",
                    format!("\"{}\" must have 5 fields", s.cron),
                    "minute hour day-of-month month day-of-week, e.g. \"0 6 * * 4\"",
                ));
            }
        }
        Ok(())
    }

    fn validate_components(&self) -> Result<()> {
        self.validate_trend()?;
        self.pooled.validate()?;
        self.nowcast.validate()?;
        self.validate_combination()
    }

    fn validate_trend(&self) -> Result<()> {
        let t = &self.trend;
        if !(2..=52).contains(&t.window) {
            return Err(invalid(
                "trend.window",
                format!("{} must lie in 2..52", t.window),
                "weeks in the fit of the recent slope; 4 is the default",
            ));
        }
        if !(t.damping.is_finite() && (0.0..=1.0).contains(&t.damping)) {
            return Err(invalid(
                "trend.damping",
                format!("{} must lie in [0, 1]", t.damping),
                "1 = straight line, 0 = flat",
            ));
        }
        if !(4..=520).contains(&t.error_weeks) {
            return Err(invalid(
                "trend.error_weeks",
                format!("{} must lie in 4..520", t.error_weeks),
                "past origins whose errors make the spread; 104 is the default",
            ));
        }
        Ok(())
    }

    fn validate_combination(&self) -> Result<()> {
        let c = &self.combination;
        if c.components.is_empty() {
            return Err(invalid(
                "combination.components",
                "must name at least one component".into(),
                "e.g. [\"enkf\", \"baseline\", \"trend\"]",
            ));
        }
        for name in &c.components {
            match Component::from_name(name) {
                Some(Component::Combined) | None => {
                    return Err(invalid(
                        "combination.components",
                        format!("\"{name}\" is not a component"),
                        "any of \"enkf\", \"baseline\", \"trend\", \"pooled\"",
                    ))
                }
                Some(_) => {}
            }
        }
        if !(1..=104).contains(&c.window_weeks) {
            return Err(invalid(
                "combination.window_weeks",
                format!("{} must lie in 1..104", c.window_weeks),
                "recent target weeks whose scores set the weights; 8 is the default",
            ));
        }
        if !(c.power.is_finite() && (0.0..=20.0).contains(&c.power)) {
            return Err(invalid(
                "combination.power",
                format!("{} must lie in [0, 20]", c.power),
                "0 = equal weights",
            ));
        }
        if c.scoring != "natural" && c.scoring != "log" {
            return Err(invalid(
                "combination.scoring",
                format!("\"{}\" is unknown", c.scoring),
                "\"natural\" (counts, as the hub scores) or \"log\"",
            ));
        }
        if c.min_scored == 0 {
            return Err(invalid(
                "combination.min_scored",
                "0 would trust a single score".into(),
                "at least 1; 20 is the default",
            ));
        }
        Ok(())
    }

    /// Weeks end on this weekday, 0 = Sunday .. 6 = Saturday.
    pub fn week_end_weekday(&self) -> Option<u32> {
        const DAYS: [&str; 7] = [
            "sunday",
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
        ];
        let d = self.week_ends_on.trim().to_ascii_lowercase();
        DAYS.iter()
            .position(|n| *n == d || n[..3] == d)
            .map(|p| p as u32)
    }

    pub fn method(&self) -> Method {
        self.filter.method
    }

    pub fn dynamics(&self) -> Dynamics {
        let d = &self.dynamics;
        Dynamics {
            latent_days: d.latent_days,
            infectious_days: d.infectious_days,
            immunity_days: d.immunity_days,
            importation: d.importation,
            seasonal_amplitude: d.seasonal_amplitude,
            seasonal_peak_day: d.seasonal_peak_day,
            steps_per_day: 1,
        }
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            beta: self.bounds.beta,
            ihr: self.bounds.ihr,
        }
    }

    pub fn filter_options(&self, seed: u64) -> Options {
        Options {
            method: self.method(),
            inflation: self.filter.inflation,
            rtps: self.filter.rtps,
            loc_radius: None,
            periodic: false,
            seed,
            rotate: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip() {
        let cfg = TwinConfig::from_json("{}").unwrap();
        assert_eq!(cfg, TwinConfig::default());
        let again = TwinConfig::from_json(&cfg.to_json()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn partial_config_keeps_other_defaults() {
        let cfg = TwinConfig::from_json(r#"{"filter": {"inflation": 1.1}, "seed": 7}"#).unwrap();
        assert_eq!(cfg.filter.inflation, 1.1);
        assert_eq!(cfg.filter.method, Method::Eakf);
        assert_eq!(cfg.seed, 7);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        for bad in [
            r#"{"filter": {"infaltion": 1.1}}"#,
            r#"{"filter": {"method": "magic"}}"#,
            r#"{"filter": {"inflation": 0.5}}"#,
            r#"{"priors": {"ihr": [0.5, 0.1]}}"#,
            r#"{"observation_error": {"floor": 0}}"#,
            r#"{"forecast": {"horizons": 0}}"#,
            r#"{"schedule": {"cron": "every monday"}}"#,
            r#"{"trend": {"window": 1}}"#,
            r#"{"trend": {"damping": 1.5}}"#,
            r#"{"trend": {"windwo": 3}}"#,
            r#"{"combination": {"components": ["enkf", "magic"]}}"#,
            r#"{"combination": {"components": ["combined"]}}"#,
            r#"{"combination": {"components": []}}"#,
            r#"{"combination": {"power": -1}}"#,
            r#"{"combination": {"scoring": "cubic"}}"#,
            r#"{"combination": {"window_weeks": 0}}"#,
            r#"{"backfill": {"lags": 1}}"#,
            r#"{"targets": {"probability_floor": 0.6}}"#,
            r#"{"forecast": {"process_noise_scale": -1}}"#,
            r#"{"filter": {"update_susceptible": "no"}}"#,
            r#"{"targets": {"noise": "wobbly"}}"#,
            r#"{"targets": {"season_first_week": "13-01"}}"#,
            r#"{"targets": {"samples": 0}}"#,
            r#"{"ed": {"enabled": "yes"}}"#,
            r#"{"ed": {"background": [0.5, 0.1]}}"#,
            r#"[1, 2]"#,
        ] {
            let err = TwinConfig::from_json(bad).unwrap_err();
            assert_eq!(err.argument(), Some("config"), "{bad}");
            assert!(err.to_string().starts_with("config"), "{bad}: {err}");
        }
    }
}
