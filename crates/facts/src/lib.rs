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
//! join ([`pit`]). A fact with no key, or whose date falls outside every
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

mod date;
mod diagnosis;
mod pit;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::arrow::error::ArrowError;
use serde::Serialize;
use storage::{Commit, RunContext, TableName, Warehouse};

pub use date::{date_key, federal_holidays};
pub use diagnosis::diagnosis_key;
use pit::{DimIndex, FactOrder, Resolved};
use write::{FactTable, Rebuilt, write_facts};

/// The date key facts without a date point at; `dim_date` has a row for it.
pub const UNKNOWN_DATE_KEY: i32 = -1;

pub const FACT_CLAIMS: &str = "fact_claims";
pub const FACT_CLAIM_DIAGNOSES: &str = "fact_claim_diagnoses";
pub const FACT_CLAIM_PROCEDURES: &str = "fact_claim_procedures";
pub const FACT_MEDICAL_EVENTS: &str = "fact_medical_events";
pub const DIM_DATE: &str = "dim_date";
pub const DIM_DIAGNOSIS: &str = "dim_diagnosis";

const SILVER_CLAIMS: &str = "silver_claims";
const MEMBERS: &str = "dim_members";
const PATIENTS: &str = "dim_patients";
const PROVIDERS: &str = "dim_providers";
const DAY_MICROS: i64 = 86_400_000_000;

/// Errors of the facts stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table lacks a column the stage needs, or holds it in a type it
    /// cannot use.
    #[error("{table}: column {column:?} {reason}")]
    Column { table: String, column: String, reason: String },
    /// The dimensions model lacks a dimension the facts point at.
    #[error("dims model: {0}")]
    Model(String),
    /// Arrow failed.
    #[error("{table}: arrow: {source}")]
    Arrow {
        table: String,
        #[source]
        source: Box<ArrowError>,
    },
    /// Writing inferred members failed.
    #[error("{table}: {source}")]
    Merge {
        table: String,
        #[source]
        source: Box<merge::Error>,
    },
    /// A read or a write running on a task of its own stopped without
    /// finishing.
    #[error("{table}: the {what} stopped without finishing: {reason}")]
    Stopped { table: String, what: &'static str, reason: String },
    #[error(transparent)]
    Dims(#[from] dims::Error),
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl Error {
    pub(crate) fn arrow(table: &str, e: ArrowError) -> Self {
        Self::Arrow { table: table.to_string(), source: Box::new(e) }
    }

    /// A write task that stopped without finishing.
    fn write(table: &str, e: tokio::task::JoinError) -> Self {
        Self::Stopped { table: table.to_string(), what: "write", reason: e.to_string() }
    }

    /// A read task that stopped without finishing.
    fn read(table: &str, e: tokio::task::JoinError) -> Self {
        Self::Stopped { table: table.to_string(), what: "read", reason: e.to_string() }
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
    pub full_refresh: bool,
}

/// What the stage did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FactsReport {
    pub tables: Vec<TableReport>,
    /// Inferred versions created, per dimension.
    pub inferred: BTreeMap<String, u64>,
    /// Rebuilt facts pointing at a dimension's unknown row, per key column.
    pub unknown_keys: BTreeMap<String, u64>,
}

/// One SCD2 dimension the facts point at.
struct Dim {
    model: dims::DimModel,
    key: String,
    index: Option<DimIndex>,
}

impl Dim {
    fn new(catalog: &dims::DimCatalog, table: &str) -> Result<Self> {
        let model = catalog
            .dims()
            .iter()
            .find(|d| d.table == table)
            .cloned()
            .ok_or_else(|| Error::Model(format!("no dimension {table}, which the facts point at")))?;
        let [key] = model.key.as_slice() else {
            return Err(Error::Model(format!("{table}: facts need a single-column key, not {:?}", model.key)));
        };
        Ok(Self { key: key.clone(), model, index: None })
    }

    async fn load(&mut self, warehouse: &Warehouse) -> Result<()> {
        self.index = DimIndex::load(warehouse, &self.model.table, &self.key, &self.model.surrogate_key).await?;
        Ok(())
    }

    fn version(&self) -> Option<i64> {
        self.index.as_ref().map(|i| i.version)
    }

    fn resolve(&self, keys: &StringArray, dates: &[Option<i64>]) -> Vec<Resolved> {
        self.resolve_in(keys, dates, None)
    }

    /// [`Self::resolve`], with the facts' order when it is already known.
    fn resolve_in(&self, keys: &StringArray, dates: &[Option<i64>], order: Option<&FactOrder>) -> Vec<Resolved> {
        match (&self.index, order) {
            (Some(index), Some(order)) => index.resolve_in(keys, dates, order),
            (Some(index), None) => index.resolve(keys, dates),
            (None, _) => {
                (0..keys.len()).map(|i| if keys.is_valid(i) { Resolved::Absent } else { Resolved::Null }).collect()
            }
        }
    }

    /// Gives the keys of `keys` the dimension has never held an inferred
    /// version, plus the unknown row if it lacks one, then reloads. Returns
    /// how many keys were inferred.
    async fn infer(&mut self, warehouse: &Warehouse, run: &RunContext, keys: BTreeSet<String>) -> Result<u64> {
        let unknown_missing = !self.index.as_ref().is_some_and(|i| i.has_unknown_row);
        if keys.is_empty() && !unknown_missing {
            return Ok(0);
        }
        let table = self.model.table.clone();
        let mut values: Vec<Option<String>> = keys.into_iter().map(Some).collect();
        if unknown_missing {
            values.push(None);
        }
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(&self.key, DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(values))],
        )
        .map_err(|e| Error::arrow(&table, e))?;
        let name = TableName::new(&table)?;
        let target = merge::Target {
            url: warehouse.table_url(&name)?,
            storage_options: warehouse.storage_options().clone(),
            app_id: format!("gold.facts.infer:{table}"),
            commit_info: Commit::new(run, "infer").info(),
            // Warehouse tables stay plain Delta (reader 1) for every engine.
            deletion_vectors: false,
        };
        let sequence = self.version().unwrap_or(-1) + 1;
        let outcome = merge::infer(
            &target,
            &self.model.spec(),
            rows,
            &format!("inferred@{}", run.id.0),
            sequence,
            run.clock.now(),
        )
        .await
        .map_err(|e| Error::Merge { table: table.clone(), source: Box::new(e) })?;
        if let Some(v) = outcome.version {
            dims::record_changes(warehouse, run, &table, v, &outcome.changed).await?;
        }
        self.load(warehouse).await?;
        // The unknown row is not an inferred key.
        let unknown_written = unknown_missing && self.index.as_ref().is_some_and(|i| i.has_unknown_row);
        Ok(outcome.metrics.inferred.saturating_sub(u64::from(unknown_written)))
    }
}

