//! Rewriting only the files of a table that hold some keys: a night's
//! update of a large table costs the files its keys live in, not the
//! whole table.
//!
//! [`Warehouse::files_with_keys`] reads one column, the key, of every
//! active file and names the files holding any of the wanted keys;
//! [`Touched::rows`] reads those files whole; [`Touched::replace`] writes
//! their new rows and, in one Delta commit on the snapshot the files were
//! found in, removes the old files and adds the new ones. A concurrent
//! commit that removes or rewrites files makes it fail rather than lose
//! that change (a concurrent blind append would not: gold has one writer
//! a run).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::DeltaWriter as _;

use crate::warehouse::{check_plain_strings, collect_plain, delta_err};
use crate::{Commit, Error, Result, TableName, Warehouse};

/// The column that carries each row's file while the keys are read.
const FILE_COLUMN: &str = "__gold_file";

/// The files of a table that hold some keys, found on one snapshot.
pub struct Touched {
    name: TableName,
    table: DeltaTable,
    /// The files as the scan names them (URLs).
    urls: Vec<String>,
    /// Their rows, by the table's statistics.
    rows: u64,
    /// Every active file's rows, by the table's statistics.
    table_rows: u64,
}

/// The last segment of a file's path or URL: its name, unique in a table.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Warehouse {
    /// The files of table `name` holding a row whose column `key` (as
    /// text) is one of `keys`; `None` when the table does not exist. Reads
    /// only the key column.
    pub async fn files_with_keys(
        &self,
        name: &TableName,
        key: &str,
        keys: &HashSet<String>,
    ) -> Result<Option<Touched>> {
        let Some(table) = self.load(name).await? else { return Ok(None) };
        let query_err = |source: DataFusionError| Error::Query { table: name.to_string(), source: Box::new(source) };
        let arrow_err = |source| Error::Arrow { table: name.to_string(), source: Box::new(source) };
        let mut urls: HashSet<String> = HashSet::new();
        if !keys.is_empty() {
            let ctx = Self::session();
            let provider = provider(&table, &ctx, name, None).await?;
            let frame = ctx.read_table(provider).map_err(&query_err)?;
            let frame = frame.select_columns(&[key, FILE_COLUMN]).map_err(&query_err)?;
            for b in frame.collect().await.map_err(query_err)? {
                let k = cast(b.column(0), &DataType::Utf8).map_err(arrow_err)?;
                let f = cast(b.column(1), &DataType::Utf8).map_err(arrow_err)?;
                let (k, f) = (k.as_string::<i32>(), f.as_string::<i32>());
                for i in 0..b.num_rows() {
                    if k.is_valid(i) && keys.contains(k.value(i)) && !urls.contains(f.value(i)) {
                        urls.insert(f.value(i).to_string());
                    }
                }
            }
        }
        let names: HashSet<&str> = urls.iter().map(|u| file_name(u)).collect();
        let snapshot = table.snapshot().map_err(delta_err(name))?;
        let (mut rows, mut table_rows) = (0u64, 0u64);
        for file in snapshot.log_data().iter() {
            let n = file.num_records().map_or(0, |n| n as u64);
            table_rows += n;
            if names.contains(file_name(&file.path())) {
                rows += n;
            }
        }
        let urls = urls.into_iter().collect();
        Ok(Some(Touched { name: name.clone(), table, urls, rows, table_rows }))
    }
}

/// The table's scan, with each row's file in [`FILE_COLUMN`], over only
/// `files` when given.
async fn provider(
    table: &DeltaTable,
    ctx: &SessionContext,
    name: &TableName,
    files: Option<&[String]>,
) -> Result<Arc<dyn deltalake::datafusion::catalog::TableProvider>> {
    table.update_datafusion_session(&ctx.state()).map_err(delta_err(name))?;
    let mut builder = table.table_provider().with_session(Arc::new(ctx.state())).with_file_column(FILE_COLUMN);
    if let Some(files) = files {
        builder = builder.with_file_paths(files.to_vec());
    }
    builder.await.map_err(|source| Error::Query { table: name.to_string(), source: Box::new(source) })
}

impl Touched {
    /// How many files hold the keys.
    pub fn files(&self) -> usize {
        self.urls.len()
    }

    /// The rows of the touched files, by the table's statistics.
    pub fn touched_rows(&self) -> u64 {
        self.rows
    }

    /// Every row of the table, by its statistics.
    pub fn table_rows(&self) -> u64 {
        self.table_rows
    }

