//! The numerics of pg_enkf, free of PostgreSQL: ensemble Kalman filters (`filter`),
//! localization, forecast models, and the random numbers they share.
//!
//! Ensembles are `nalgebra::DMatrix<f64>` of shape (state_dim x members): one column a member.

pub mod error;
pub mod filter;
pub mod localization;
pub mod model;
pub mod rng;

pub use error::{EnkfError, Result};
pub use filter::{analyze, analyzed, Method, Observations, Options};
