//! The numerics of pg_enkf, free of PostgreSQL: ensemble Kalman filters (`filter`),
//! localization, forecast models (Lorenz systems, the `seirh` epidemic model), the epidemic
//! twin's weekly cycle, forecast scoring, and the random numbers they share.
//!
//! Ensembles are `nalgebra::DMatrix<f64>` of shape (state_dim x members): one column a member.

pub mod dates;
pub mod error;
pub mod filter;
pub mod linalg;
pub mod localization;
pub mod model;
pub mod rng;
pub mod scoring;
pub mod twin;
pub mod workers;

pub use error::{EnkfError, Result};
pub use filter::{analyze, analyzed, Method, Observations, Options};
