//! Reading an SCD2 table's files and committing a merge.
//!
//! - Files are read with the Parquet reader, several at once on their own
//!   tasks, each as one batch (a file is small: writers roll over at 16 MB,
//!   so the size bounds a rewrite's memory). A few rows picked out of many
//!   are read with a row selection that skips the others.
//! - A file's deletion vector is read through the Delta kernel when the file
//!   list is built ([`data_files`]), and every read leaves out the rows it
//!   hides: the engine numbers a file's rows among those it keeps, and this
//!   module maps them to positions in the file. [`delete_rows`] writes the
//!   new vectors of one merge into one file with the kernel's writer, and
//!   marks the files' statistics `tightBounds: false`.
//! - [`ParallelWriter`] encodes on several tasks at once, each batch cut
//!   into slices handed to the writers in turn, each run of rows going
//!   straight to its `is_current` partition as a zero-copy slice. The
//!   hashes and the surrogate key are written without a dictionary or
//!   compression (random bytes), the hashes without page statistics, and
//!   the business key and the columns whose values mostly differ in the
//!   source's first rows without a dictionary ([`plain_columns`]).
//! - [`commit`] writes the removes and adds as one Delta version with the
//!   batch's application transaction, evolving the schema in the same
//!   commit when the batch brings new columns.

use std::collections::HashMap;
use std::sync::Arc;

use delta_kernel::actions::deletion_vector::DeletionVectorDescriptor as KernelDv;
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::arrow::record_batch::{RecordBatch, RecordBatchReader as _};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, DeletionVectorDescriptor, Remove, StorageType, StructType, Transaction};
use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection, RowSelectionPolicy};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::file::reader::ChunkReader;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, ObjectStore, Path};

use crate::{Error, Result, Target, columns};

/// One data file of the table.
#[derive(Clone, Debug)]
pub(crate) struct DataFile {
    pub(crate) path: Path,
    pub(crate) current: bool,
    pub(crate) remove: Remove,
    /// The file's add action, to add it again with a new deletion vector.
    add: Add,
    /// The rows its deletion vector deletes (ascending positions in the
    /// file); empty without one. Every read leaves them out, so the rows
    /// of a file are numbered among those it keeps.
    pub(crate) deleted: Arc<[u32]>,
}

pub(crate) fn delta_err(target: &Target) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |source| Error::Delta { table: target.url.to_string(), source: Box::new(source) }
}

/// The table at `target`, or `None` if there is none yet.
pub(crate) async fn open(target: &Target) -> Result<Option<DeltaTable>> {
    if let Ok(path) = target.url.to_file_path()
        && !path.exists()
    {
        return Ok(None);
    }
    let mut table = DeltaTableBuilder::from_url(target.url.clone())
        .and_then(|b| b.with_storage_options(target.storage_options.clone()).build())
        .map_err(delta_err(target))?;
    if !table.verify_deltatable_existence().await.map_err(delta_err(target))? {
        return Ok(None);
    }
    table.load().await.map_err(delta_err(target))?;
    Ok(Some(table))
}

