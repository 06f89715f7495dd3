//! The facts stage: the star schema over silver and the SCD2 dimensions.
//!
//! - `dim_date` (one row per day, `yyyymmdd` keys, US federal holidays) and
//!   `dim_diagnosis` (the official ICD-10-CM list plus the insurer's codes);
//! - `fact_claims`, one row per claim in its latest state, with the bridges
//!   `fact_claim_diagnoses` and `fact_claim_procedures`;
//! - `fact_medical_events`, one row per event.
//!
//! **Point-in-time keys.** Every `*_sk` is the surrogate key of the
//! dimension version valid on the fact's date (`valid_from <= date <
//! valid_to`, the date taken at 00:00 UTC), found by a sort-merge interval
//! join (`pit`). A fact with no key, or whose date falls outside every
//! version of its key (before a delete's re-creation, say), points at the
//! dimension's unknown row, [`merge::UNKNOWN_SK`]; a fact without a date
//! has date key [`UNKNOWN_DATE_KEY`]. No key is ever NULL.
//!
//! **Inferred members.** A claim whose member, patient (EHR claims) or
//! provider the dimension has never held gets an inferred version of that
//! key ([`merge::infer`]) in the same run; when the real row arrives, the
//! dims merge fills the inferred version in place, so the fact keeps its key.
//!
//! **Incremental.** A run rebuilds only the facts whose silver row changed
//! (silver's `_updated_at` after the watermark the fact table records) or
//! whose key and date fall in a (key, interval) pair that a dimension merge
//! changed (from [`dims::DIM_CHANGES`]), and rewrites only the month
//! partitions holding them. `full_refresh` rebuilds everything, with the
//! same result.
//!
//! The stage, in [`build_facts`]: the claims are planned (`plan`) and
//! keyed (`claims`), then written with their bridges (`bridges`) on
//! tasks of their own while the medical events (`events`) and the
//! conformed dimensions (`conformed`) are built.
//!
//! ```no_run
//! # async fn nightly(warehouse: &storage::Warehouse, run: &storage::RunContext) -> Result<(), Box<dyn std::error::Error>> {
//! let dims = dims::DimCatalog::default_catalog()?;
//! let report = facts::build_facts(warehouse, run, &dims, facts::FactOptions::default()).await?;
//! for table in &report.tables {
//!     println!("{}: {} facts rebuilt", table.table, table.rebuilt);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod bridges;
mod claims;
mod conformed;
mod date;
mod diagnosis;
mod dim;
mod events;
mod pit;
mod plan;
mod read;
mod write;

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::error::ArrowError;
use serde::Serialize;
use storage::{RunContext, Warehouse};

pub use date::{date_key, federal_holidays};
pub use diagnosis::diagnosis_key;

use claims::{PLAN_COLUMNS, claims, write_claims};
use conformed::conformed_dims;
use dim::Dim;
use events::events;
use pit::Resolved;

/// The date key facts without a date point at; `dim_date` has a row for it.
pub const UNKNOWN_DATE_KEY: i32 = -1;

/// The claim facts: one row per claim, in its latest state.
pub const FACT_CLAIMS: &str = "fact_claims";
/// The bridge of claims to their diagnosis keys, one row per code line.
pub const FACT_CLAIM_DIAGNOSES: &str = "fact_claim_diagnoses";
/// The bridge of claims to their procedure codes, one row per code line.
pub const FACT_CLAIM_PROCEDURES: &str = "fact_claim_procedures";
/// The medical event facts: one row per event.
pub const FACT_MEDICAL_EVENTS: &str = "fact_medical_events";
/// The date dimension: one row per day, keyed `yyyymmdd`.
pub const DIM_DATE: &str = "dim_date";
/// The diagnosis dimension: one row per ICD-10-CM code.
pub const DIM_DIAGNOSIS: &str = "dim_diagnosis";

const SILVER_CLAIMS: &str = "silver_claims";
const MEMBERS: &str = "dim_members";
const PATIENTS: &str = "dim_patients";
const PROVIDERS: &str = "dim_providers";