/// The (key, interval) pairs of `dim` changed after version `after`, or
/// `None` when they are not all recorded (then the facts are rebuilt).
async fn dim_changes(warehouse: &Warehouse, dim: &Dim, after: i64) -> Result<Option<Vec<(u128, i64, i64)>>> {
    let Some(now) = dim.version() else { return Ok(Some(Vec::new())) };
    if now <= after {
        return Ok(Some(Vec::new()));
    }
    let changes = TableName::new(dims::DIM_CHANGES)?;
    let recorded = warehouse.txn_version(&changes, &dims::changes_app_id(&dim.model.table)).await?;
    if recorded.is_none_or(|r| r < now) {
        tracing::warn!("{}: changes up to v{now} are not all recorded; the facts are rebuilt", dim.model.table);
        return Ok(None);
    }
    let filter = format!("dim = '{}' AND dim_version > {after}", dim.model.table);
    let mut out = Vec::new();
    for b in warehouse.scan_where(&changes, None, Some(&filter)).await? {
        let t = dims::DIM_CHANGES;
        let hashes = b
            .column_by_name("key_hash")
            .and_then(|c| c.as_binary_opt::<i32>())
            .ok_or_else(|| Error::column(t, "key_hash", "is missing"))?;
        let from = micros_col(t, &b, "valid_from")?;
        let to = micros_col(t, &b, "valid_to")?;
        for i in 0..b.num_rows() {
            let h = merge::hash::from_stored(hashes.value(i));
            out.push((h, from[i].unwrap_or(i64::MIN), to[i].unwrap_or(merge::OPEN_END)));
        }
    }
    Ok(Some(out))
}

fn col<'a>(table: &str, b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name).ok_or_else(|| Error::column(table, name, "is missing"))
}

fn cast_to(table: &str, b: &RecordBatch, name: &str, t: &DataType) -> Result<ArrayRef> {
    cast(col(table, b, name)?, t).map_err(|e| Error::arrow(table, e))
}