/// The table's data files, current partition first, with the rows their
/// deletion vectors delete.
pub(crate) async fn data_files(table: &DeltaTable, target: &Target) -> Result<Vec<DataFile>> {
    let snapshot = table.snapshot().map_err(delta_err(target))?;
    let mut files = Vec::new();
    let mut vectors = Vec::new();
    for f in snapshot.log_data().iter() {
        let current = f.partition_values_map().get(columns::IS_CURRENT).cloned().flatten().as_deref() == Some("true");
        if let Some(dv) = f.deletion_vector_descriptor() {
            vectors.push((files.len(), f.path().to_string(), dv));
        }
        // The whole action (stats, tags, row tracking), which the file
        // view gives only this way.
        #[allow(deprecated)]
        let add = f.add_action();
        let (path, remove) = (f.object_store_path(), f.remove_action(true));
        files.push(DataFile { path, current, remove, add, deleted: Arc::from([]) });
    }
    if !vectors.is_empty() {
        let engine = table.log_store().engine(None);
        let mut root = table.log_store().root_url().clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        // The kernel reads them through its blocking storage interface.
        let read = move || -> Result<Vec<(usize, Vec<u32>)>> {
            let mut out = Vec::with_capacity(vectors.len());
            for (i, path, dv) in vectors {
                let context = format!("reading the deletion vector of {path}");
                let dv = KernelDv::try_from(dv).map_err(|e| Error::kernel(&context, e))?;
                let bitmap = dv.read(engine.storage_handler(), &root).map_err(|e| Error::kernel(&context, e))?;
                let rows = bitmap.iter().map(|r| u32::try_from(r).map_err(|_| r)).collect::<Result<Vec<u32>, u64>>();
                let rows =
                    rows.map_err(|r| Error::internal(&context, format!("row {r} is past the rows a file can hold")))?;
                out.push((i, rows));
            }
            Ok(out)
        };
        let read =
            tokio::task::spawn_blocking(read).await.map_err(|e| Error::task("reading deletion vectors", e))??;
        for (i, rows) in read {
            files[i].deleted = Arc::from(rows);
        }
    }
    files.sort_by_key(|f| (!f.current, f.path.to_string()));
    Ok(files)
}

/// Whether the table takes deletion vectors: the protocol has the feature
/// and the table property enables it.
pub(crate) fn takes_deletion_vectors(table: &DeltaTable) -> bool {
    use delta_kernel::table_features::TableFeature;
    table.snapshot().is_ok_and(|s| {
        let snapshot = s.snapshot();
        snapshot.table_properties().enable_deletion_vectors == Some(true)
            && snapshot.table_configuration().is_feature_supported(&TableFeature::DeletionVectors)
    })
}

/// Deletes rows of files by deletion vectors: `gone` holds, per file, the
/// rows to delete (ascending positions among the rows the file keeps).
/// The vectors, the files' old ones and the new rows together, are
/// written to one new file of the table; the actions returned remove each
/// file and add it again with its new vector. Nothing is committed.
pub(crate) async fn delete_rows(table: &DeltaTable, gone: Vec<(&DataFile, Vec<u32>)>) -> Result<Vec<Action>> {
    use delta_kernel::actions::deletion_vector_writer::{KernelDeletionVector, StreamingDeletionVectorWriter};
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let id = uuid::Uuid::new_v4();
    let name = format!("deletion_vector_{id}.bin");
    let mut bytes = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
    let mut actions = Vec::with_capacity(2 * gone.len());
    for (file, rows) in gone {
        let context = format!("writing the deletion vector of {}", file.path);
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes(file.deleted.iter().map(|&r| u64::from(r)));
        dv.add_deleted_row_indexes(in_file(&file.deleted, rows).into_iter().map(u64::from));
        let written = writer.write_deletion_vector(dv).map_err(|e| Error::kernel(&context, e))?;
        let mut add = file.add.clone();
        add.deletion_vector = Some(DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: z85::encode(id.as_bytes()),
            offset: Some(written.offset),
            size_in_bytes: written.size_in_bytes,
            cardinality: written.cardinality,
        });
        add.data_change = true;
        add.stats = add.stats.map(|stats| loose_bounds(&stats));
        actions.push(Action::Remove(file.remove.clone()));
        actions.push(Action::Add(add));
    }
    writer.finalize().map_err(|e| Error::kernel(&name, e))?;
    let store = table.object_store();
    store.put(&Path::from(name.as_str()), bytes.into()).await.map_err(|e| Error::store(&name, e))?;
    Ok(actions)
}

/// A file's statistics once a deletion vector hides some of its rows: the
/// minimum and maximum still bound every row kept, but may no longer be
/// reached, which the protocol's `tightBounds: false` says.
fn loose_bounds(stats: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(stats) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("tightBounds".to_string(), serde_json::Value::Bool(false));
            serde_json::Value::Object(map).to_string()
        }
        _ => stats.to_string(),
    }
}