/// Errors of the facts stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table lacks a column the stage needs, or holds it in a type it
    /// cannot use.
    #[error("{table}: column {column:?} {reason}")]
    Column {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The dimensions model lacks a dimension the facts point at.
    #[error("dims model: {0}")]
    Model(String),
    /// Arrow failed.
    #[error("{table}: arrow: {source}")]
    Arrow {
        /// The table being read or built.
        table: String,
        /// Arrow's error.
        #[source]
        source: Box<ArrowError>,
    },
    /// Writing inferred members failed.
    #[error("{table}: {source}")]
    Merge {
        /// The dimension.
        table: String,
        /// The merge's error.
        #[source]
        source: Box<merge::Error>,
    },
    /// A read or a write running on a task of its own stopped without
    /// finishing.
    #[error("{table}: the {what} stopped without finishing: {source}")]
    Stopped {
        /// The table read or written.
        table: String,
        /// `read` or `write`.
        what: &'static str,
        /// Why the task stopped (it panicked or was cancelled).
        #[source]
        source: tokio::task::JoinError,
    },
    /// The dimensions failed (recording the changes of an inference).
    #[error(transparent)]
    Dims(#[from] dims::Error),
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl Error {
    pub(crate) fn arrow(table: &str, e: ArrowError) -> Self {
        Self::Arrow { table: table.to_string(), source: Box::new(e) }
    }

    /// A write task that stopped without finishing.
    pub(crate) fn write(table: &str, e: tokio::task::JoinError) -> Self {
        Self::Stopped { table: table.to_string(), what: "write", source: e }
    }

    /// A read task that stopped without finishing.
    fn read(table: &str, e: tokio::task::JoinError) -> Self {
        Self::Stopped { table: table.to_string(), what: "read", source: e }
    }

    pub(crate) fn column(table: &str, column: &str, reason: &str) -> Self {
        Self::Column { table: table.to_string(), column: column.to_string(), reason: reason.to_string() }
    }

    /// Whether the user can fix this, as opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Column { .. } | Self::Model(_) => true,
            Self::Merge { source, .. } => source.is_user_error(),
            Self::Dims(e) => e.is_user_error(),
            Self::Storage(e) => e.is_user_error(),
            Self::Arrow { .. } | Self::Stopped { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the stage runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FactOptions {
    /// Rebuild every fact, not only the changed ones.
    pub full_refresh: bool,
}

/// What the stage did to one table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableReport {
    /// The table.
    pub table: String,
    /// The Delta version written, if any.
    pub version: Option<i64>,
    /// Facts rebuilt this run (all of them on a full refresh).
    pub rebuilt: u64,
    /// Of those, facts rebuilt because a dimension interval they point
    /// into changed (restatement).
    pub restated: u64,
    /// Month partitions rewritten.
    pub months_rewritten: usize,
    /// The table was written whole.
    pub full_refresh: bool,
}

/// What the stage did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FactsReport {
    /// Per table, claims first, then their bridges, the events and the
    /// conformed dimensions.
    pub tables: Vec<TableReport>,
    /// Inferred versions created, per dimension.
    pub inferred: BTreeMap<String, u64>,
    /// Rebuilt facts pointing at a dimension's unknown row, per key column.
    pub unknown_keys: BTreeMap<String, u64>,
}

impl FactsReport {
    /// Counts the rebuilt facts of key `column` that point at the unknown
    /// row.
    fn count_unknown(&mut self, column: &str, resolved: &[Resolved]) {
        let n = resolved.iter().filter(|r| r.sk() == merge::UNKNOWN_SK).count() as u64;
        *self.unknown_keys.entry(column.to_string()).or_default() += n;
    }
}

/// Builds the star schema from silver and the dimensions.
///
/// The claims are planned and their keys resolved (and inferred) first;
/// each bridge is then built and written on a task of its own, and the
/// claim facts built and committed after both on another, while the
/// medical events and the conformed dimensions are built here, so the
/// stage keeps both cores busy. The claims' watermarks name
/// the dimension versions they resolved against, taken before the events
/// infer any patient.
pub async fn build_facts(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &dims::DimCatalog,
    options: FactOptions,
) -> Result<FactsReport> {
    let mut report = FactsReport::default();
    let mut members = Dim::new(catalog, MEMBERS)?;
    let mut patients = Dim::new(catalog, PATIENTS)?;
    let mut providers = Dim::new(catalog, PROVIDERS)?;
    let started = std::time::Instant::now();
    // The silver claims are read on a task of their own while the
    // dimensions load.
    let reading = {
        let w = warehouse.clone();
        tokio::spawn(async move { read::silver(&w, SILVER_CLAIMS, &PLAN_COLUMNS).await })
    };
    let mut loaded = Ok(());
    for d in [&mut members, &mut patients, &mut providers] {
        loaded = d.load(warehouse).await;
        if loaded.is_err() {
            break;
        }
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "dimensions loaded");
    let silver_claims = reading.await.map_err(|e| Error::read(SILVER_CLAIMS, e))?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "silver claims read");
    loaded?;
    let mut years = BTreeSet::from([chrono::Datelike::year(&run.clock.logical_date())]);
    let claim_rows = claims(
        warehouse,
        run,
        silver_claims?,
        &mut [&mut members, &mut patients, &mut providers],
        options,
        &mut report,
        &mut years,
    )
    .await?;
    let writing = claim_rows.map(|rows| {
        let (w, r) = (warehouse.clone(), run.clone());
        tokio::spawn(async move { write_claims(&w, &r, rows).await })
    });
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claims planned and keyed");
    let rest = async {
        events(warehouse, run, &mut patients, &providers, options, &mut report, &mut years).await?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "events written");
        conformed_dims(warehouse, run, &years, &mut report).await
    }
    .await;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "conformed dimensions written");
    // The claims' writes end, well or not, before the stage returns.
    let written = match writing {
        Some(task) => task.await.map_err(|e| Error::write(FACT_CLAIMS, e))?,
        None => Ok(Vec::new()),
    };
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claims written");
    let written = written?;
    rest?;
    report.tables.splice(0..0, written);
    Ok(report)
}
