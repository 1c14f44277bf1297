//! Small-cell suppression as a model input (docs/hipaa.md, "Small-cell suppression").
//!
//! For a twin of protected data, readers are not shown a count from 1 to threshold - 1. Hiding
//! it in the views is not enough: every forecast is a deterministic function of its inputs, so
//! a reader who knows the model could try each of the few candidate values and match the
//! published quantiles (the baseline's spread gave the count back exactly). So such a count
//! enters every model as the midpoint of the withheld range, which is all a reader knows of it:
//! whatever the small count was, every output is the same.

/// Counts from 1 to `below - 1` (strictly between 0 and `below`) replaced by `below / 2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Censoring {
    below: f64,
}

impl Censoring {
    /// The censoring of a suppression threshold: None when it withholds nothing (1 or less).
    pub fn at(threshold: f64) -> Option<Censoring> {
        (threshold.is_finite() && threshold > 1.0).then_some(Censoring { below: threshold })
    }

    /// The threshold: counts below it (and above 0) were censored.
    pub fn below(&self) -> f64 {
        self.below
    }

    /// What a model sees of a count.
    pub fn apply(&self, count: f64) -> f64 {
        if count > 0.0 && count < self.below {
            self.below / 2.0
        } else {
            count
        }
    }
}

/// `count` as a model sees it under an optional censoring.
pub fn censored(censoring: Option<Censoring>, count: f64) -> f64 {
    censoring.map_or(count, |c| c.apply(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_counts_all_look_alike() {
        let c = Censoring::at(11.0).expect("threshold 11 withholds");
        let seen: Vec<f64> = (1..=10).map(|k| c.apply(k as f64)).collect();
        assert!(seen.iter().all(|v| *v == 5.5), "{seen:?}");
        // Zeros and shown counts pass as they are; a fraction inside the range is withheld
        // as the views withhold it (enkf.suppressed).
        assert_eq!(c.apply(0.0), 0.0);
        assert_eq!(c.apply(0.5), 5.5);
        assert_eq!(c.apply(11.0), 11.0);
        assert_eq!(c.apply(4000.0), 4000.0);
        // Censoring a censored value changes nothing.
        assert_eq!(c.apply(c.apply(3.0)), 5.5);
    }

    #[test]
    fn threshold_one_withholds_nothing() {
        assert_eq!(Censoring::at(1.0), None);
        assert_eq!(Censoring::at(f64::NAN), None);
        assert_eq!(censored(None, 3.0), 3.0);
        assert_eq!(Censoring::at(2.0).map(|c| c.apply(1.0)), Some(1.0));
    }
}