/// The positions in a file of the kept rows `rows` (ascending positions
/// among the rows kept), `deleted` being the rows it deletes (ascending).
fn in_file(deleted: &[u32], rows: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut before = 0;
    rows.into_iter()
        .map(|j| {
            // Deleted rows up to this row's position in the file.
            while deleted.get(before).is_some_and(|&d| d as usize <= j as usize + before) {
                before += 1;
            }
            j + before as u32
        })
        .collect()
}

/// Reads whole files (or the named columns of them), several at once; one
/// batch per file, in the order given.
pub(crate) async fn read_files(
    table: &DeltaTable,
    files: &[DataFile],
    projection: Option<&[String]>,
) -> Result<Vec<RecordBatch>> {
    let store = table.object_store();
    let tasks: Vec<_> = files
        .iter()
        .map(|file| {
            let store = Arc::clone(&store);
            let file = file.clone();
            let projection = projection.map(|p| p.to_vec());
            tokio::spawn(async move { read_file(store, &file, projection.as_deref()).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| Error::task("reading table files", e))??);
    }
    Ok(out)
}

/// Reads one file as two batches from one fetch: the columns `all` of
/// every row, and the columns `some` of the rows `rows` only (ascending
/// positions in the file, in that order).
pub(crate) async fn read_split(
    store: Arc<dyn ObjectStore>,
    file: &DataFile,
    all: &[String],
    some: &[String],
    rows: Vec<u32>,
) -> Result<(RecordBatch, RecordBatch)> {
    let bytes = fetch(store, file).await?;
    let (context, all, some) = (format!("reading {}", file.path), all.to_vec(), some.to_vec());
    let deleted = Arc::clone(&file.deleted);
    let split = move || -> Result<(RecordBatch, RecordBatch)> {
        let every = decode(&context, bytes.clone(), Some(&all), None, &deleted)?;
        let selected = match rows.is_empty() {
            true => RecordBatch::new_empty(Arc::new(Schema::empty())),
            false => decode(&context, bytes, Some(&some), Some(&rows), &deleted)?,
        };
        Ok((every, selected))
    };
    tokio::task::spawn_blocking(split).await.map_err(|e| Error::task("reading table files", e))?
}

async fn fetch(store: Arc<dyn ObjectStore>, file: &DataFile) -> Result<impl ChunkReader + Clone + 'static> {
    let context = format!("reading {}", file.path);
    let bytes = store.get(&file.path).await.map_err(|e| Error::store(&context, e))?.bytes().await;
    bytes.map_err(|e| Error::store(&context, e))
}

/// Reads one file (or the named columns of it) as one batch.
pub(crate) async fn read_file(
    store: Arc<dyn ObjectStore>,
    file: &DataFile,
    projection: Option<&[String]>,
) -> Result<RecordBatch> {
    read_rows(store, file, projection, None).await
}

/// Reads the rows `rows` (ascending positions among the rows the file
/// keeps; all: `None`) of one file, or the named columns of them, as one
/// batch.
pub(crate) async fn read_rows(
    store: Arc<dyn ObjectStore>,
    file: &DataFile,
    projection: Option<&[String]>,
    rows: Option<Vec<u32>>,
) -> Result<RecordBatch> {
    let bytes = fetch(store, file).await?;
    let (context, projection) = (format!("reading {}", file.path), projection.map(<[String]>::to_vec));
    let deleted = Arc::clone(&file.deleted);
    tokio::task::spawn_blocking(move || decode(&context, bytes, projection.as_deref(), rows.as_deref(), &deleted))
        .await
        .map_err(|e| Error::task("reading table files", e))?
}

