//! Appending a stream of batches to a table in one commit.
//!
//! [`StreamingAppend`] runs one Parquet writer per lane, each on its own
//! task, so encoding uses every core while the caller reads the next rows,
//! and memory holds only the batches in flight and each writer's open file.
//! Nothing is visible to readers until [`StreamingAppend::commit`] adds
//! every written file in one Delta commit; [`StreamingAppend::abort`]
//! deletes them instead.

use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::warehouse::{check_plain_strings, committed_version, delta_err};
use crate::{Commit, Error, Result, TableName, Warehouse};

/// Size at which a lane's writer starts a new file.
const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// Batches queued per lane before a sender waits.
const QUEUED_BATCHES: usize = 2;

/// One lane's input: batches sent here are written, in the order sent, to
/// that lane's files. Cheap to clone. A lane does not keep its writer
/// open: once the append is committed or aborted, sending fails.
#[derive(Clone)]
pub struct Lane {
    table: TableName,
    tx: mpsc::WeakSender<RecordBatch>,
}

impl Lane {
    fn stopped(&self) -> Error {
        Error::Unsupported {
            table: self.table.to_string(),
            reason: "a file writer stopped before its rows were all sent".into(),
        }
    }

    /// Sends `batch` from async code, waiting while the lane is full.
    pub async fn send(&self, batch: RecordBatch) -> Result<()> {
        check_plain_strings(&self.table, std::slice::from_ref(&batch))?;
        let tx = self.tx.upgrade().ok_or_else(|| self.stopped())?;
        tx.send(batch).await.map_err(|_| self.stopped())
    }

    /// Sends `batch` from a thread outside the async runtime (such as a
    /// reader thread), blocking while the lane is full.
    pub fn blocking_send(&self, batch: RecordBatch) -> Result<()> {
        check_plain_strings(&self.table, std::slice::from_ref(&batch))?;
        let tx = self.tx.upgrade().ok_or_else(|| self.stopped())?;
        tx.blocking_send(batch).map_err(|_| self.stopped())
    }
}

/// What one lane wrote.
struct Written {
    adds: Vec<Add>,
    rows: u64,
}

/// An append being streamed into a table: see the module docs.
pub struct StreamingAppend {
    warehouse: Warehouse,
    name: TableName,
    schema: SchemaRef,
    partition_by: Vec<String>,
    lanes: Vec<Lane>,
    /// The only strong senders: dropping them ends the writers' input.
    senders: Vec<mpsc::Sender<RecordBatch>>,
    tasks: Vec<JoinHandle<Result<Written>>>,
}

impl Warehouse {
    /// Starts an append of rows of `schema` to table `name` (created by the
    /// commit if it does not exist, partitioned by `partition_by`), with
    /// `lanes` writers (at least one). Must be called inside the Tokio
    /// runtime.
    pub fn streaming_append(
        &self,
        name: &TableName,
        schema: SchemaRef,
        partition_by: &[&str],
        lanes: usize,
    ) -> Result<StreamingAppend> {
        check_plain_strings(name, &[RecordBatch::new_empty(schema.clone())])?;
        let partition_by: Vec<String> = partition_by.iter().map(|c| c.to_string()).collect();
        let (mut lanes_out, mut senders, mut tasks) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..lanes.max(1) {
            let mut writer = file_writer(self, name, schema.clone(), &partition_by, TARGET_FILE_BYTES)?;
            let (tx, mut rx) = mpsc::channel::<RecordBatch>(QUEUED_BATCHES);
            let table = name.clone();
            tasks.push(tokio::spawn(async move {
                let mut rows = 0u64;
                while let Some(batch) = rx.recv().await {
                    rows += batch.num_rows() as u64;
                    writer.write(batch).await.map_err(delta_err(&table))?;
                }
                let adds = writer.flush().await.map_err(delta_err(&table))?;
                Ok(Written { adds, rows })
            }));
            lanes_out.push(Lane { table: name.clone(), tx: tx.downgrade() });
            senders.push(tx);
        }
        Ok(StreamingAppend {
            warehouse: self.clone(),
            name: name.clone(),
            schema,
            partition_by,
            lanes: lanes_out,
            senders,
            tasks,
        })
    }
}

impl StreamingAppend {
    /// The lanes, to send batches to (from one reader each, or in turn).
    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    /// Ends the lanes' input and waits for every lane to write what it was
    /// sent. The first lane error wins; the files of the lanes that
    /// finished are returned with it, so that they can be deleted.
    async fn drain(&mut self) -> (Vec<Add>, u64, Option<Error>) {
        self.lanes.clear();
        self.senders.clear();
        let (mut adds, mut rows, mut error) = (Vec::new(), 0, None);
        for task in std::mem::take(&mut self.tasks) {
            match task.await {
                Ok(Ok(w)) => {
                    adds.extend(w.adds);
                    rows += w.rows;
                }
                Ok(Err(e)) => error = error.or(Some(e)),
                Err(e) => error = error.or(Some(Error::Writer { table: self.name.to_string(), source: Box::new(e) })),
            }
        }
        (adds, rows, error)
    }

    /// Gives up the append: waits for the lanes, deletes every file they
    /// wrote, and returns the first lane error, if any (the cause to
    /// report when a send failed). Nothing was committed.
    pub async fn abort(mut self) -> Option<Error> {
        let (adds, _, error) = self.drain().await;
        delete_files(&self.warehouse, &self.name, &adds).await;
        error
    }

