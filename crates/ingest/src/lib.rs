//! Bronze ingestion: every declared source into `bronze_<name>`, exactly
//! once, with nothing lost.
//!
//! Sources are declared in `models/sources.toml` ([`SourceCatalog`]): CSV,
//! newline-delimited JSON (flat or nested) and SQL tables. [`ingest`] reads
//! every landing day folder up to a date, skips files it has already
//! ingested (by path and BLAKE3 content hash, in `_gold_ingest_files`),
//! refuses files that changed under the same name, and writes one Delta
//! commit per source and day folder (one batch each, oldest day first, so
//! that silver can replay a catch-up day by day) with the run id and an
//! application transaction. Every physical row becomes a bronze row with
//! `_batch_id`, `_ingested_at`, `_source_file`, `_source_row`,
//! `_rescued_data` and `_error` ([`METADATA_COLUMNS`]) and its
//! `_ingest_date`. A new bronze table is not partitioned, so that the
//! nightly compaction can merge its small daily files (a table created
//! partitioned by `_ingest_date` keeps that layout).
//!
//! A run goes in three steps:
//! 1. the day folders are listed and every source's matching files are
//!    fingerprinted and checked against the checkpoint (`plan.rs`); a
//!    changed file stops the run before any commit;
//! 2. each source's new files are read, a few day folders at a time, on
//!    every worker thread (`workers.rs`, `files.rs`, `bronze.rs`), or its
//!    SQL table is read (`sql.rs`);
//! 3. each batch is committed to bronze, then recorded in the checkpoint
//!    (`batch.rs`, `checkpoint.rs`).
//!
//! ```no_run
//! # async fn run(run: &storage::RunContext) -> ingest::Result<()> {
//! let warehouse = storage::Warehouse::open("./warehouse")?;
//! let catalog = ingest::SourceCatalog::default_catalog()?;
//! let options = ingest::IngestOptions { landing: std::path::Path::new("landing"), up_to: run.clock.logical_date() };
//! let report = ingest::ingest(&warehouse, run, &catalog, &options).await?;
//! for s in &report.sources {
//!     println!("{}: {} rows read, {} written, {} rescued", s.source, s.rows_read, s.rows_written, s.rows_rescued);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod batch;
mod bronze;
mod checkpoint;
mod error;
mod files;
mod model;
mod plan;
mod sql;
mod workers;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Serialize;
use storage::{RunContext, TableName, Warehouse};

pub use bronze::METADATA_COLUMNS;
pub use checkpoint::{CHECKPOINT_TABLE, Entry};
pub use error::{Error, Result};
pub use model::{ColumnDef, ColumnType, DriftPolicy, LoadMode, SourceCatalog, SourceDef, SourceKind};

use crate::batch::BatchWriter;
use crate::checkpoint::Checkpoint;
use crate::plan::{FilePlan, NewFile, plan_files};

/// Where and how far to ingest.
#[derive(Clone, Copy, Debug)]
pub struct IngestOptions<'a> {
    /// The landing root, holding `YYYY-MM-DD/` day folders (and `legacy.db`).
    pub landing: &'a Path,
    /// The last day folder to read.
    pub up_to: NaiveDate,
}

/// What one source did in a run.
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    /// The source's name.
    pub source: String,
    /// Its bronze table.
    pub table: String,
    /// How it arrives.
    pub kind: SourceKind,
    /// Files (or `sql:<table>`) read in this run.
    pub read: Vec<String>,
    /// Files already ingested by an earlier run, skipped.
    pub already_ingested: usize,
    /// Rows read from the files (or the table).
    pub rows_read: u64,
    /// Rows committed to bronze.
    pub rows_written: u64,
    /// Rows kept with `_rescued_data` or `_error`.
    pub rows_rescued: u64,
    /// The last batch written in this run.
    pub batch_id: Option<String>,
    /// Every batch written in this run, one per day folder read (a SQL
    /// source writes one).
    pub batch_ids: Vec<String>,
    /// The bronze table's version after this run's last commit to it.
    pub bronze_version: Option<i64>,
    /// The checkpoint table's version after this run's last commit of the
    /// source's files.
    pub checkpoint_version: Option<i64>,
    /// What the user should know: missing or undeclared columns, empty
    /// files, days without a file of the source.
    pub warnings: Vec<String>,
}

impl SourceReport {
    /// The report of `source` before anything is read.
    fn new(source: &SourceDef) -> Self {
        SourceReport {
            source: source.name.clone(),
            table: source.bronze_table(),
            kind: source.kind,
            read: Vec::new(),
            already_ingested: 0,
            rows_read: 0,
            rows_written: 0,
            rows_rescued: 0,
            batch_id: None,
            batch_ids: Vec::new(),
            bronze_version: None,
            checkpoint_version: None,
            warnings: Vec::new(),
        }
    }
}

/// What a run ingested.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    /// The day folders considered.
    pub days: Vec<NaiveDate>,
    /// Each active source, in catalog order.
    pub sources: Vec<SourceReport>,
}

