//! The aggregates stage: regulatory aggregates defined once, as SQL models,
//! and materialised as Delta tables by DataFusion.
//!
//! Each model is one file `models/gold/<table>.sql`: a header comment that
//! documents the grain, the definitions and the columns, then one
//! read-only query over warehouse tables. The file name is the table
//! name, which starts with `gold_`. A model may read another model's table;
//! [`AggregateCatalog`] orders them so that it runs after it. `${name}`
//! stands for a value the engine passes in ([`Params`]), such as the fraud
//! referral threshold.
//!
//! [`build_aggregates`] runs every model over the latest version of each
//! table it names and overwrites its table in one commit. The commit
//! records the digest of the query and the version of every input, so a
//! model whose query and inputs are unchanged writes nothing, and a rebuild
//! from the same table versions gives the same rows.
//!
//! ```no_run
//! # async fn run(warehouse: &storage::Warehouse, run: &storage::RunContext) -> aggregates::Result<()> {
//! let catalog = aggregates::AggregateCatalog::default_catalog()?;
//! let params = aggregates::Params::default().with("referral_threshold", 0.97);
//! for r in aggregates::build_aggregates(warehouse, run, &catalog, &params).await? {
//!     println!("{}: {:?} rows at version {:?}", r.table, r.rows, r.version);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::json;
use storage::{Commit, RunContext, TableName, Warehouse};

/// The `${name}` variables a model may use, and what each stands for.
pub const VARIABLES: [(&str, &str); 1] =
    [("referral_threshold", "the fraud score at or above which a claim is referred (scoring.toml)")];

/// The commit operation of an aggregate's table.
pub const OPERATION: &str = "aggregate";