    /// Waits for the lanes and commits every file they wrote as one append,
    /// with `commit`'s run, metadata and transactions; the table is created
    /// first if needed. The lanes must have written exactly `expected_rows`
    /// rows. Returns the new version and the rows committed, or `None` when
    /// no row was sent (nothing is committed then). On an error the files
    /// are deleted and nothing is committed.
    pub async fn commit(mut self, commit: &Commit<'_>, expected_rows: u64) -> Result<Option<(i64, u64)>> {
        let (adds, rows, error) = self.drain().await;
        let result = match error {
            Some(e) => Err(e),
            None if rows != expected_rows => Err(Error::Unsupported {
                table: self.name.to_string(),
                reason: format!(
                    "{rows} rows reached the file writers but {expected_rows} were read; nothing was committed"
                ),
            }),
            None if rows == 0 => Ok(None),
            None => add_files(&self.warehouse, &self.name, &self.schema, &self.partition_by, &adds, commit)
                .await
                .map(|version| Some((version, rows))),
        };
        if !matches!(result, Ok(Some(_))) {
            delete_files(&self.warehouse, &self.name, &adds).await;
        }
        result
    }
}

/// How gold writes Parquet: Snappy, row groups of 256Ki rows.
pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build()
}

/// A writer of new data files of table `name` (not committed), in files
/// of about `target` bytes, with [`writer_properties`].
pub(crate) fn file_writer(
    warehouse: &Warehouse,
    name: &TableName,
    schema: deltalake::arrow::datatypes::SchemaRef,
    partition_by: &[String],
    target: u64,
) -> Result<RecordBatchWriter> {
    let url = warehouse.table_url(name)?;
    Ok(RecordBatchWriter::try_new(
        url.as_str(),
        schema,
        (!partition_by.is_empty()).then(|| partition_by.to_vec()),
        Some(warehouse.storage_options().clone()),
    )
    .map_err(delta_err(name))?
    .with_writer_properties(writer_properties())
    .with_target_file_size(target))
}

/// Commits `adds` to table `name`, creating it when it does not exist.
async fn add_files(
    warehouse: &Warehouse,
    name: &TableName,
    schema: &SchemaRef,
    partition_by: &[String],
    adds: &[Add],
    commit: &Commit<'_>,
) -> Result<i64> {
    let kernel: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::Schema { table: name.to_string(), source: Box::new(e) })?;
    let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
    match warehouse.load(name).await? {
        Some(table) => {
            let snapshot = table.snapshot().map_err(delta_err(name))?;
            check_fits(name, &kernel, snapshot.schema().as_ref())?;
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: (!partition_by.is_empty()).then(|| partition_by.to_vec()),
                predicate: None,
            };
            let done = CommitBuilder::from(commit.properties())
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map_err(delta_err(name))?;
            i64::try_from(done.version())
                .map_err(|_| Error::Unsupported { table: name.to_string(), reason: "version out of range".into() })
        }
        None => {
            let url = warehouse.table_url(name)?;
            if let Ok(path) = url.to_file_path() {
                std::fs::create_dir_all(&path)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            }
            let table = deltalake::operations::create::CreateBuilder::new()
                .with_location(url.as_str())
                .with_storage_options(warehouse.storage_options().clone())
                .with_columns(kernel.fields().cloned())
                .with_partition_columns(partition_by.to_vec())
                .with_configuration(crate::warehouse::new_table_properties())
                .with_actions(actions)
                .with_commit_properties(commit.properties())
                .await
                .map_err(delta_err(name))?;
            committed_version(name, &table)
        }
    }
}

/// Refuses rows the table cannot take without a schema change: every
/// column written must be a column of the table with the same type, and a
/// table column not written must be nullable (it reads as NULL).
pub(crate) fn check_fits(name: &TableName, written: &StructType, table: &StructType) -> Result<()> {
    let refuse = |reason: String| Err(Error::Unsupported { table: name.to_string(), reason });
    for f in written.fields() {
        match table.field(f.name()) {
            None => {
                return refuse(format!(
                    "the table has no column {}; new columns need drift = \"add-column\"",
                    f.name()
                ));
            }
            Some(t) if t.data_type() != f.data_type() => {
                return refuse(format!(
                    "column {} is {} in the table but {} in the new rows",
                    f.name(),
                    t.data_type(),
                    f.data_type()
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = table.fields().find(|t| !t.is_nullable() && written.field(t.name()).is_none()) {
        return refuse(format!("the new rows lack the table's non-nullable column {}", missing.name()));
    }
    Ok(())
}

/// Deletes files written but not committed; best effort (a file left
/// behind is unreferenced, invisible to readers, and vacuum removes it).
pub(crate) async fn delete_files(warehouse: &Warehouse, name: &TableName, adds: &[Add]) {
    if adds.is_empty() {
        return;
    }
    let Ok(url) = warehouse.table_url(name) else { return };
    let Ok(store) = deltalake::logstore::store_for(&url, warehouse.storage_options().clone()) else { return };
    let store: Arc<dyn deltalake::ObjectStore> = store;
    for add in adds {
        let path = deltalake::Path::from(add.path.as_str());
        if let Err(e) = store.delete(&path).await {
            tracing::warn!(table = %name, file = %add.path, error = %e, "could not delete an uncommitted file");
        }
    }
}