fn string_col(table: &str, b: &RecordBatch, name: &str) -> Result<StringArray> {
    Ok(cast_to(table, b, name, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn days_col(table: &str, b: &RecordBatch, name: &str) -> Result<Vec<Option<i32>>> {
    let a = cast_to(table, b, name, &DataType::Date32)?;
    Ok(a.as_primitive::<Date32Type>().iter().collect())
}

fn micros_col(table: &str, b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let a = cast_to(table, b, name, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(a.as_primitive::<TimestampMicrosecondType>().iter().collect())
}

/// A date (days since 1970-01-01) as the micros of its 00:00 UTC.
fn day_start(days: Option<i32>) -> Option<i64> {
    days.map(|d| i64::from(d) * DAY_MICROS)
}

/// The `yyyymm` partition of a date, `-1` without one.
fn month_of(days: Option<i32>) -> i32 {
    let key = date::date_key_of_days(days);
    if key < 0 { -1 } else { key / 100 }
}

/// The rows of a silver table (those not `_is_deleted`), in one batch, or
/// `None` when the table does not exist.
async fn silver(warehouse: &Warehouse, table: &str, columns: &[&str]) -> Result<Option<RecordBatch>> {
    let name = TableName::new(table)?;
    let Some(delta) = warehouse.load(&name).await? else { return Ok(None) };
    let present: HashSet<String> = delta
        .snapshot()
        .map_err(|e| storage::Error::Delta { table: table.to_string(), source: Box::new(e) })?
        .schema()
        .fields()
        .map(|f| f.name().clone())
        .collect();
    let mut wanted: Vec<&str> = columns.iter().copied().filter(|c| present.contains(*c)).collect();
    for c in columns {
        if !present.contains(*c) && !c.starts_with('_') {
            return Err(Error::column(table, c, "is missing"));
        }
    }
    let has_deleted = present.contains("_is_deleted");
    if has_deleted {
        wanted.push("_is_deleted");
    }
    let batches = warehouse.scan_columns(&name, None, &wanted).await?;
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => return Ok(Some(RecordBatch::new_empty(Arc::new(Schema::empty())))),
    };
    let mut one = concat_batches(&schema, &batches).map_err(|e| Error::arrow(table, e))?;
    if has_deleted {
        let d = one.column_by_name("_is_deleted").map(|c| c.as_boolean().clone());
        if let Some(d) = d {
            let live: BooleanArray = (0..d.len()).map(|i| Some(!(d.is_valid(i) && d.value(i)))).collect();
            one = filter_record_batch(&one, &live).map_err(|e| Error::arrow(table, e))?;
        }
    }
    Ok(Some(one))
}

/// The fact table's recorded watermark and dimension versions.
async fn txn(warehouse: &Warehouse, table: &str, app: &str) -> Result<Option<i64>> {
    Ok(warehouse.txn_version(&TableName::new(table)?, &format!("gold.facts:{app}")).await?)
}

/// Which rows to rebuild: changed in silver after the watermark, or
/// touched by a changed dimension interval. `full` rebuilds all.
struct Plan {
    full: bool,
    rebuild: Vec<bool>,
    restated: u64,
    watermark: i64,
}

async fn plan(
    warehouse: &Warehouse,
    table: &str,
    source: &str,
    rows: &RecordBatch,
    keyed: &[(&Dim, &StringArray)],
    dates: &[Option<i64>],
    full_refresh: bool,
) -> Result<Plan> {
    let updated = micros_col(source, rows, "_updated_at")?;
    let watermark = updated.iter().flatten().copied().max().unwrap_or(i64::MIN);
    let exists = warehouse.load(&TableName::new(table)?).await?.is_some();
    let n = rows.num_rows();
    let mut full = full_refresh || !exists;
    let mut rebuild = vec![false; n];
    let mut restated = 0;
    if !full {
        let after = txn(warehouse, table, source).await?.unwrap_or(i64::MIN);
        for (i, u) in updated.iter().enumerate() {
            rebuild[i] = u.is_none_or(|u| u > after);
        }
        for (dim, keys) in keyed {
            let done = txn(warehouse, table, &dim.model.table).await?.unwrap_or(-1);
            let Some(changes) = dim_changes(warehouse, dim, done).await? else {
                full = true;
                break;
            };
            if let Some(index) = &dim.index {
                for (i, t) in index.touched_by(&changes, keys, dates).into_iter().enumerate() {
                    if t && !rebuild[i] {
                        rebuild[i] = true;
                        restated += 1;
                    }
                }
            }
        }
    }
    if full {
        rebuild = vec![true; n];
        restated = 0;
    }
    Ok(Plan { full, rebuild, restated, watermark })
}

/// The elements of `values` whose `rebuild` flag is set.
fn select<T: Copy>(values: &[T], rebuild: &[bool]) -> Vec<T> {
    values.iter().zip(rebuild).filter(|(_, r)| **r).map(|(v, _)| *v).collect()
}

/// The strings of `values` whose `rebuild` flag is set.
fn select_strings(values: &StringArray, rebuild: &[bool]) -> StringArray {
    values.iter().zip(rebuild).filter(|(_, r)| **r).map(|(v, _)| v).collect()
}

/// Marks for rebuilding the facts not marked yet whose key is in
/// `inferred`; returns how many.
fn extend_rebuild(rebuild: &mut [bool], keys: &StringArray, inferred: &BTreeSet<String>) -> u64 {
    let mut added = 0;
    for (i, r) in rebuild.iter_mut().enumerate() {
        if !*r && keys.is_valid(i) && inferred.contains(keys.value(i)) {
            *r = true;
            added += 1;
        }
    }
    added
}

/// The keys of rebuilt facts that `dim` has never held.
fn absent_keys(resolved: &[Resolved], keys: &StringArray, only: impl Fn(usize) -> bool) -> BTreeSet<String> {
    (0..keys.len()).filter(|&i| resolved[i] == Resolved::Absent && only(i)).map(|i| keys.value(i).to_string()).collect()
}

fn count_unknown(report: &mut FactsReport, column: &str, resolved: &[Resolved]) {
    let n = resolved.iter().filter(|r| r.sk() == merge::UNKNOWN_SK).count() as u64;
    *report.unknown_keys.entry(column.to_string()).or_default() += n;
}

fn decimal(table: &str, values: Vec<Option<i128>>) -> Result<ArrayRef> {
    Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(18, 2).map_err(|e| Error::arrow(table, e))?))
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
        tokio::spawn(async move { silver(&w, SILVER_CLAIMS, &CLAIM_COLUMNS).await })
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

/// The columns of `silver_claims` the claim facts are built from.
const CLAIM_COLUMNS: [&str; 16] = [
    "claim_id",
    "source_system",
    "source_feed",
    "member_id",
    "provider_id",
    "claim_date",
    "service_date",
    "amount",
    "status",
    "icd10_codes",
    "cpt_codes",
    "claim_type",
    "submission_channel",
    "updated_at",
    "_dq_warnings",
    "_updated_at",
];

/// Plans the claims of `silver_claims` (its [`CLAIM_COLUMNS`], `None` when
/// the table does not exist yet) and resolves their keys, inferring the
/// ones the dimensions lack.
async fn claims(
    warehouse: &Warehouse,
    run: &RunContext,
    silver_claims: Option<RecordBatch>,
    dims3: &mut [&mut Dim; 3],
    options: FactOptions,
    report: &mut FactsReport,
    years: &mut BTreeSet<i32>,
) -> Result<Option<ClaimRows>> {
    const S: &str = SILVER_CLAIMS;
    let started = std::time::Instant::now();
    let Some(all) = silver_claims else {
        tracing::warn!("no {S} yet; the claim facts wait for it");
        return Ok(None);
    };
    if all.num_columns() == 0 {
        return Ok(None);
    }
    let claim_days = days_col(S, &all, "claim_date")?;
    let service_days = days_col(S, &all, "service_date")?;
    years.extend(claim_days.iter().chain(&service_days).flatten().filter_map(year_of));
    let pit_days: Vec<Option<i32>> = service_days.iter().zip(&claim_days).map(|(s, c)| s.or(*c)).collect();
    let dates: Vec<Option<i64>> = pit_days.iter().map(|d| day_start(*d)).collect();
    let member_keys = string_col(S, &all, "member_id")?;
    let provider_keys = string_col(S, &all, "provider_id")?;
    let [members, patients, providers] = dims3;
    let plan = plan(
        warehouse,
        FACT_CLAIMS,
        S,
        &all,
        &[(&**members, &member_keys), (&**patients, &member_keys), (&**providers, &provider_keys)],
        &dates,
        options.full_refresh,
    )
    .await?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claims planned");
    let all_members = member_keys;
    let all_providers = provider_keys;
    let mut plan = plan;
    // Inferred members, patients (EHR claims) and providers, then the keys.
    // Facts not rebuilt whose key was just inferred pointed at the unknown
    // row (patients of enrollment claims, say): they are rebuilt too, in a
    // second round, as a full refresh would resolve them.
    let all_sources = string_col(S, &all, "source_system")?;
    let (keys, m, p, v) = loop {
        let dates_r = select(&dates, &plan.rebuild);
        let member_keys = select_strings(&all_members, &plan.rebuild);
        let provider_keys = select_strings(&all_providers, &plan.rebuild);
        let source_system = select_strings(&all_sources, &plan.rebuild);
        let is_ehr = |i: usize| source_system.is_valid(i) && source_system.value(i) == "ehr";
        let keyed = Keyed::resolve([&**members, &**patients, &**providers], &member_keys, &provider_keys, &dates_r);
        let Keyed { by_member, by_provider, resolved: [mut m, mut p, mut v] } = keyed;
        let mut extended = 0;
        for (dim, resolved, keys, order, all_keys, only_ehr) in [
            (&mut **members, &mut m, &member_keys, &by_member, &all_members, false),
            (&mut **patients, &mut p, &member_keys, &by_member, &all_members, true),
            (&mut **providers, &mut v, &provider_keys, &by_provider, &all_providers, false),
        ] {
            let absent = absent_keys(resolved, keys, |i| !only_ehr || is_ehr(i));
            let inferring = std::time::Instant::now();
            let inferred = dim.infer(warehouse, run, absent.clone()).await?;
            tracing::debug!(table = %dim.model.table, inferred, seconds = inferring.elapsed().as_secs_f64(), "inferred");
            *report.inferred.entry(dim.model.table.clone()).or_default() += inferred;
            if inferred > 0 {
                *resolved = dim.resolve_in(keys, &dates_r, Some(order));
                extended += extend_rebuild(&mut plan.rebuild, all_keys, &absent);
            }
        }
        plan.restated += extended;
        if extended == 0 {
            break ((member_keys, provider_keys, source_system), m, p, v);
        }
    };
    let mask = BooleanArray::from(plan.rebuild.clone());
    let rows = filter_record_batch(&all, &mask).map_err(|e| Error::arrow(S, e))?;
    drop(all);
    let (member_keys, provider_keys, source_system) = keys;
    count_unknown(report, "fact_claims.member_sk", &m);
    count_unknown(report, "fact_claims.patient_sk", &p);
    count_unknown(report, "fact_claims.provider_sk", &v);
    Ok(Some(ClaimRows {
        months: select(&pit_days, &plan.rebuild).into_iter().map(month_of).collect(),
        claim_days: select(&claim_days, &plan.rebuild),
        service_days: select(&service_days, &plan.rebuild),
        dims: versions(&[&**members, &**patients, &**providers]),
        plan,
        rows,
        member_keys,
        provider_keys,
        source_system,
        resolved: [m, p, v],
    }))
}

/// The claims' member, patient and provider keys resolved, with the two
/// fact orders the joins used (members and patients share one).
struct Keyed {
    by_member: FactOrder,
    by_provider: FactOrder,
    resolved: [Vec<Resolved>; 3],
}

impl Keyed {
    /// Orders the facts by member and by provider and joins them to the
    /// three dimensions, the providers on a thread of their own.
    fn resolve(
        [members, patients, providers]: [&Dim; 3],
        member_keys: &StringArray,
        provider_keys: &StringArray,
        dates: &[Option<i64>],
    ) -> Self {
        std::thread::scope(|scope| {
            let other = scope.spawn(|| {
                let order = FactOrder::new(provider_keys, dates);
                let v = providers.resolve_in(provider_keys, dates, Some(&order));
                (order, v)
            });
            let by_member = FactOrder::new(member_keys, dates);
            let m = members.resolve_in(member_keys, dates, Some(&by_member));
            let p = patients.resolve_in(member_keys, dates, Some(&by_member));
            let (by_provider, v) = other.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            Self { by_member, by_provider, resolved: [m, p, v] }
        })
    }
}

/// The claims to rebuild, their keys resolved: what [`write_claims`] needs.
struct ClaimRows {
    plan: Plan,
    /// The rebuilt silver rows.
    rows: RecordBatch,
    member_keys: StringArray,
    provider_keys: StringArray,
    source_system: StringArray,
    /// Member, patient and provider keys.
    resolved: [Vec<Resolved>; 3],
    /// Each claim's month partition (of its service date, else its claim
    /// date).
    months: Vec<i32>,
    claim_days: Vec<Option<i32>>,
    service_days: Vec<Option<i32>>,
    /// The dimension versions the keys were resolved against.
    dims: Vec<(String, i64)>,
}

/// The versions of `dims`, by table (those that exist).
fn versions(dims: &[&Dim]) -> Vec<(String, i64)> {
    dims.iter().filter_map(|d| Some((d.model.table.clone(), d.version()?))).collect()
}

/// Writes the two bridges, each on a task of its own, while the claim
/// facts are built and their write prepared; then commits `fact_claims`
/// with the watermarks. Returns their reports, `fact_claims` first.
async fn write_claims(warehouse: &Warehouse, run: &RunContext, c: ClaimRows) -> Result<Vec<TableReport>> {
    // The rebuilt claims, by id, with their months: the bridges keep
    // their lines, and the writes their other facts.
    let claim_ids = string_col(SILVER_CLAIMS, &c.rows, "claim_id")?;
    let rebuilt: Arc<Rebuilt> = Arc::new(
        (0..claim_ids.len())
            .filter(|&i| claim_ids.is_valid(i))
            .map(|i| (claim_ids.value(i).to_string(), c.months[i]))
            .collect(),
    );
    // Each bridge is read, built and written on a task of its own.
    let bridges: Vec<_> = BRIDGES
        .into_iter()
        .map(|bridge| {
            let (w, r, rebuilt, full) = (warehouse.clone(), run.clone(), Arc::clone(&rebuilt), c.plan.full);
            (bridge.table, tokio::spawn(async move { write_bridge(&w, &r, &rebuilt, full, bridge).await }))
        })
        .collect();
    // Meanwhile the claim rows are built, and what their write keeps of
    // the months it rewrites is read; they are committed after the bridges.
    let started = std::time::Instant::now();
    let table = FactTable { name: FACT_CLAIMS, id: "claim_id", month: "service_month" };
    let prepared = async {
        let fact = claim_facts(&c, claim_ids)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claim rows built");
        write::prepare(warehouse, &table, fact, &rebuilt, c.plan.full).await
    }
    .await;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claim rows prepared");
    // Both bridges end, well or not, before anything else; they commit
    // before the claims with the watermarks: a run that stops in between
    // is redone whole by the next one.
    let mut bridge_reports = Vec::new();
    let mut failed = None;
    for (table, task) in bridges {
        match task.await {
            Ok(Ok(report)) => bridge_reports.push(report),
            Ok(Err(e)) => _ = failed.get_or_insert(e),
            Err(e) => _ = failed.get_or_insert(Error::write(table, e)),
        }
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "bridges written");
    let prepared = prepared?;
    if let Some(e) = failed {
        return Err(e);
    }
    let commit = Commit::new(run, "facts");
    let written = write_with_watermarks(warehouse, commit, SILVER_CLAIMS, &c.plan, &c.dims, prepared).await?;
    Ok(std::iter::once(written).chain(bridge_reports).collect())
}

/// The `fact_claims` rows of the rebuilt claims, given their ids.
fn claim_facts(c: &ClaimRows, claim_ids: StringArray) -> Result<RecordBatch> {
    const S: &str = SILVER_CLAIMS;
    let ClaimRows {
        rows,
        member_keys,
        provider_keys,
        source_system,
        resolved: [m, p, v],
        months,
        claim_days,
        service_days,
        ..
    } = c;
    let n = rows.num_rows();
    let is_ehr = |i: usize| source_system.is_valid(i) && source_system.value(i) == "ehr";

    // The fact rows.
    let t = FACT_CLAIMS;
    let status = string_col(S, rows, "status")?;
    let amount = cast_to(S, rows, "amount", &DataType::Decimal128(18, 2))?;
    let amount = amount.as_primitive::<Decimal128Type>();
    let icd = col(S, rows, "icd10_codes")?.as_list_opt::<i32>().cloned();
    let cpt = col(S, rows, "cpt_codes")?.as_list_opt::<i32>().cloned();
    let feed = string_col(S, rows, "source_feed")?;
    let updated = micros_col(S, rows, "updated_at")?;
    let warnings = col(S, rows, "_dq_warnings")?.as_list_opt::<i32>().cloned();
    let list_len = |l: &Option<deltalake::arrow::array::ListArray>, i: usize| -> i32 {
        l.as_ref().map_or(0, |l| if l.is_valid(i) { l.value_length(i) } else { 0 })
    };
    let mut primary = Vec::with_capacity(n);
    let mut adjudication = Vec::with_capacity(n);
    let mut payment = Vec::with_capacity(n);
    let mut paid = Vec::with_capacity(n);
    let mut clean = Vec::with_capacity(n);
    for i in 0..n {
        let first = icd.as_ref().filter(|l| l.is_valid(i) && l.value_length(i) > 0).and_then(|l| {
            let codes = l.value(i);
            let codes = codes.as_string_opt::<i32>()?;
            codes.is_valid(0).then(|| codes.value(0).to_string())
        });
        primary.push(first.as_deref().map_or(merge::UNKNOWN_SK, diagnosis_key));
        let st = status.is_valid(i).then(|| status.value(i));
        // Silver keeps the latest status event's time: the adjudication or
        // payment time when that event is the one that set it.
        let days = match (feed.is_valid(i) && feed.value(i) == "claims_stream", updated[i], claim_days[i]) {
            (true, Some(at), Some(c)) => Some((at.div_euclid(DAY_MICROS) - i64::from(c)) as i32),
            _ => None,
        };
        adjudication.push(days.filter(|_| matches!(st, Some("approved" | "rejected"))));
        payment.push(days.filter(|_| st == Some("paid")));
        paid.push(match st {
            Some("paid") => amount.is_valid(i).then(|| amount.value(i)),
            _ => Some(0),
        });
        clean.push(
            list_len(&warnings, i) == 0
                && m[i].is_real()
                && (is_ehr(i) || v[i].is_real())
                && list_len(&icd, i) > 0
                && amount.is_valid(i),
        );
    }
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Utf8, false),
        Field::new("source_system", DataType::Utf8, true),
        Field::new("source_feed", DataType::Utf8, true),
        Field::new("member_id", DataType::Utf8, true),
        Field::new("member_sk", DataType::Int64, false),
        Field::new("patient_sk", DataType::Int64, false),
        Field::new("provider_id", DataType::Utf8, true),
        Field::new("provider_sk", DataType::Int64, false),
        Field::new("service_date_key", DataType::Int32, false),
        Field::new("claim_date_key", DataType::Int32, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("billed_amount", DataType::Decimal128(18, 2), true),
        Field::new("paid_amount", DataType::Decimal128(18, 2), true),
        Field::new("claim_type", DataType::Utf8, true),
        Field::new("submission_channel", DataType::Utf8, true),
        Field::new("diagnosis_count", DataType::Int32, false),
        Field::new("procedure_count", DataType::Int32, false),
        Field::new("primary_diagnosis_key", DataType::Int64, false),
        Field::new("days_to_adjudication", DataType::Int32, true),
        Field::new("days_to_payment", DataType::Int32, true),
        Field::new("is_clean_claim", DataType::Boolean, false),
        Field::new("service_month", DataType::Int32, false),
    ]));
    let sks = |r: &[Resolved]| -> ArrayRef { Arc::new(Int64Array::from(r.iter().map(|x| x.sk()).collect::<Vec<_>>())) };
    let keys_of = |d: &[Option<i32>]| -> ArrayRef {
        Arc::new(Int32Array::from(d.iter().map(|x| date::date_key_of_days(*x)).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(claim_ids),
            Arc::new(source_system.clone()),
            Arc::new(feed.clone()),
            Arc::new(member_keys.clone()),
            sks(m),
            sks(p),
            Arc::new(provider_keys.clone()),
            sks(v),
            keys_of(service_days),
            keys_of(claim_days),
            Arc::new(status.clone()),
            decimal(t, amount.iter().collect())?,
            decimal(t, paid)?,
            Arc::new(string_col(S, rows, "claim_type")?),
            Arc::new(string_col(S, rows, "submission_channel")?),
            Arc::new(Int32Array::from((0..n).map(|i| list_len(&icd, i)).collect::<Vec<_>>())),
            Arc::new(Int32Array::from((0..n).map(|i| list_len(&cpt, i)).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(primary)),
            Arc::new(Int32Array::from(adjudication)),
            Arc::new(Int32Array::from(payment)),
            Arc::new(BooleanArray::from(clean)),
            Arc::new(Int32Array::from(months.clone())),
        ],
    )
    .map_err(|e| Error::arrow(t, e))
}

/// A bridge table of the claims, and the silver lines it is built from.
#[derive(Clone, Copy)]
struct Bridge {
    table: &'static str,
    source: &'static str,
    value: &'static str,
    /// The value is a diagnosis code, stored as its `dim_diagnosis` key.
    as_diagnosis_key: bool,
}

/// The claims' bridges, in the order of the stage's report.
const BRIDGES: [Bridge; 2] = [
    Bridge { table: FACT_CLAIM_DIAGNOSES, source: "silver_claim_diagnoses", value: "code", as_diagnosis_key: true },
    Bridge { table: FACT_CLAIM_PROCEDURES, source: "silver_claim_procedures", value: "code", as_diagnosis_key: false },
];

/// Writes the bridge rows of the `rebuilt` claims to `b.table`, and
/// returns its report.
async fn write_bridge(
    warehouse: &Warehouse,
    run: &RunContext,
    rebuilt: &Rebuilt,
    full: bool,
    b: Bridge,
) -> Result<TableReport> {
    let started = std::time::Instant::now();
    let lines = bridge(warehouse, b, rebuilt).await?;
    tracing::debug!(table = b.table, seconds = started.elapsed().as_secs_f64(), "bridge built");
    let rows = lines.num_rows() as u64;
    let fact = FactTable { name: b.table, id: "claim_id", month: "service_month" };
    let w = write_facts(warehouse, &Commit::new(run, "facts"), &fact, lines, rebuilt, full).await?;
    tracing::debug!(table = b.table, seconds = started.elapsed().as_secs_f64(), "bridge written");
    Ok(TableReport {
        table: b.table.to_string(),
        version: w.version,
        rebuilt: rows,
        restated: 0,
        months_rewritten: w.months_rewritten,
        full_refresh: full,
    })
}

/// Commits a fact table's prepared write with, in the same commit, the
/// watermark of its silver source and the dimension versions it resolved
/// against (`txn gold.facts:<input>`).
async fn write_with_watermarks(
    warehouse: &Warehouse,
    commit: Commit<'_>,
    source: &str,
    plan: &Plan,
    dims: &[(String, i64)],
    prepared: write::Prepared,
) -> Result<TableReport> {
    let mut commit = commit.with_txn(&format!("gold.facts:{source}"), plan.watermark);
    for (table, version) in dims {
        commit = commit.with_txn(&format!("gold.facts:{table}"), *version);
    }
    let (table, rows) = (prepared.table, prepared.rebuilt);
    let w = prepared.write(warehouse, &commit).await?;
    storage::failpoint("facts-written");
    Ok(TableReport {
        table: table.to_string(),
        version: w.version,
        rebuilt: rows,
        restated: plan.restated,
        months_rewritten: w.months_rewritten,
        full_refresh: plan.full,
    })
}

/// The year of a date inside `dim_date`'s range, else `None`.
fn year_of(days: &i32) -> Option<i32> {
    let key = date::date_key_of_days(Some(*days));
    (key != UNKNOWN_DATE_KEY).then_some(key / 10_000)
}

/// The bridge rows of the `rebuilt` claims: claim id, the diagnosis key
/// (or the procedure code), the line and the claim's month.
async fn bridge(warehouse: &Warehouse, b: Bridge, rebuilt: &Rebuilt) -> Result<RecordBatch> {
    let Bridge { table, source, value, as_diagnosis_key } = b;
    let (value_name, value_type) =
        if as_diagnosis_key { ("diagnosis_key", DataType::Int64) } else { ("procedure_code", DataType::Utf8) };
    let schema = Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Utf8, false),
        Field::new(value_name, value_type, false),
        Field::new("line", DataType::Int32, true),
        Field::new("service_month", DataType::Int32, false),
    ]));
    let rows = match silver(warehouse, source, &["claim_id", value, "line"]).await? {
        Some(r) if r.num_columns() > 0 => r,
        _ => return Ok(RecordBatch::new_empty(schema)),
    };
    let ids = string_col(source, &rows, "claim_id")?;
    let values = string_col(source, &rows, value)?;
    let lines = cast_to(source, &rows, "line", &DataType::Int32)?;
    let lines = lines.as_primitive::<deltalake::arrow::datatypes::Int32Type>();
    let (mut c, mut k, mut s, mut l, mut mo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows.num_rows() {
        if !ids.is_valid(i) || !values.is_valid(i) {
            continue;
        }
        let Some(&month) = rebuilt.get(ids.value(i)) else { continue };
        c.push(ids.value(i));
        if as_diagnosis_key {
            k.push(diagnosis_key(values.value(i)));
        } else {
            s.push(values.value(i));
        }
        l.push(lines.is_valid(i).then(|| lines.value(i)));
        mo.push(month);
    }
    let value_col: ArrayRef =
        if as_diagnosis_key { Arc::new(Int64Array::from(k)) } else { Arc::new(StringArray::from(s)) };
    RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(c)), value_col, Arc::new(Int32Array::from(l)), Arc::new(Int32Array::from(mo))],
    )
    .map_err(|e| Error::arrow(table, e))
}