/// Errors of the aggregates stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file is malformed: no header, not one read-only query, an
    /// unknown variable, a bad name, a dependency cycle.
    #[error("aggregate model {origin}: {reason}")]
    Model {
        /// The model's file.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A model's file name is not a valid table name.
    #[error("aggregate model {origin}: {source}")]
    ModelTable {
        /// The model's file.
        origin: String,
        /// The name's error.
        #[source]
        source: storage::Error,
    },
    /// A model's text is not one read-only query.
    #[error("aggregate model {origin}: {source}")]
    ModelQuery {
        /// The model's file.
        origin: String,
        /// Why the query is refused.
        #[source]
        source: Box<query::Error>,
    },
    /// A model's query failed when it ran.
    #[error("aggregate {table}: query failed: {source}")]
    Query {
        /// The aggregate's table.
        table: String,
        /// DataFusion's error.
        #[source]
        source: Box<DataFusionError>,
    },
    /// Arrow failed on a model's result.
    #[error("aggregate {table}: arrow: {source}")]
    Arrow {
        /// The aggregate's table.
        table: String,
        /// Arrow's error.
        #[source]
        source: Box<deltalake::arrow::error::ArrowError>,
    },
    /// Reading the models folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The folder or file.
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
    /// Whether the user can fix this (a model, a folder), as opposed to a
    /// storage fault or a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. }
            | Self::ModelTable { .. }
            | Self::ModelQuery { .. }
            | Self::Io { .. }
            | Self::Query { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Arrow { .. } => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Values for the models' `${name}` variables.
#[derive(Clone, Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// These params with `${name}` standing for `value` (as SQL text).
    pub fn with(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.values.insert(name.to_string(), value.to_string());
        self
    }
}

/// One aggregate: a table and the query that fills it.
#[derive(Clone, Debug)]
pub struct AggregateModel {
    /// The table (the file name without `.sql`).
    pub table: String,
    /// Where the model came from (its file).
    pub origin: String,
    /// The header's first line: what the aggregate is.
    pub description: String,
    /// The query, with its `${name}` variables.
    pub sql: String,
    /// The tables the query reads.
    pub inputs: Vec<String>,
    /// The variables it uses.
    pub variables: Vec<String>,
}

impl AggregateModel {
    /// Parses the model `text` of file `file` (`<table>.sql`).
    pub fn parse(file: &str, text: &str, origin: &str) -> Result<Self> {
        let err = |reason: String| Error::Model { origin: origin.to_string(), reason };
        let table = file
            .strip_suffix(".sql")
            .ok_or_else(|| err(format!("{file}: a model file's name is <table>.sql")))?
            .to_string();
        TableName::new(&table).map_err(|source| Error::ModelTable { origin: origin.to_string(), source })?;
        if !table.starts_with("gold_") {
            return Err(err(format!("table {table:?}: aggregate tables are named gold_<name>")));
        }
        let header: Vec<&str> = text
            .lines()
            .map(str::trim)
            .take_while(|l| l.starts_with("--"))
            .map(|l| l.trim_start_matches('-').trim())
            .collect();
        let description = header.iter().find(|l| !l.is_empty()).map(|l| l.to_string()).ok_or_else(|| {
            err("the file starts with no header comment; document the grain and columns in `--` lines first".into())
        })?;
        let variables = variables_of(text).map_err(|(line, reason)| err(format!("line {line}: {reason}")))?;
        // The query must parse as one read-only query whatever the values.
        let probe = variables.iter().fold(text.to_string(), |s, v| s.replace(&format!("${{{v}}}"), "NULL"));
        let inputs = query::read_only_tables(&probe)
            .map_err(|e| Error::ModelQuery { origin: origin.to_string(), source: Box::new(e) })?;
        if inputs.contains(&table) {
            return Err(err(format!("the query reads its own table {table}")));
        }
        Ok(Self { table, origin: origin.to_string(), description, sql: text.to_string(), inputs, variables })
    }

    /// The query with every variable replaced by its value.
    pub fn render(&self, params: &Params) -> Result<String> {
        let mut sql = self.sql.clone();
        for v in &self.variables {
            let value = params.values.get(v).ok_or_else(|| Error::Model {
                origin: self.origin.clone(),
                reason: format!("no value was given for ${{{v}}}"),
            })?;
            sql = sql.replace(&format!("${{{v}}}"), value);
        }
        Ok(sql)
    }
}

/// The `${name}` variables in `text`, each a known one, or the line and
/// reason of the first that is not.
fn variables_of(text: &str) -> std::result::Result<Vec<String>, (usize, String)> {
    let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
    let mut found = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            let after = &rest[at + 2..];
            let end = after.find('}').ok_or((i + 1, "a `${` without its closing `}`".to_string()))?;
            let name = &after[..end];
            if !known.contains(&name) {
                return Err((i + 1, format!("unknown variable ${{{name}}}; the variables are {}", known.join(", "))));
            }
            found.insert(name.to_string());
            rest = &after[end + 1..];
        }
    }
    Ok(found.into_iter().collect())
}

/// Every aggregate, in an order in which each model runs after the models
/// whose tables it reads.
#[derive(Clone, Debug)]
pub struct AggregateCatalog {
    models: Vec<AggregateModel>,
}

impl AggregateCatalog {
    /// The models built into gold.
    pub fn default_catalog() -> Result<Self> {
        let models = reference::models::AGGREGATES
            .iter()
            .map(|(file, text)| AggregateModel::parse(file, text, &format!("(built in) models/gold/{file}")))
            .collect::<Result<Vec<_>>>()?;
        Self::new(models)
    }

