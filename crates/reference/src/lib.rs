//! The reference data gold ships, embedded at build time in this one
//! crate, so nothing is downloaded at run time and no other crate reads
//! `data/` or `models/`.
//!
//! - [`icd10cm`]: the official FY2026 billable ICD-10-CM list;
//! - [`place_of_service`]: the CMS place-of-service codes;
//! - [`procedures`]: the procedure codes the synthetic insurer bills;
//! - [`is_npi`]: the NPI check digit;
//! - [`models`]: the default `models/` folder (sources, silver, dims,
//!   scoring, aggregates), which `gold init` writes and the engine uses
//!   when a warehouse has no models folder of its own.
//!
//! ```
//! let e119 = reference::icd10cm().iter().find(|c| c.code == "E119").unwrap();
//! assert_eq!(e119.dotted, "E11.9");
//! assert!(reference::is_icd10cm("E119"));
//! assert!(reference::models::SILVER.iter().any(|(name, _)| *name == "claims.toml"));
//! ```
#![deny(missing_docs)]

mod codes;
pub mod models;
mod npi;

pub use codes::{
    Error, Icd10cmCode, PlaceOfService, Procedure, icd10cm, icd10cm_gz, is_icd10cm, place_of_service, procedures,
};
pub use npi::{is_npi, npi_check_digit};