async fn events(
    warehouse: &Warehouse,
    run: &RunContext,
    patients: &mut Dim,
    providers: &Dim,
    options: FactOptions,
    report: &mut FactsReport,
    years: &mut BTreeSet<i32>,
) -> Result<()> {
    const S: &str = "silver_medical_events";
    let columns =
        ["event_id", "patient_id", "event_date", "event_type", "medical_provider", "provider_id", "_updated_at"];
    let Some(all) = silver(warehouse, S, &columns).await? else {
        tracing::warn!("no {S} yet; the event facts wait for it");
        return Ok(());
    };
    if all.num_columns() == 0 {
        return Ok(());
    }
    let days = days_col(S, &all, "event_date")?;
    years.extend(days.iter().flatten().filter_map(year_of));
    let dates: Vec<Option<i64>> = days.iter().map(|d| day_start(*d)).collect();
    let patient_keys = string_col(S, &all, "patient_id")?;
    let provider_keys = string_col(S, &all, "provider_id")?;
    let plan = plan(
        warehouse,
        FACT_MEDICAL_EVENTS,
        S,
        &all,
        &[(&*patients, &patient_keys), (providers, &provider_keys)],
        &dates,
        options.full_refresh,
    )
    .await?;
    let all_patients = patient_keys;
    let mut plan = plan;
    // As for claims: events not rebuilt whose patient was just inferred
    // are rebuilt in a second round.
    let (patient_keys, p) = loop {
        let dates_r = select(&dates, &plan.rebuild);
        let patient_keys = select_strings(&all_patients, &plan.rebuild);
        let order = FactOrder::new(&patient_keys, &dates_r);
        let mut p = patients.resolve_in(&patient_keys, &dates_r, Some(&order));
        let absent = absent_keys(&p, &patient_keys, |_| true);
        let inferred = patients.infer(warehouse, run, absent.clone()).await?;
        *report.inferred.entry(patients.model.table.clone()).or_default() += inferred;
        let mut extended = 0;
        if inferred > 0 {
            p = patients.resolve_in(&patient_keys, &dates_r, Some(&order));
            extended = extend_rebuild(&mut plan.rebuild, &all_patients, &absent);
        }
        plan.restated += extended;
        if extended == 0 {
            break (patient_keys, p);
        }
    };
    let mask = BooleanArray::from(plan.rebuild.clone());
    let rows = filter_record_batch(&all, &mask).map_err(|e| Error::arrow(S, e))?;
    drop(all);
    let days = select(&days, &plan.rebuild);
    let dates = select(&dates, &plan.rebuild);
    let provider_keys = select_strings(&provider_keys, &plan.rebuild);
    // Events name their provider as free text; only a known NPI resolves.
    let v = providers.resolve(&provider_keys, &dates);
    count_unknown(report, "fact_medical_events.patient_sk", &p);
    count_unknown(report, "fact_medical_events.provider_sk", &v);
    let n = rows.num_rows();
    let t = FACT_MEDICAL_EVENTS;
    let ids = string_col(S, &rows, "event_id")?;
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, true),
        Field::new("patient_sk", DataType::Int64, false),
        Field::new("provider_id", DataType::Utf8, true),
        Field::new("provider_sk", DataType::Int64, false),
        Field::new("medical_provider", DataType::Utf8, true),
        Field::new("event_date_key", DataType::Int32, false),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("event_month", DataType::Int32, false),
    ]));
    let months: Vec<i32> = days.iter().map(|d| month_of(*d)).collect();
    let fact = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ids.clone()),
            Arc::new(patient_keys.clone()),
            Arc::new(Int64Array::from(p.iter().map(|r| r.sk()).collect::<Vec<_>>())),
            Arc::new(provider_keys.clone()),
            Arc::new(Int64Array::from(v.iter().map(|r| r.sk()).collect::<Vec<_>>())),
            Arc::new(string_col(S, &rows, "medical_provider")?),
            Arc::new(Int32Array::from(days.iter().map(|d| date::date_key_of_days(*d)).collect::<Vec<_>>())),
            Arc::new(string_col(S, &rows, "event_type")?),
            Arc::new(Int32Array::from(months.clone())),
        ],
    )
    .map_err(|e| Error::arrow(t, e))?;
    let rebuilt: Rebuilt = (0..n).filter(|&i| ids.is_valid(i)).map(|i| (ids.value(i).to_string(), months[i])).collect();
    let table = FactTable { name: t, id: "event_id", month: "event_month" };
    let commit = Commit::new(run, "facts");
    let prepared = write::prepare(warehouse, &table, fact, &rebuilt, plan.full).await?;
    let written =
        write_with_watermarks(warehouse, commit, S, &plan, &versions(&[&*patients, providers]), prepared).await?;
    report.tables.push(written);
    Ok(())
}