    /// Every `*.sql` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io { path: dir.display().to_string(), source };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
        files.sort();
        let mut models = Vec::new();
        for path in files {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: origin.clone(), source })?;
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            models.push(AggregateModel::parse(file, &text, &origin)?);
        }
        Self::new(models)
    }

    /// The catalog of `models`, ordered by their dependencies.
    pub fn new(mut models: Vec<AggregateModel>) -> Result<Self> {
        models.sort_by(|a, b| a.table.cmp(&b.table));
        if let Some(w) = models.windows(2).find(|w| w[0].table == w[1].table) {
            return Err(Error::Model {
                origin: w[1].origin.clone(),
                reason: format!("table {} is defined twice (also by {})", w[1].table, w[0].origin),
            });
        }
        let names: BTreeSet<String> = models.iter().map(|m| m.table.clone()).collect();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut ordered = Vec::with_capacity(models.len());
        while !models.is_empty() {
            let ready = |m: &AggregateModel| m.inputs.iter().all(|t| !names.contains(t) || done.contains(t));
            let (now, later): (Vec<_>, Vec<_>) = models.into_iter().partition(ready);
            if now.is_empty() {
                let stuck: Vec<&str> = later.iter().map(|m| m.table.as_str()).collect();
                return Err(Error::Model {
                    origin: later[0].origin.clone(),
                    reason: format!("the models {} read each other's tables in a cycle", stuck.join(", ")),
                });
            }
            done.extend(now.iter().map(|m| m.table.clone()));
            ordered.extend(now);
            models = later;
        }
        Ok(Self { models: ordered })
    }

    /// The models, each after the models it reads.
    pub fn models(&self) -> &[AggregateModel] {
        &self.models
    }
}

/// What the stage did with one aggregate.
#[derive(Clone, Debug, Serialize)]
pub struct AggregateReport {
    /// The aggregate's table.
    pub table: String,
    /// The version written, or `None` when nothing was written.
    pub version: Option<i64>,
    /// Rows written.
    pub rows: u64,
    /// The query and its inputs are those of the table's last commit.
    pub up_to_date: bool,
    /// Input tables that do not exist yet; the model did not run.
    pub missing_inputs: Vec<String>,
    /// The input tables and the versions read.
    pub inputs: BTreeMap<String, i64>,
    /// How long the model took, in seconds.
    pub seconds: f64,
}

/// Runs every model of `catalog` whose query or inputs changed since its
/// table's last commit, and overwrites its table (one commit per model).
/// A model whose inputs do not all exist yet is skipped and reported.
pub async fn build_aggregates(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &AggregateCatalog,
    params: &Params,
) -> Result<Vec<AggregateReport>> {
    let mut reports = Vec::new();
    for model in catalog.models() {
        reports.push(build_aggregate(warehouse, run, model, params).await?);
    }
    Ok(reports)
}

