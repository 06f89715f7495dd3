//! The dims stage: SCD Type 2 dimensions (`dim_members`, `dim_patients`,
//! `dim_providers`) built from silver with the [`merge`] engine.
//!
//! Each [`DimModel`] (from `models/dims.toml`) names a silver table, the
//! business key, the surrogate key column, the effective-date column and
//! the type-1 columns. [`build_dims`] merges the silver table's rows that
//! are not `_is_deleted`, as a full snapshot, into the dimension. The
//! silver table's Delta version is the batch sequence of the merge's
//! application transaction, so a dimension catches up once per silver
//! version and a rerun writes nothing.
//!
//! ```no_run
//! # async fn run(warehouse: &storage::Warehouse, run: &storage::RunContext) -> dims::Result<()> {
//! let catalog = dims::DimCatalog::default_catalog()?;
//! for dim in dims::build_dims(warehouse, run, &catalog).await? {
//!     println!("{}: {:?}", dim.table, dim.metrics);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Each merge also appends the (key, interval) pairs it created or changed
//! to [`DIM_CHANGES`] ([`record_changes`]), which the facts stage re-keys
//! from; [`unmerged_day`] finds a silver version a dimension has not
//! merged yet.
#![deny(missing_docs)]

use std::path::Path;

use deltalake::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use storage::{Commit, RunContext, TableName, Warehouse};