    /// Every row of the touched files, every column but the file.
    pub async fn rows(&self) -> Result<Vec<RecordBatch>> {
        if self.urls.is_empty() {
            return Ok(Vec::new());
        }
        let name = &self.name;
        let query_err = |source: DataFusionError| Error::Query { table: name.to_string(), source: Box::new(source) };
        let ctx = Warehouse::session();
        let provider = provider(&self.table, &ctx, name, Some(&self.urls)).await?;
        let frame = ctx.read_table(provider).map_err(&query_err)?;
        let frame = frame.drop_columns(&[FILE_COLUMN]).map_err(query_err)?;
        collect_plain(name, frame).await
    }

    /// Replaces the touched files by `batches` in one commit, with
    /// `commit`'s run, metadata and transactions. The rows must fit the
    /// table's schema. Returns the new version; on an error nothing is
    /// committed and the files written are deleted.
    pub async fn replace(self, warehouse: &Warehouse, batches: Vec<RecordBatch>, commit: &Commit<'_>) -> Result<i64> {
        let name = &self.name;
        check_plain_strings(name, &batches)?;
        let snapshot = self.table.snapshot().map_err(delta_err(name))?;
        if let Some(first) = batches.first() {
            let kernel: StructType = first
                .schema()
                .as_ref()
                .try_into_kernel()
                .map_err(|e| Error::Schema { table: name.to_string(), source: Box::new(e) })?;
            crate::stream::check_fits(name, &kernel, snapshot.schema().as_ref())?;
        }
        let partitions = snapshot.metadata().partition_columns().to_vec();
        let adds = write_files(warehouse, name, &partitions, batches).await?;
        let names: HashSet<&str> = self.urls.iter().map(|u| file_name(u)).collect();
        let by_name: HashMap<String, _> = snapshot
            .log_data()
            .iter()
            .filter(|f| names.contains(file_name(&f.path())))
            .map(|f| (file_name(&f.path()).to_string(), f.remove_action(true)))
            .collect();
        let mut actions: Vec<Action> = Vec::new();
        for n in &names {
            match by_name.get(*n) {
                Some(remove) => actions.push(Action::Remove(remove.clone())),
                None => {
                    crate::stream::delete_files(warehouse, name, &adds).await;
                    return Err(Error::Unsupported {
                        table: name.to_string(),
                        reason: format!("file {n} was read but is not in the snapshot"),
                    });
                }
            }
        }
        actions.extend(adds.iter().cloned().map(Action::Add));
        // No predicate: a concurrent commit that removes or rewrites files
        // conflicts (a blind append does not: gold has one writer a run).
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: None,
            matched_predicates: Vec::new(),
            not_matched_predicates: Vec::new(),
            not_matched_by_source_predicates: Vec::new(),
        };
        let done = CommitBuilder::from(commit.properties())
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await;
        match done {
            Ok(done) => i64::try_from(done.version())
                .map_err(|_| Error::Unsupported { table: name.to_string(), reason: "version out of range".into() }),
            Err(e) => match committed_with(warehouse, name, &adds).await {
                // The commit is in the log; what failed came after it
                // (such as the checkpoint): its files must stay.
                Some(version) => {
                    tracing::warn!(table = %name, error = %e, "committed, but a step after the commit failed");
                    Ok(version)
                }
                None => {
                    crate::stream::delete_files(warehouse, name, &adds).await;
                    Err(delta_err(name)(e))
                }
            },
        }
    }
}

/// The table's version when one of `adds` is among its active files (the
/// commit that added them went in), else `None`.
async fn committed_with(warehouse: &Warehouse, name: &TableName, adds: &[Add]) -> Option<i64> {
    let first = adds.first()?;
    let table = warehouse.load(name).await.ok()??;
    let snapshot = table.snapshot().ok()?;
    let found = snapshot.log_data().iter().any(|f| f.path() == first.path.as_str());
    found.then(|| table.version().and_then(|v| i64::try_from(v).ok())).flatten()
}

/// Writes `batches` as new data files of table `name` (partitioned by
/// `partitions`), not yet committed: each batch in files of its own, of at
/// most [`crate::COMPACT_TARGET`] bytes. Kept rows and changed rows given
/// as separate batches so stay apart: a file of settled rows is not
/// touched again by the next night's changes.
async fn write_files(
    warehouse: &Warehouse,
    name: &TableName,
    partitions: &[String],
    batches: Vec<RecordBatch>,
) -> Result<Vec<Add>> {
    let Some(first) = batches.first() else { return Ok(Vec::new()) };
    let mut writer = crate::stream::file_writer(warehouse, name, first.schema(), partitions, crate::COMPACT_TARGET)?;
    let mut adds = Vec::new();
    for b in batches.into_iter().filter(|b| b.num_rows() > 0) {
        let written = match writer.write(b).await {
            Ok(()) => writer.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(more) => adds.extend(more),
            Err(e) => {
                crate::stream::delete_files(warehouse, name, &adds).await;
                return Err(delta_err(name)(e));
            }
        }
    }
    Ok(adds)
}