/// Decodes the columns `projection` (all: `None`) of the rows `rows` (all:
/// `None`) of a Parquet file into one batch. The rows `deleted` (by a
/// deletion vector) are never read, and `rows` counts only the others.
fn decode(
    context: &str,
    bytes: impl ChunkReader + 'static,
    projection: Option<&[String]>,
    rows: Option<&[u32]>,
    deleted: &[u32],
) -> Result<RecordBatch> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Error::parquet(context, e))?;
    let builder = match projection {
        Some(names) => {
            let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().map(String::as_str));
            builder.with_projection(mask)
        }
        None => builder,
    };
    let total = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let kept = total.saturating_sub(deleted.len());
    let positions = match (rows, deleted.is_empty()) {
        (None, true) => None,
        (Some(rows), true) => Some(std::borrow::Cow::Borrowed(rows)),
        (Some(rows), false) => Some(std::borrow::Cow::Owned(in_file(deleted, rows.iter().copied()))),
        (None, false) => Some(std::borrow::Cow::Owned(in_file(deleted, 0..kept as u32))),
    };
    let (builder, wanted) = match positions {
        Some(positions) => {
            if let Some(&last) = positions.last().filter(|&&r| r as usize >= total) {
                return Err(Error::internal(context, format!("row {last} is past the file's {total} rows")));
            }
            let selection = RowSelection::from_consecutive_ranges(runs(&positions), total);
            let builder = builder.with_row_selection(selection);
            // A few rows picked out of many (the rows a merge changed) are
            // read faster by skipping the others than by decoding every row
            // and filtering, which Parquet's default picks for short runs:
            // 0.92 against 1.03 s for a 10% change of 1M rows (a file's
            // rows but those its deletion vector hides keep the default).
            let builder = match rows {
                Some(_) => builder.with_row_selection_policy(RowSelectionPolicy::Selectors),
                None => builder,
            };
            (builder, positions.len())
        }
        None => (builder, total),
    };
    // The rows come as one batch, which concat_batches passes on without a
    // copy: a file is small (see TARGET_FILE_BYTES), and gathering pieces
    // would copy every value once more.
    let reader = builder.with_batch_size(wanted.max(1)).build().map_err(|e| Error::parquet(context, e))?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| Error::arrow(context, e))?;
    concat_batches(&schema, &batches).map_err(|e| Error::arrow(context, e))
}

/// Ascending row positions as runs of consecutive rows.
fn runs(rows: &[u32]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let start = *rows.get(i)? as usize;
        let mut end = start + 1;
        i += 1;
        while rows.get(i).is_some_and(|&r| r as usize == end) {
            end += 1;
            i += 1;
        }
        Some(start..end)
    })
}

/// Writes batches (with an `is_current` column) as Parquet files of the
/// table and returns their `add` actions; nothing is committed.
pub(crate) struct FileWriter {
    writer: RecordBatchWriter,
}