/// Writes `batch` over `table` unless its content equals what the
/// table's last commit recorded (a BLAKE3 digest in the commit info).
async fn write_if_changed(
    warehouse: &Warehouse,
    run: &RunContext,
    table: &str,
    batch: RecordBatch,
    report: &mut FactsReport,
) -> Result<()> {
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&batch).map_err(|e| Error::arrow(table, e))?;
        w.finish().map_err(|e| Error::arrow(table, e))?;
    }
    let digest = blake3::hash(&buf).to_hex().to_string();
    let name = TableName::new(table)?;
    let last = warehouse.commit_metadata(&name, 1).await?;
    let rows = batch.num_rows() as u64;
    let version = if last.first().and_then(|m| m.get("gold.content_digest")).and_then(|v| v.as_str()) == Some(&digest) {
        None
    } else {
        let commit = Commit::new(run, "facts").with_metadata("content_digest", serde_json::json!(digest));
        Some(warehouse.overwrite(&name, vec![batch], &commit).await?)
    };
    report.tables.push(TableReport {
        table: table.to_string(),
        version,
        rebuilt: if version.is_some() { rows } else { 0 },
        full_refresh: version.is_some(),
        ..TableReport::default()
    });
    Ok(())
}

/// `dim_date` over every year a fact falls in (and the run's), and
/// `dim_diagnosis` over the official list, the reference and every code a
/// claim carries.
async fn conformed_dims(
    warehouse: &Warehouse,
    run: &RunContext,
    years: &BTreeSet<i32>,
    report: &mut FactsReport,
) -> Result<()> {
    let (first, last) = (years.first().copied().unwrap_or(2000), years.last().copied().unwrap_or(2000));
    write_if_changed(warehouse, run, DIM_DATE, date::dim_date(first, last)?, report).await?;
    let mut reference = Vec::new();
    if let Some(r) = silver(warehouse, "silver_diagnosis_ref", &["code", "code_dotted", "description"]).await?
        && r.num_columns() > 0
    {
        let t = "silver_diagnosis_ref";
        let (code, dotted, desc) =
            (string_col(t, &r, "code")?, string_col(t, &r, "code_dotted")?, string_col(t, &r, "description")?);
        for i in 0..r.num_rows() {
            if code.is_valid(i) {
                let opt = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
                reference.push((code.value(i).to_string(), opt(&dotted), opt(&desc)));
            }
        }
    }
    let mut other = BTreeSet::new();
    if let Some(r) = silver(warehouse, "silver_claim_diagnoses", &["code"]).await?
        && r.num_columns() > 0
    {
        let codes = string_col("silver_claim_diagnoses", &r, "code")?;
        other.extend(codes.iter().flatten().map(str::to_string));
    }
    write_if_changed(warehouse, run, DIM_DIAGNOSIS, diagnosis::dim_diagnosis(&reference, other)?, report).await
}