/// Errors of the dims stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `dims.toml` is malformed.
    #[error("dims model {origin}: {reason}")]
    Model {
        /// The file (or the embedded models).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// `dims.toml` is not valid TOML for a dims catalog.
    #[error("dims model {origin}: {}", .source.to_string().trim_end())]
    ModelToml {
        /// The file (or the embedded models).
        origin: String,
        /// The TOML parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A dimension or its source has a name no table may have.
    #[error("dims model {origin}: {source}")]
    ModelTable {
        /// The file (or the embedded models).
        origin: String,
        /// The name's error.
        #[source]
        source: storage::Error,
    },
    /// The SCD2 engine refused or failed.
    #[error("{table}: {source}")]
    Merge {
        /// The dimension.
        table: String,
        /// The merge engine's error.
        #[source]
        source: Box<merge::Error>,
    },
    /// Arrow failed on rows read from silver.
    #[error("{table}: arrow: {source}")]
    Arrow {
        /// The table the rows are for.
        table: String,
        /// Arrow's error.
        #[source]
        source: Box<deltalake::arrow::error::ArrowError>,
    },
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl Error {
    /// Whether the user can fix this, as opposed to a storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. } | Self::ModelToml { .. } | Self::ModelTable { .. } | Self::Io { .. } => true,
            Self::Merge { source, .. } => source.is_user_error(),
            Self::Storage(e) => e.is_user_error(),
            Self::Arrow { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One SCD2 dimension.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimModel {
    /// The dimension table (`dim_…`).
    pub table: String,
    /// The silver table it is built from.
    pub source: String,
    /// The business key columns.
    pub key: Vec<String>,
    /// The surrogate key column the dimension adds.
    pub surrogate_key: String,
    /// The column holding each change's effective date; when unset, a
    /// change takes effect at the run's clock.
    #[serde(default)]
    pub effective_from: Option<String>,
    /// Columns whose change does not open a new version (every other
    /// column is tracked).
    #[serde(default)]
    pub track_all_except: Vec<String>,
    /// Type-1 columns: updated in place, without a new version.
    #[serde(default)]
    pub type1: Vec<String>,
    /// Silver columns left out of the dimension (e.g. nested lists that
    /// silver also flattens into their own tables).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// When set, each key's first version is valid from this date rather
    /// than from its first `effective_from`, so that facts dated before the
    /// first state the source sent resolve to it.
    #[serde(default)]
    pub history_from: Option<chrono::NaiveDate>,
}

impl DimModel {
    /// The merge engine's spec for this dimension: a full snapshot whose
    /// deleted keys are invalidated.
    pub fn spec(&self) -> merge::Spec {
        merge::Spec {
            key: self.key.clone(),
            tracked: merge::Tracked::AllExcept(self.track_all_except.clone()),
            type1: self.type1.clone(),
            order_by: Vec::new(),
            effective_from: self.effective_from.clone(),
            deletes: merge::Deletes::Invalidate,
            surrogate_key: self.surrogate_key.clone(),
            history_from: self
                .history_from
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_micros()),
        }
    }
}

/// Every dimension.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimCatalog {
    #[serde(rename = "dim")]
    dims: Vec<DimModel>,
}

impl DimCatalog {
    /// The dimensions built into gold.
    pub fn default_catalog() -> Result<Self> {
        Self::parse(reference::models::DIMS, "embedded models/dims.toml")
    }

    /// `dims.toml` at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The catalog in `text` (the contents of a `dims.toml`), whose errors
    /// name `origin`.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let catalog: Self =
            toml::from_str(text).map_err(|e| Error::ModelToml { origin: origin.to_string(), source: Box::new(e) })?;
        for d in &catalog.dims {
            for name in [&d.table, &d.source] {
                TableName::new(name).map_err(|source| Error::ModelTable { origin: origin.to_string(), source })?;
            }
            if d.key.is_empty() {
                return Err(Error::Model {
                    origin: origin.to_string(),
                    reason: format!("{}: the key is empty", d.table),
                });
            }
        }
        Ok(catalog)
    }

    /// The dimensions, in the order of the file.
    pub fn dims(&self) -> &[DimModel] {
        &self.dims
    }
}

/// What the stage did to one dimension.
#[derive(Clone, Debug, Serialize)]
pub struct DimReport {
    /// The dimension.
    pub table: String,
    /// The silver table it is built from.
    pub source: String,
    /// The silver version merged, if the silver table exists.
    pub source_version: Option<i64>,
    /// The dimension's new Delta version, if the merge wrote one.
    pub version: Option<u64>,
    /// What the merge did: versions inserted, closed, unchanged…
    pub metrics: merge::Metrics,
    /// The dimension's current rows after the merge.
    pub current_rows: u64,
    /// (key, interval) pairs that changed, for facts to re-key.
    pub changed: usize,
}

impl DimReport {
    /// Adds a later merge's report of the same dimension to this one.
    pub fn absorb(&mut self, later: &DimReport) {
        self.source_version = later.source_version.or(self.source_version);
        self.metrics.add(&later.metrics);
        self.changed += later.changed;
        if later.version.is_some() {
            self.version = later.version;
            self.current_rows = later.current_rows;
        }
    }
}

/// The logical date of the newest silver version that a dimension has not
/// merged yet (an earlier run stopped between its silver and dims commits,
/// or ran silver alone), from that version's commit info; `None` when
/// every dimension is up to date with its silver table.
pub async fn unmerged_day(warehouse: &Warehouse, catalog: &DimCatalog) -> Result<Option<chrono::NaiveDate>> {
    let mut day = None;
    for dim in catalog.dims() {
        let source = TableName::new(&dim.source)?;
        let Some(table) = warehouse.load(&source).await? else { continue };
        let version = table.version().and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
        let app_id = format!("gold.dims:{}", dim.table);
        if warehouse.txn_version(&TableName::new(&dim.table)?, &app_id).await?.is_some_and(|done| done >= version) {
            continue;
        }
        let info = warehouse.commit_metadata(&source, 1).await?;
        let logical = info
            .first()
            .and_then(|m| m.get("gold.logical_date"))
            .and_then(|v| v.as_str())
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        day = day.max(logical);
    }
    Ok(day)
}

/// Merges each dimension's silver table, where its version is newer than
/// the one last merged.
pub async fn build_dims(warehouse: &Warehouse, run: &RunContext, catalog: &DimCatalog) -> Result<Vec<DimReport>> {
    let mut reports = Vec::new();
    for dim in catalog.dims() {
        reports.push(build_dim(warehouse, run, dim).await?);
    }
    Ok(reports)
}

/// Merges `dim`'s silver table at its latest version, unless that version
/// is merged already or the table does not exist yet.
async fn build_dim(warehouse: &Warehouse, run: &RunContext, dim: &DimModel) -> Result<DimReport> {
    let mut report = DimReport {
        table: dim.table.clone(),
        source: dim.source.clone(),
        source_version: None,
        version: None,
        metrics: merge::Metrics::default(),
        current_rows: 0,
        changed: 0,
    };
    let source = TableName::new(&dim.source)?;
    let target_name = TableName::new(&dim.table)?;
    let Some(table) = warehouse.load(&source).await? else {
        tracing::warn!("{}: no {} yet; the dimension waits for it", dim.table, dim.source);
        return Ok(report);
    };
    let version = table.version().and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
    report.source_version = Some(version);
    let app_id = format!("gold.dims:{}", dim.table);
    if warehouse.txn_version(&target_name, &app_id).await?.is_some_and(|done| done >= version) {
        return Ok(report);
    }
    let rows = warehouse.scan_where(&source, Some(version), Some("_is_deleted IS NOT TRUE")).await?;
    let rows = business_columns(&dim.source, rows, &dim.exclude)?;
    let commit =
        Commit::new(run, "dims").with_metadata("source", serde_json::json!(format!("{}@v{version}", dim.source)));
    let target = merge::Target {
        url: warehouse.table_url(&target_name)?,
        storage_options: warehouse.storage_options().clone(),
        app_id,
        commit_info: commit.info(),
        // Warehouse tables stay plain Delta (reader 1) for every engine.
        deletion_vectors: false,
        table_properties: storage::table_properties().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    let batch =
        merge::Batch { id: format!("{}@v{version}", dim.source), sequence: version, clock: run.clock.now(), rows };
    let outcome = merge::merge(&target, &dim.spec(), batch)
        .await
        .map_err(|e| Error::Merge { table: dim.table.clone(), source: Box::new(e) })?;
    storage::failpoint("dims-merged");
    if let Some(v) = outcome.version {
        record_changes(warehouse, run, &dim.table, v, &outcome.changed).await?;
    }
    report.version = outcome.version;
    report.metrics = outcome.metrics;
    report.current_rows = outcome.current_rows;
    report.changed = outcome.changed.len();
    Ok(report)
}

/// The table of every (key, interval) pair a merge created or changed, per
/// dimension and Delta version: what the facts stage re-keys from.
pub const DIM_CHANGES: &str = "_dim_changes";

/// The application transaction on [`DIM_CHANGES`] recording the last
/// version of `dim` whose changes it holds.
pub fn changes_app_id(dim: &str) -> String {
    format!("gold.dim_changes:{dim}")
}

/// Appends the changed intervals of `dim`'s version `version` to
/// [`DIM_CHANGES`], under [`changes_app_id`]. A reader that finds that
/// transaction behind the dimension's version (a run stopped between the
/// two commits) cannot trust the changes and rebuilds from scratch.
pub async fn record_changes(
    warehouse: &Warehouse,
    run: &RunContext,
    dim: &str,
    version: u64,
    changed: &[merge::ChangedInterval],
) -> Result<()> {
    use deltalake::arrow::array::{BinaryArray, Int64Array, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("dim", DataType::Utf8, false),
        Field::new("dim_version", DataType::Int64, false),
        Field::new("key_hash", DataType::Binary, false),
        Field::new("surrogate_key", DataType::Int64, false),
        Field::new("valid_from", ts.clone(), false),
        Field::new("valid_to", ts, false),
    ]));
    let n = changed.len();
    let hashes: Vec<[u8; 16]> = changed.iter().map(|c| c.key_hash.to_le_bytes()).collect();
    let micros = |f: fn(&merge::ChangedInterval) -> i64| -> TimestampMicrosecondArray {
        TimestampMicrosecondArray::from(changed.iter().map(f).collect::<Vec<_>>()).with_timezone("UTC")
    };
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![dim; n])),
            Arc::new(Int64Array::from(vec![version; n])),
            Arc::new(BinaryArray::from(hashes.iter().map(|h| h.as_slice()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(changed.iter().map(|c| c.surrogate_key).collect::<Vec<_>>())),
            Arc::new(micros(|c| c.valid_from.timestamp_micros())),
            Arc::new(micros(|c| c.valid_to.timestamp_micros())),
        ],
    )
    .map_err(|e| Error::Arrow { table: DIM_CHANGES.to_string(), source: Box::new(e) })?;
    let commit = Commit::new(run, "dim_changes")
        .partitioned_by(&["dim"])
        .with_txn(&changes_app_id(dim), version)
        .with_metadata("dim", serde_json::json!(format!("{dim}@v{version}")));
    warehouse.append(&TableName::new(DIM_CHANGES)?, vec![batch], &commit).await?;
    Ok(())
}

/// The silver rows without silver's own `_` metadata columns and the
/// excluded ones.
fn business_columns(table: &str, rows: Vec<RecordBatch>, exclude: &[String]) -> Result<Vec<RecordBatch>> {
    rows.into_iter()
        .map(|b| {
            let keep: Vec<usize> = b
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.name().starts_with('_') && !exclude.contains(f.name()))
                .map(|(i, _)| i)
                .collect();
            b.project(&keep).map_err(|e| Error::Arrow { table: table.to_string(), source: Box::new(e) })
        })
        .collect()
}