impl FileWriter {
    /// `plain`: business columns written without a dictionary (see
    /// [`plain_columns`]).
    pub(crate) fn new(target: &Target, schema: SchemaRef, plain: &[String]) -> Result<Self> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Hashes and surrogate keys (an SCD2 table's first column) are
        // random and unique: a dictionary never pays for itself there, and
        // building one costs every row. Nor does compression: their bytes
        // are BLAKE3 output, which Snappy cannot shrink. Nor do the hashes'
        // page statistics: the minimum and maximum of random bytes span
        // nearly every value, so they prune nothing, and keeping them costs
        // two comparisons a row.
        let surrogate_key = schema.fields().first().map(|f| f.name().as_str());
        for name in [Some(columns::KEY_HASH), Some(columns::ATTR_HASH), surrogate_key].into_iter().flatten() {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(name), false)
                .set_column_compression(ColumnPath::from(name), Compression::UNCOMPRESSED);
        }
        for name in [columns::KEY_HASH, columns::ATTR_HASH] {
            props = props.set_column_statistics_enabled(ColumnPath::from(name), EnabledStatistics::None);
        }
        for name in plain {
            props = props.set_column_dictionary_enabled(ColumnPath::from(name.as_str()), false);
        }
        let props = props.build();
        let writer = RecordBatchWriter::try_new(
            target.url.as_str(),
            schema,
            Some(vec![columns::IS_CURRENT.to_string()]),
            Some(target.storage_options.clone()),
        )
        .map_err(delta_err(target))?
        .with_writer_properties(props)
        // Files of bounded size, so a small change rewrites little.
        .with_target_file_size(TARGET_FILE_BYTES);
        Ok(Self { writer })
    }

    /// Writes `batch`, whose rows are grouped by `is_current` (current rows
    /// first, say): each run goes to its partition as a zero-copy slice, so
    /// the rows are never sorted or copied again on the way to Parquet.
    pub(crate) async fn write(&mut self, target: &Target, batch: RecordBatch) -> Result<()> {
        use deltalake::arrow::array::AsArray as _;
        use deltalake::kernel::scalars::ScalarExt;
        let flags = batch
            .column_by_name(columns::IS_CURRENT)
            .and_then(|c| c.as_boolean_opt())
            .ok_or_else(|| Error::internal("writing table files", "the rows have no boolean is_current"))?
            .clone();
        let mut start = 0;
        while start < batch.num_rows() {
            let current = flags.value(start);
            let mut end = start + 1;
            while end < batch.num_rows() && flags.value(end) == current {
                end += 1;
            }
            let flag = flags.slice(start, 1);
            let value = <_ as ScalarExt>::from_array(&flag, 0)
                .ok_or_else(|| Error::internal("writing table files", "is_current has no partition value"))?;
            let partition = indexmap::IndexMap::from([(columns::IS_CURRENT.to_string(), value)]);
            self.writer
                .write_partition(batch.slice(start, end - start), &partition, deltalake::writer::WriteMode::Default)
                .await
                .map_err(delta_err(target))?;
            start = end;
        }
        Ok(())
    }

    pub(crate) async fn finish(mut self, target: &Target) -> Result<Vec<Action>> {
        let adds = self.writer.flush().await.map_err(delta_err(target))?;
        Ok(adds.into_iter().map(Action::Add).collect())
    }
}

/// Rows of a batch looked at to tell whether a column repeats its values.
const DICTIONARY_SAMPLE_ROWS: usize = 8 * 1024;

/// The columns of `rows` to write without a Parquet dictionary: the
/// business key (unique among current rows, so its dictionary would be as
/// large as the column), and columns whose values mostly differ in the
/// first rows (an e-mail address, a birth date). Such a dictionary saves
/// little or nothing, or outgrows its page limit within a row group and is
/// abandoned, after every value up to there was hashed into it.
/// Low-cardinality columns (a region, a plan type, a name drawn from a few
/// thousand) keep theirs.
pub(crate) fn plain_columns(rows: &RecordBatch, key: &[String]) -> Vec<String> {
    use deltalake::arrow::datatypes::DataType;
    use deltalake::arrow::row::{RowConverter, SortField};
    let sample = rows.num_rows().min(DICTIONARY_SAMPLE_ROWS);
    let mut plain: Vec<String> = key.to_vec();
    for (field, column) in rows.schema().fields().iter().zip(rows.columns()) {
        // Parquet never gives booleans a dictionary.
        if plain.contains(field.name()) || field.data_type() == &DataType::Boolean {
            continue;
        }
        let column = column.slice(0, sample);
        // Each value as comparable bytes, whatever its type.
        let Ok(converter) = RowConverter::new(vec![SortField::new(field.data_type().clone())]) else { continue };
        let Ok(values) = converter.convert_columns(&[column]) else { continue };
        let distinct: std::collections::HashSet<&[u8]> = values.iter().map(|row| row.data()).collect();
        if sample > 0 && distinct.len() * 2 > sample {
            plain.push(field.name().clone());
        }
    }
    plain
}