/// Runs `model` and overwrites its table, unless an input is missing or
/// the query and the input versions are those of the table's last commit.
async fn build_aggregate(
    warehouse: &Warehouse,
    run: &RunContext,
    model: &AggregateModel,
    params: &Params,
) -> Result<AggregateReport> {
    let started = std::time::Instant::now();
    let sql = model.render(params)?;
    let mut report = AggregateReport {
        table: model.table.clone(),
        version: None,
        rows: 0,
        up_to_date: false,
        missing_inputs: Vec::new(),
        inputs: BTreeMap::new(),
        seconds: 0.0,
    };
    // Each input is registered at its latest version, which is the
    // version the fingerprint records: one log read per table.
    let ctx = Warehouse::serial_session();
    for t in &model.inputs {
        match warehouse.register(&ctx, &TableName::new(t)?, None).await? {
            Some(v) => {
                report.inputs.insert(t.clone(), v);
            }
            None => report.missing_inputs.push(t.clone()),
        }
    }
    if !report.missing_inputs.is_empty() {
        tracing::warn!("aggregate {} not built: {} not built yet", model.table, report.missing_inputs.join(", "));
        return Ok(report);
    }
    let target = TableName::new(&model.table)?;
    let fingerprint = json!({"sql": blake3::hash(sql.as_bytes()).to_hex().to_string(), "tables": report.inputs});
    let last = warehouse.commit_metadata(&target, 1).await?;
    if last.first().and_then(|m| m.get("gold.inputs")) == Some(&fingerprint) {
        report.up_to_date = true;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let batches = run_query(&ctx, &model.table, &sql).await?;
    report.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let commit =
        Commit::new(run, OPERATION).with_metadata("aggregate", json!(model.table)).with_metadata("inputs", fingerprint);
    report.version = Some(warehouse.overwrite(&target, batches, &commit).await?);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The rows of `sql` over the tables registered in `ctx`, as plain types;
/// one empty batch with the result's schema when there are no rows.
async fn run_query(ctx: &SessionContext, table: &str, sql: &str) -> Result<Vec<RecordBatch>> {
    let query_err = |source| Error::Query { table: table.to_string(), source: Box::new(source) };
    let arrow_err = |source| Error::Arrow { table: table.to_string(), source: Box::new(source) };
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, options).await.map_err(query_err)?;
    let schema = Schema::new(
        frame
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), storage::plain_type(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    );
    let mut batches = Vec::new();
    for b in frame.collect().await.map_err(query_err)? {
        if b.num_rows() > 0 {
            batches.push(storage::plain_batch(&b).map_err(arrow_err)?);
        }
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(std::sync::Arc::new(schema)));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn model_error(file: &str, text: &str, expected: &str) {
        let e = AggregateModel::parse(file, text, file).unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} does not contain {expected:?}");
    }

    #[test]
    fn malformed_models_are_refused_with_their_file_and_reason() {
        model_error("gold_x.sql", "SELECT 1", "no header comment");
        model_error("x.sql", "-- x\nSELECT 1", "named gold_<name>");
        model_error("gold_x.txt", "-- x\nSELECT 1", "<table>.sql");
        model_error("gold_x.sql", "-- x\nDROP TABLE fact_claims", "read-only");
        model_error("gold_x.sql", "-- x\nSELECT 1; SELECT 2", "exactly one query");
        model_error("gold_x.sql", "-- x\nSELECT * FROM t WHERE a > ${nope}", "line 2: unknown variable ${nope}");
        model_error("gold_x.sql", "-- x\nSELECT * FROM gold_x", "reads its own table");
    }

    #[test]
    fn models_run_after_the_models_they_read_and_cycles_are_refused() {
        let m = |file: &str, sql: &str| AggregateModel::parse(file, &format!("-- doc\n{sql}"), file).unwrap();
        let catalog = AggregateCatalog::new(vec![
            m("gold_a.sql", "SELECT * FROM gold_b JOIN gold_c ON true"),
            m("gold_b.sql", "SELECT * FROM gold_c"),
            m("gold_c.sql", "SELECT * FROM fact_claims"),
        ])
        .unwrap();
        let order: Vec<&str> = catalog.models().iter().map(|m| m.table.as_str()).collect();
        assert_eq!(order, ["gold_c", "gold_b", "gold_a"]);
        let e = AggregateCatalog::new(vec![
            m("gold_a.sql", "SELECT * FROM gold_b"),
            m("gold_b.sql", "SELECT * FROM gold_a"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn the_built_in_models_parse_and_name_their_inputs() {
        let catalog = AggregateCatalog::default_catalog().unwrap();
        assert_eq!(catalog.models().len(), reference::models::AGGREGATES.len());
        let fwa = catalog.models().iter().find(|m| m.table == "gold_fwa_referrals").unwrap();
        assert_eq!(fwa.variables, ["referral_threshold"]);
        assert_eq!(fwa.inputs, ["fact_claims", "gold_fraud_scores"]);
        let sql = fwa.render(&Params::default().with("referral_threshold", 0.97)).unwrap();
        assert!(sql.contains("s.score >= 0.97"));
        assert!(fwa.render(&Params::default()).unwrap_err().to_string().contains("no value was given"));
        // gold_member_months is read by two models, so it runs before both.
        let at = |t: &str| catalog.models().iter().position(|m| m.table == t).unwrap();
        assert!(at("gold_member_months") < at("gold_loss_ratio"));
        assert!(at("gold_member_months") < at("gold_utilization"));
    }
}
