//! The epidemic twin over tables: `enkf.create_twin`, `enkf.assimilate`, `enkf.forecast`,
//! `enkf.score`, `enkf.synthetic_surveillance`. Every read of the caller's tables goes through
//! SPI under the calling role, so grants, row-level security and pgaudit apply.

pub mod access;
mod assimilate;
mod backtest;
mod catalog;
mod create;
mod dates;
mod forecast;
mod nowcast;
mod pooled;
mod provenance;
mod score;
mod score_targets;
mod source;
mod synthetic;
mod targets;