/// Writes on several tasks at once: batches are cut into slices that go to
/// the writers in turn, so Parquet encoding uses every core while the
/// caller builds the next batch. Memory stays at a few slices per writer.
pub(crate) struct ParallelWriter {
    senders: Vec<futures::channel::mpsc::Sender<RecordBatch>>,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Action>>>>,
    next: usize,
}

/// Size at which a writer starts a new file. A merge rewrites a touched
/// file whole and decodes the files it rewrites a few at a time, so the
/// file size bounds that part of its memory: at 16 MB a file holds about
/// 200,000 rows of a member dimension, and a 10% change spread over every
/// key still rewrites the current partition in pieces of that size.
const TARGET_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Rows per Parquet row group: a file of [`TARGET_FILE_BYTES`] holds a few.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Rows per slice handed to one writer.
const SLICE_ROWS: usize = 64 * 1024;

impl ParallelWriter {
    /// `plain`: as for [`FileWriter::new`].
    pub(crate) fn new(target: &Target, schema: SchemaRef, plain: &[String]) -> Result<Self> {
        // At most four writers, whatever the thread policy allows: encoding
        // keeps up with the merge building batches by then, and each writer
        // holds a file of up to TARGET_FILE_BYTES open.
        let writers = parallel::threads().min(4);
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (tx, mut rx) = futures::channel::mpsc::channel::<RecordBatch>(2);
            let mut writer = FileWriter::new(target, Arc::clone(&schema), plain)?;
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                use futures::StreamExt;
                while let Some(batch) = rx.next().await {
                    writer.write(&target, batch).await?;
                }
                writer.finish(&target).await
            }));
            senders.push(tx);
        }
        Ok(Self { senders, tasks, next: 0 })
    }

    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        use futures::SinkExt;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = SLICE_ROWS.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, len);
            offset += len;
            let i = self.next % self.senders.len();
            self.next += 1;
            if self.senders[i].send(slice).await.is_err() {
                // The writer stopped on an error; finish() reports it.
                break;
            }
        }
        Ok(())
    }

    pub(crate) async fn finish(self) -> Result<Vec<Action>> {
        drop(self.senders);
        let mut actions = Vec::new();
        for task in self.tasks {
            actions.extend(task.await.map_err(|e| Error::task("writing table files", e))??);
        }
        Ok(actions)
    }
}

/// The newest version of `table` and the `info` of its commit.
pub(crate) async fn newest_commit_info(
    table: &DeltaTable,
    target: &Target,
) -> Result<Option<(u64, HashMap<String, serde_json::Value>)>> {
    use futures::TryStreamExt as _;
    let Some(version) = table.version() else { return Ok(None) };
    let infos: Vec<_> = table.history(Some(1)).try_collect().await.map_err(delta_err(target))?;
    Ok(infos.into_iter().next().map(|info| (version, info.info)))
}