impl IngestReport {
    /// (table, version, rows written) for every table this run committed to.
    pub fn table_versions(&self) -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for s in &self.sources {
            if let Some(v) = s.bronze_version {
                out.push((s.table.clone(), v, s.rows_written as i64));
            }
        }
        if let Some(v) = self.sources.iter().filter_map(|s| s.checkpoint_version).max() {
            out.push((
                CHECKPOINT_TABLE.to_string(),
                v,
                self.sources.iter().filter(|s| s.checkpoint_version.is_some()).map(|s| s.read.len() as i64).sum(),
            ));
        }
        out
    }

    /// Rows read, written and rescued over all sources.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.sources.iter().fold((0, 0, 0), |(r, w, x), s| (r + s.rows_read, w + s.rows_written, x + s.rows_rescued))
    }
}

/// The day folders of `landing` up to `up_to`, oldest first.
pub fn day_folders(landing: &Path, up_to: NaiveDate) -> Result<Vec<(NaiveDate, PathBuf)>> {
    let io = |source| Error::Io { path: landing.display().to_string(), source };
    let mut days = Vec::new();
    for entry in std::fs::read_dir(landing).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(date) = entry.file_name().to_str().and_then(|n| NaiveDate::parse_from_str(n, "%Y-%m-%d").ok()) else {
            continue;
        };
        if date <= up_to && entry.path().is_dir() {
            days.push((date, entry.path()));
        }
    }
    days.sort();
    Ok(days)
}

/// Ingests every active source of `catalog` from the day folders up to
/// `options.up_to`. Validation (changed files, unreadable days) happens
/// before any commit; then each source commits once per day folder with
/// new files (a SQL source once).
pub async fn ingest(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &SourceCatalog,
    options: &IngestOptions<'_>,
) -> Result<IngestReport> {
    // Files are checkpointed by their path under the landing root, so the
    // root is made canonical: `./landing`, `landing` and `/abs/landing` are
    // one landing, and a file is read once however the root is spelled.
    let canonical = std::fs::canonicalize(options.landing).unwrap_or_else(|_| options.landing.to_path_buf());
    let options = &IngestOptions { landing: &canonical, up_to: options.up_to };
    let days = day_folders(options.landing, options.up_to)?;
    let mut checkpoint = Checkpoint::load(warehouse).await?;
    let active: Vec<&SourceDef> = catalog.active().collect();
    for source in &active {
        let bronze = TableName::new(&source.bronze_table())?;
        checkpoint.recover(warehouse, run, &source.name, &bronze).await?;
    }
    let plans = plan_all(&active, &days, options.landing, &checkpoint)?;
    // A source missing from a day is worth a warning on the run that reads
    // that day, not on every later run.
    let new_days: HashSet<String> = plans
        .iter()
        .flatten()
        .flat_map(|p| &p.new)
        .filter_map(|f| f.rel.split('/').next().map(str::to_string))
        .collect();

    let mut reports = Vec::new();
    for (source, plan) in active.into_iter().zip(plans) {
        let table = TableName::new(&source.bronze_table())?;
        let mut report = SourceReport::new(source);
        let partition_by = warehouse.partition_columns(&table).await?.unwrap_or_default();
        let mut writer = BatchWriter {
            warehouse,
            run,
            source,
            table: &table,
            partition_by: &partition_by,
            checkpoint: &mut checkpoint,
        };
        match plan {
            Some(plan) => {
                report.already_ingested = plan.already;
                let location = source.location.as_deref().unwrap_or_default();
                report.warnings = plan
                    .missing_on
                    .iter()
                    .filter(|d| new_days.contains(&d.to_string()))
                    .map(|d| format!("{d}: no file matches {location}"))
                    .collect();
                // One batch per day folder, oldest first, so that silver can
                // replay a catch-up day by day, as the nightly runs would
                // have; as many days are read at a time as there are threads.
                let days: Vec<&[NewFile]> = plan.new.chunk_by(|a, b| a.day == b.day).collect();
                for group in days.chunks(parallel::threads()) {
                    writer.files_batches(group, &mut report).await?;
                }
            }
            None => writer.sql_batch(options.landing, &mut report).await?,
        }
        reports.push(report);
    }
    Ok(IngestReport { days: days.into_iter().map(|(d, _)| d).collect(), sources: reports })
}

/// The files of every file source (`None` for a SQL source); an error
/// naming every file that changed under a name already ingested, if any.
fn plan_all(
    active: &[&SourceDef],
    days: &[(NaiveDate, PathBuf)],
    landing: &Path,
    checkpoint: &Checkpoint,
) -> Result<Vec<Option<FilePlan>>> {
    let planning = std::time::Instant::now();
    let mut changed = Vec::new();
    let mut plans = Vec::new();
    for source in active {
        plans.push(match source.kind {
            SourceKind::Sql => None,
            _ => Some(plan_files(source, days, landing, checkpoint, &mut changed)?),
        });
    }
    tracing::debug!(seconds = planning.elapsed().as_secs_f64(), "listed and fingerprinted the landing files");
    if !changed.is_empty() {
        return Err(Error::ChangedFiles { files: changed });
    }
    Ok(plans)
}