/// Commits `actions` as one version with the batch's transaction; creates
/// the table (schema, partitioning, properties) when `table` is `None`.
pub(crate) async fn commit(
    target: &Target,
    table: Option<&DeltaTable>,
    schema: &Schema,
    configuration: HashMap<String, String>,
    mut actions: Vec<Action>,
    sequence: i64,
    info: Vec<(String, serde_json::Value)>,
) -> Result<u64> {
    let properties = CommitProperties::default()
        .with_metadata(info.into_iter().chain(target.commit_info.iter().cloned()))
        .with_application_transaction(Transaction::new(&target.app_id, sequence))
        // Old commit files stay: time travel and audits reach every version.
        .with_cleanup_expired_logs(Some(false));
    match table {
        Some(table) => {
            let operation = DeltaOperation::Merge {
                predicate: None,
                merge_predicate: Some(format!("{} = source.{}", columns::KEY_HASH, columns::KEY_HASH)),
                matched_predicates: vec![MergePredicate { action_type: "update".into(), predicate: None }],
                not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
                not_matched_by_source_predicates: Vec::new(),
            };
            let snapshot = table.snapshot().map_err(delta_err(target))?;
            // New columns: the same commit evolves the table's schema.
            let kernel_schema: StructType = schema.try_into_kernel().map_err(|e| Error::arrow("table schema", e))?;
            if snapshot.schema().as_ref() != &kernel_schema {
                use deltalake::kernel::MetadataExt as _;
                let metadata =
                    snapshot.metadata().clone().with_schema(&kernel_schema).map_err(|e| delta_err(target)(e.into()))?;
                actions.push(Action::Metadata(metadata));
            }
            let done = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot), table.log_store(), operation)
                .await
                .map_err(delta_err(target))?;
            Ok(done.version())
        }
        None => {
            if let Ok(path) = target.url.to_file_path() {
                std::fs::create_dir_all(&path)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            }
            let kernel_schema: StructType = schema.try_into_kernel().map_err(|e| Error::arrow("table schema", e))?;
            let table = deltalake::operations::create::CreateBuilder::new()
                .with_location(target.url.as_str())
                .with_storage_options(target.storage_options.clone())
                .with_columns(kernel_schema.fields().cloned())
                .with_partition_columns([columns::IS_CURRENT])
                .with_configuration(configuration.into_iter().map(|(k, v)| (k, Some(v))))
                .with_raise_if_key_not_exists(false)
                .with_actions(actions)
                .with_commit_properties(properties)
                .await
                .map_err(delta_err(target))?;
            Ok(table.version().unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{ArrayRef, BooleanArray, Date32Array, StringArray};

    use super::*;

    #[test]
    fn rows_counted_among_those_a_file_keeps_are_found_at_their_places_in_the_file() {
        // A file of 8 rows whose deletion vector hides rows 0, 2, 3 and 7.
        let deleted = [0, 2, 3, 7];
        assert_eq!(in_file(&deleted, 0..4), [1, 4, 5, 6]);
        assert_eq!(in_file(&deleted, [1, 3]), [4, 6]);
        assert_eq!(in_file(&[], [0, 5]), [0, 5]);
        assert_eq!(in_file(&[5, 6], 0..5), [0, 1, 2, 3, 4]);
        assert!(in_file(&deleted, []).is_empty());
    }

    #[test]
    fn statistics_of_a_file_with_a_deletion_vector_say_their_bounds_are_loose() {
        let stats = r#"{"numRecords":3,"minValues":{"id":"a"},"maxValues":{"id":"c"},"nullCount":{"id":0}}"#;
        let loose: serde_json::Value = serde_json::from_str(&loose_bounds(stats)).expect("JSON");
        assert_eq!(loose["tightBounds"], serde_json::json!(false));
        assert_eq!(loose["numRecords"], serde_json::json!(3), "numRecords still counts every row of the file");
        assert_eq!(loose["minValues"]["id"], serde_json::json!("a"));
    }

    #[test]
    fn only_the_key_and_columns_whose_values_mostly_differ_lose_their_dictionary() {
        let n = 1_000;
        let column = |values: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(values)) };
        let batch = RecordBatch::try_from_iter([
            ("id", column((0..n).map(|i| format!("M{i:07}")).collect())),
            ("email", column((0..n).map(|i| format!("person{i}@example.com")).collect())),
            ("region", column((0..n).map(|i| ["North", "South", "East"][i % 3].to_string()).collect())),
            ("dob", Arc::new(Date32Array::from((0..n as i32).collect::<Vec<_>>())) as ArrayRef),
            ("since", Arc::new(Date32Array::from(vec![19_000; n])) as ArrayRef),
            ("active", Arc::new(BooleanArray::from(vec![true; n])) as ArrayRef),
        ])
        .expect("a batch");
        assert_eq!(plain_columns(&batch, &["id".to_string()]), ["id", "email", "dob"]);
        assert_eq!(plain_columns(&batch.slice(0, 0), &["id".to_string()]), ["id"]);
    }
}
