//! Delta tables under one root.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Transaction};
use deltalake::logstore::{get_actions, read_commit_entry};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore};
use url::Url;

use crate::{Error, Result, RunContext};

/// A validated table name: lower-case letters, digits and `_`, starting
/// with a letter or `_`, at most 128 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(String);

impl TableName {
    /// `name`, if it follows the rules ([`Error::InvalidTableName`] if not).
    pub fn new(name: &str) -> Result<Self> {
        let bad = |reason: &str| Err(Error::InvalidTableName { name: name.to_string(), reason: reason.to_string() });
        if name.is_empty() || name.len() > 128 {
            return bad("must be 1 to 128 characters");
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            return bad("must start with a lower-case letter or '_'");
        }
        if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return bad("may hold only lower-case letters, digits and '_'");
        }
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a commit is: the run that makes it and the operation, both written
/// into the Delta commit info as `gold.run_id` and `gold.operation`, plus
/// optional extra commit metadata, an application transaction (Delta
/// `txn`) for exactly-once writes, and partition columns.
#[derive(Clone, Debug)]
pub struct Commit<'a> {
    run: &'a RunContext,
    operation: &'a str,
    metadata: Vec<(String, serde_json::Value)>,
    txns: Vec<(String, i64)>,
    partition_by: Vec<String>,
    merge_schema: bool,
}

impl<'a> Commit<'a> {
    /// A commit of `run` doing `operation`, with nothing else recorded.
    pub fn new(run: &'a RunContext, operation: &'a str) -> Self {
        Self { run, operation, metadata: Vec::new(), txns: Vec::new(), partition_by: Vec::new(), merge_schema: false }
    }

    /// Adds `gold.<key>` to the commit info.
    pub fn with_metadata(mut self, key: &str, value: serde_json::Value) -> Self {
        self.metadata.push((format!("gold.{key}"), value));
        self
    }

    /// Records application transaction `(app_id, version)` in the same
    /// commit; [`Warehouse::txn_version`] reads it back. A commit may carry
    /// several, one per application id.
    pub fn with_txn(mut self, app_id: &str, version: i64) -> Self {
        self.txns.retain(|(id, _)| id != app_id);
        self.txns.push((app_id.to_string(), version));
        self
    }

    /// Partitions a new table by these columns.
    pub fn partitioned_by(mut self, columns: &[&str]) -> Self {
        self.partition_by = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Lets the write add columns the table does not have yet.
    pub fn merging_schema(mut self) -> Self {
        self.merge_schema = true;
        self
    }

    /// The `gold.*` commit-info entries: run id and kind, operation,
    /// logical date and the extra metadata. For writers outside
    /// [`Warehouse`], such as the SCD2 engine.
    pub fn info(&self) -> Vec<(String, serde_json::Value)> {
        let mut metadata = vec![
            ("gold.run_id".to_string(), serde_json::json!(self.run.id.0)),
            ("gold.run_kind".to_string(), serde_json::json!(self.run.kind.as_str())),
            ("gold.operation".to_string(), serde_json::json!(self.operation)),
            ("gold.logical_date".to_string(), serde_json::json!(self.run.clock.logical_date().to_string())),
        ];
        metadata.extend(self.metadata.iter().cloned());
        metadata
    }

    pub(crate) fn properties(&self) -> CommitProperties {
        // No commit deletes the log's old files: see `layout`.
        let mut properties =
            CommitProperties::default().with_metadata(self.info()).with_cleanup_expired_logs(Some(false));
        if !self.txns.is_empty() {
            properties = properties.with_application_transactions(
                self.txns.iter().map(|(app_id, version)| Transaction::new(app_id, *version)).collect(),
            );
        }
        properties
    }
}

/// One commit of a table, as [`Warehouse::history`] reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryEntry {
    /// The table version the commit made.
    pub version: i64,
    /// Commit time, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The Delta operation (WRITE, MERGE, RESTORE, …).
    pub operation: String,
    /// The `gold.*` commit metadata: run id and kind, gold operation, date.
    pub gold: serde_json::Map<String, serde_json::Value>,
    /// Delta's operation metrics (rows and files added and removed).
    pub metrics: serde_json::Value,
}

/// The URI schemes of the object stores this build reads and writes (the
/// deltalake crate's `s3` and `azure` backends).
pub const OBJECT_STORE_SCHEMES: [&str; 7] = ["s3", "s3a", "az", "azure", "abfs", "abfss", "adl"];

/// The warehouse root: a local folder or an object-store URI.
///
/// Clones share the local tables loaded so far: loading a table again
/// reads only the commits made since (any process's), not its whole log
/// and checkpoint, so a run that reads a table in several stages replays
/// its log once.
#[derive(Clone, Debug)]
pub struct Warehouse {
    root: Url,
    storage_options: HashMap<String, String>,
    /// By table URL: the table as loaded, and the modification time of
    /// its newest commit file then.
    loaded: Arc<Mutex<HashMap<Url, (DeltaTable, SystemTime)>>>,
}

/// The modification time of `url`'s commit file of `version`, when the
/// table is local and the file is there.
fn commit_mtime(url: &Url, version: impl fmt::Display) -> Option<SystemTime> {
    let path = url.to_file_path().ok()?.join("_delta_log").join(format!("{version:020}.json"));
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub(crate) fn delta_err(table: &TableName) -> impl FnOnce(DeltaTableError) -> Error + '_ {
    move |source| Error::Delta { table: table.to_string(), source: Box::new(source) }
}

impl Warehouse {
    /// Opens the warehouse at `location`: a local path or a URI such as
    /// `file:///…`. A local folder is created by the first write.
    pub fn open(location: &str) -> Result<Self> {
        Self::open_with(location, HashMap::new())
    }

    /// Opens the warehouse at `location`: a local path, a `file://` URI, or
    /// an object-store URI (`s3://bucket/prefix`, `az://container/prefix`,
    /// `abfss://container@account.dfs.core.windows.net/prefix`), with the
    /// object store's `storage_options` (endpoint, region, emulator…).
    /// Credentials are not options: delta-rs reads them from the
    /// environment (`AWS_*`, `AZURE_STORAGE_*`).
    pub fn open_with(location: &str, storage_options: HashMap<String, String>) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidLocation { location: location.to_string(), reason };
        if location.trim().is_empty() {
            return Err(invalid("empty location".into()));
        }
        let root = match Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => match url.scheme() {
                "file" => {
                    let path = url.to_file_path().map_err(|()| invalid("not a local file URL".into()))?;
                    Self::local_root(&path, location)?
                }
                scheme if OBJECT_STORE_SCHEMES.contains(&scheme) => Self::object_root(url, location)?,
                scheme => {
                    return Err(invalid(format!(
                        "the {scheme}:// scheme is not supported; use a local path, s3://, az:// or abfss://"
                    )));
                }
            },
            // A relative or absolute path (a Windows drive letter parses as a one-letter scheme).
            _ => Self::local_root(Path::new(location), location)?,
        };
        Ok(Self { root, storage_options, loaded: Arc::default() })
    }

    /// An object-store root: a bucket or container, and a prefix ending in `/`.
    fn object_root(mut url: Url, location: &str) -> Result<Url> {
        let invalid = |reason: String| Error::InvalidLocation { location: location.to_string(), reason };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("a {}:// location names its bucket or container", url.scheme())));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a warehouse location has no query or fragment".into()));
        }
        let path = format!("{}/", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(url)
    }

    /// Whether the warehouse is a local folder.
    pub fn is_local(&self) -> bool {
        self.root.scheme() == "file"
    }

    /// A local root as a directory URL. The folder is created by the first
    /// write, not here, so that reading a mistyped location leaves no trace.
    fn local_root(path: &Path, location: &str) -> Result<Url> {
        let invalid = |reason: String| Error::InvalidLocation { location: location.to_string(), reason };
        let abs = std::path::absolute(path)
            .map_err(|source| Error::LocationPath { location: location.to_string(), source })?;
        if abs.exists() && !abs.is_dir() {
            return Err(invalid("not a directory".into()));
        }
        Url::from_directory_path(&abs).map_err(|()| invalid("cannot be expressed as a file URL".into()))
    }

    /// Options for the object store (credentials come from the
    /// environment, never from here).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// The root URI, ending in `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Where table `name` lives.
    pub fn table_url(&self, name: &TableName) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|source| Error::TableUrl { location: self.root.to_string(), source })
    }

    /// A handle on the table at `url`, loaded when the table exists. (Asking
    /// first keeps delta-rs from logging a failed load of a table that is
    /// about to be created.)
    async fn handle(&self, url: Url, name: &TableName) -> Result<DeltaTable> {
        if let Some(mut table) = self.remembered(&url) {
            // Only the commits since; a failure loads the table afresh.
            if table.update_incremental(None).await.is_ok() {
                self.remember(&url, &table);
                return Ok(table);
            }
        }
        let mut table = DeltaTableBuilder::from_url(url.clone())
            .and_then(|b| b.with_storage_options(self.storage_options.clone()).build())
            .map_err(delta_err(name))?;
        if table.verify_deltatable_existence().await.map_err(delta_err(name))? {
            table.load().await.map_err(delta_err(name))?;
            self.remember(&url, &table);
        }
        Ok(table)
    }

    /// The local table at `url` as this warehouse last loaded it, unless
    /// that version's commit file is gone or not the one it read (the
    /// table was deleted, or created again).
    fn remembered(&self, url: &Url) -> Option<DeltaTable> {
        let (table, mtime) = self.loaded.lock().ok()?.get(url).cloned()?;
        if table.version().and_then(|v| commit_mtime(url, v)) != Some(mtime) {
            self.forget(url);
            return None;
        }
        Some(table)
    }

    /// Keeps `table` for the next load, if it is local (an object store's
    /// table is loaded afresh each time).
    fn remember(&self, url: &Url, table: &DeltaTable) {
        let Some(mtime) = table.version().and_then(|v| commit_mtime(url, v)) else { return };
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(url.clone(), (table.clone(), mtime));
        }
    }

    fn forget(&self, url: &Url) {
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.remove(url);
        }
    }

    /// A handle to write to, creating a local table folder if needed.
    async fn handle_for_write(&self, name: &TableName) -> Result<DeltaTable> {
        let url = self.table_url(name)?;
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        }
        self.handle(url, name).await
    }

    /// The table at its latest version, or `None` if it does not exist yet.
    pub async fn load(&self, name: &TableName) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name)?;
        if url.to_file_path().is_ok_and(|path| !path.exists()) {
            self.forget(&url);
            return Ok(None);
        }
        let table = self.handle(url, name).await?;
        Ok(table.version().is_some().then_some(table))
    }

    /// The partition columns of table `name`, in order; `None` when it
    /// does not exist.
    pub async fn partition_columns(&self, name: &TableName) -> Result<Option<Vec<String>>> {
        let Some(table) = self.load(name).await? else { return Ok(None) };
        let snapshot = table.snapshot().map_err(delta_err(name))?;
        Ok(Some(snapshot.metadata().partition_columns().to_vec()))
    }

    /// The Arrow schema of table `name` at its latest version; `None`
    /// when it does not exist.
    pub async fn arrow_schema(&self, name: &TableName) -> Result<Option<deltalake::arrow::datatypes::SchemaRef>> {
        let Some(table) = self.load(name).await? else { return Ok(None) };
        use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
        let schema = table.snapshot().map_err(delta_err(name))?.schema();
        let arrow: deltalake::arrow::datatypes::Schema = schema
            .as_ref()
            .try_into_arrow()
            .map_err(|e| Error::Schema { table: name.to_string(), source: Box::new(e) })?;
        Ok(Some(Arc::new(arrow)))
    }

    /// The table at `version`.
    pub async fn load_version(&self, name: &TableName, version: i64) -> Result<DeltaTable> {
        let mut table = self.load(name).await?.ok_or_else(|| Error::NoSuchTable { table: name.to_string() })?;
        let latest = table.version().unwrap_or(0);
        let wanted = u64::try_from(version).ok().filter(|v| *v <= latest);
        let wanted = wanted.ok_or_else(|| Error::NoSuchVersion { table: name.to_string(), version, latest })?;
        table.load_version(wanted).await.map_err(delta_err(name))?;
        Ok(table)
    }

    /// Appends `batches` in one commit, creating the table on first use.
    /// Returns the new version.
    pub async fn append(&self, name: &TableName, batches: Vec<RecordBatch>, commit: &Commit<'_>) -> Result<i64> {
        self.append_to(None, name, batches, commit).await
    }

    /// [`Self::append`] on `table` as loaded (its version is the one the
    /// commit read, so Delta's conflict check covers everything since), or
    /// on a new handle when `None`.
    pub(crate) async fn append_to(
        &self,
        table: Option<DeltaTable>,
        name: &TableName,
        batches: Vec<RecordBatch>,
        commit: &Commit<'_>,
    ) -> Result<i64> {
        check_plain_strings(name, &batches)?;
        let table = match table {
            Some(t) => t,
            None => self.handle_for_write(name).await?,
        };
        let mut write = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(commit.partition_by.clone())
            .with_configuration(new_table_properties())
            .with_commit_properties(commit.properties());
        if commit.merge_schema {
            write = write.with_schema_mode(SchemaMode::Merge);
        }
        let written = write.await.map_err(delta_err(name))?;
        committed_version(name, &written)
    }

    /// Replaces the table's rows with `batches` in one commit (a new Delta
    /// version; the old rows stay readable by time travel), creating the
    /// table on first use. The schema may change. Returns the new version.
    pub async fn overwrite(&self, name: &TableName, batches: Vec<RecordBatch>, commit: &Commit<'_>) -> Result<i64> {
        check_plain_strings(name, &batches)?;
        let table = self.handle_for_write(name).await?;
        let written = table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_partition_columns(commit.partition_by.clone())
            .with_configuration(new_table_properties())
            .with_commit_properties(commit.properties())
            .await
            .map_err(delta_err(name))?;
        committed_version(name, &written)
    }

    /// Replaces the rows matching `predicate` (SQL over the table's
    /// columns, typically its partition columns, such as
    /// `month IN (202501, 202502)`) with `batches` in one commit; every row
    /// of `batches` must match it. Rows outside the predicate are untouched.
    /// Creates the table on first use. Returns the new version.
    pub async fn replace_where(
        &self,
        name: &TableName,
        batches: Vec<RecordBatch>,
        predicate: &str,
        commit: &Commit<'_>,
    ) -> Result<i64> {
        check_plain_strings(name, &batches)?;
        let table = self.handle_for_write(name).await?;
        let written = table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(predicate.to_string())
            .with_partition_columns(commit.partition_by.clone())
            .with_configuration(new_table_properties())
            .with_commit_properties(commit.properties())
            .await
            .map_err(delta_err(name))?;
        committed_version(name, &written)
    }

    /// The last version recorded for application transaction `app_id`, or
    /// `None` if the table or the transaction does not exist (or a restore
    /// reset it).
    pub async fn txn_version(&self, name: &TableName, app_id: &str) -> Result<Option<i64>> {
        let Some(table) = self.load(name).await? else { return Ok(None) };
        let state = table.snapshot().map_err(delta_err(name))?;
        let version = state.transaction_version(table.log_store().as_ref(), app_id).await.map_err(delta_err(name))?;
        // A restore resets a transaction that did not exist yet to -1.
        Ok(version.filter(|v| *v >= 0))
    }

    /// The `gold.*` commit metadata of the newest `limit` commits.
    pub async fn commit_metadata(
        &self,
        name: &TableName,
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        use futures::TryStreamExt;
        let Some(table) = self.load(name).await? else { return Ok(Vec::new()) };
        let infos: Vec<_> = table.history(Some(limit)).try_collect().await.map_err(delta_err(name))?;
        Ok(infos
            .into_iter()
            .map(|info| info.info.into_iter().filter(|(k, _)| k.starts_with("gold.")).collect())
            .collect())
    }

    /// Every row of the table at `version` (latest if `None`), in file order.
    pub async fn scan(&self, name: &TableName, version: Option<i64>) -> Result<Vec<RecordBatch>> {
        self.scan_where(name, version, None).await
    }

    /// Only `columns` of every row of the table at `version` (latest if
    /// `None`); the other columns are not read from the files.
    pub async fn scan_columns(
        &self,
        name: &TableName,
        version: Option<i64>,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        self.query(name, version, None, Some(columns)).await
    }

    /// The rows of the table at `version` (latest if `None`) that match
    /// the SQL predicate `filter` (all rows if `None`), in file order.
    /// Strings come back as plain `Utf8`, never `Utf8View`.
    pub async fn scan_where(
        &self,
        name: &TableName,
        version: Option<i64>,
        filter: Option<&str>,
    ) -> Result<Vec<RecordBatch>> {
        self.query(name, version, filter, None).await
    }

    /// Columns `columns` of the rows of the table at `version` (latest if
    /// `None`) that match the SQL predicate `filter`. Files whose
    /// statistics rule the predicate out are not read.
    pub async fn scan_columns_where(
        &self,
        name: &TableName,
        version: Option<i64>,
        columns: &[&str],
        filter: &str,
    ) -> Result<Vec<RecordBatch>> {
        self.query(name, version, Some(filter), Some(columns)).await
    }

    /// A DataFusion session for queries over warehouse tables: strings come
    /// back as plain `Utf8`, never `Utf8View`.
    pub fn session() -> SessionContext {
        SessionContext::new_with_config(Self::session_config())
    }

    /// [`Self::session`] on one partition: every aggregate adds its rows up
    /// in file order, so a floating-point sum or mean is the same, bit for
    /// bit, on every run over the same table versions.
    pub fn serial_session() -> SessionContext {
        SessionContext::new_with_config(Self::session_config().with_target_partitions(1))
    }

    fn session_config() -> SessionConfig {
        let mut config = SessionConfig::new();
        config.options_mut().execution.parquet.schema_force_view_types = false;
        config
    }

    /// Registers table `name` at `version` (latest if `None`) in `ctx` under
    /// its own name, and returns the version registered, or `None` when the
    /// table does not exist yet (nothing is registered then).
    pub async fn register(&self, ctx: &SessionContext, name: &TableName, version: Option<i64>) -> Result<Option<i64>> {
        let table = match version {
            Some(v) => self.load_version(name, v).await?,
            None => match self.load(name).await? {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        let at = committed_version(name, &table)?;
        let query_err = |source: DataFusionError| Error::Query { table: name.to_string(), source: Box::new(source) };
        table.update_datafusion_session(&ctx.state()).map_err(delta_err(name))?;
        let provider = table.table_provider().await.map_err(&query_err)?;
        ctx.register_table(name.as_str(), provider).map_err(query_err)?;
        Ok(Some(at))
    }

    /// Every table under the root and its latest version, by name. Folders
    /// without a Delta log are not tables and are left out.
    pub async fn tables(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for name in self.folders().await? {
            if let Some(table) = self.load(&name).await? {
                out.insert(name.to_string(), committed_version(&name, &table)?);
            }
        }
        Ok(out)
    }

    /// The folders right under the root whose names are table names: read
    /// from the local folder, or listed from the object store.
    async fn folders(&self) -> Result<Vec<TableName>> {
        let mut names = Vec::new();
        if let Ok(root) = self.root.to_file_path() {
            let io = |source| Error::Io { path: root.display().to_string(), source };
            let entries = match std::fs::read_dir(&root) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                Err(e) => return Err(io(e)),
            };
            for entry in entries {
                let path = entry.map_err(io)?.path();
                if path.join("_delta_log").is_dir()
                    && let Some(name) = path.file_name().and_then(|n| n.to_str())
                    && let Ok(name) = TableName::new(name)
                {
                    names.push(name);
                }
            }
            return Ok(names);
        }
        let listing_err =
            |source: DeltaTableError| Error::Delta { table: "(warehouse root)".into(), source: Box::new(source) };
        let store = deltalake::logstore::store_for(&self.root, self.storage_options.clone()).map_err(listing_err)?;
        let listing = store
            .list_with_delimiter(None)
            .await
            .map_err(|e| listing_err(DeltaTableError::ObjectStore { source: e }))?;
        for prefix in listing.common_prefixes {
            if let Some(name) = prefix.filename()
                && let Ok(name) = TableName::new(name)
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Restores table `name` to the content of `version` in a new commit
    /// (Delta RESTORE: nothing is deleted, every version stays readable).
    /// The application transactions (`txn`) committed after `version` are
    /// reset to their values at `version`, or to -1 where they did not
    /// exist then ([`Self::txn_version`] reads a negative value as none), so
    /// exactly-once writers redo what the restore undid. Returns the new
    /// version, or `None` when the table already is at `version`.
    pub async fn restore(&self, name: &TableName, version: i64, commit: &Commit<'_>) -> Result<Option<i64>> {
        let table = self.load(name).await?.ok_or_else(|| Error::NoSuchTable { table: name.to_string() })?;
        let current = committed_version(name, &table)?;
        if version == current {
            return Ok(None);
        }
        let target = self.load_version(name, version).await?;
        let apps = self.txn_apps_since(&table, name, version + 1, current).await?;
        let state = target.snapshot().map_err(delta_err(name))?;
        let mut txns = Vec::new();
        for app in apps {
            let at = state.transaction_version(target.log_store().as_ref(), &app).await.map_err(delta_err(name))?;
            txns.push(Transaction::new(app, at.unwrap_or(-1)));
        }
        let (restored, _) = table
            .restore()
            .with_version_to_restore(version as u64)
            .with_commit_properties(commit.properties().with_application_transactions(txns))
            .await
            .map_err(delta_err(name))?;
        committed_version(name, &restored).map(Some)
    }

    /// Empties table `name` in a new commit, as if it did not exist yet:
    /// every row is removed (the files stay, for time travel) and every
    /// application transaction is reset to -1. Returns the new version, or
    /// `None` when the table is already empty.
    pub async fn empty(&self, name: &TableName, commit: &Commit<'_>) -> Result<Option<i64>> {
        let table = self.load(name).await?.ok_or_else(|| Error::NoSuchTable { table: name.to_string() })?;
        let current = committed_version(name, &table)?;
        let apps = self.txn_apps_since(&table, name, 0, current).await?;
        let txns: Vec<Transaction> = apps.into_iter().map(|app| Transaction::new(app, -1)).collect();
        let (emptied, _) = table
            .delete()
            .with_commit_properties(commit.properties().with_application_transactions(txns))
            .await
            .map_err(delta_err(name))?;
        let after = committed_version(name, &emptied)?;
        Ok((after != current).then_some(after))
    }

    /// The application ids of the `txn` actions committed in versions
    /// `from..=to` of `table`.
    async fn txn_apps_since(
        &self,
        table: &DeltaTable,
        name: &TableName,
        from: i64,
        to: i64,
    ) -> Result<std::collections::BTreeSet<String>> {
        let store = table.log_store().object_store(None);
        let mut apps = std::collections::BTreeSet::new();
        for v in from..=to {
            let v = v as u64;
            let Some(bytes) = read_commit_entry(store.as_ref(), v).await.map_err(delta_err(name))? else { continue };
            for action in get_actions(v, &bytes).map_err(delta_err(name))? {
                if let Action::Txn(txn) = action {
                    apps.insert(txn.app_id);
                }
            }
        }
        Ok(apps)
    }

    /// Puts every table back to `state` (table → version, as a run left
    /// them), one commit per table that differs: [`Self::restore`] for a
    /// table in `state`, [`Self::empty`] for one created since. Tables in
    /// `skip` are left alone. Returns each changed table's new version.
    pub async fn restore_state(
        &self,
        state: &BTreeMap<String, i64>,
        skip: &[&str],
        commit: &Commit<'_>,
    ) -> Result<Vec<(String, i64)>> {
        let mut changed = Vec::new();
        for table in self.tables().await?.into_keys() {
            if skip.contains(&table.as_str()) {
                continue;
            }
            let name = TableName::new(&table)?;
            let new = match state.get(&table) {
                Some(version) => self.restore(&name, *version, commit).await?,
                None => self.empty(&name, commit).await?,
            };
            if let Some(version) = new {
                changed.push((table, version));
            }
        }
        Ok(changed)
    }

    /// The table's commits, newest first, at most `limit`: version,
    /// timestamp (ms), operation, the `gold.*` commit metadata and the
    /// operation metrics.
    pub async fn history(&self, name: &TableName, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
        use futures::TryStreamExt;
        let Some(table) = self.load(name).await? else { return Err(Error::NoSuchTable { table: name.to_string() }) };
        let latest = committed_version(name, &table)?;
        let infos: Vec<_> = table.history(limit).try_collect().await.map_err(delta_err(name))?;
        Ok(infos
            .into_iter()
            .enumerate()
            .map(|(i, info)| {
                let version = info.info.get("version").and_then(serde_json::Value::as_i64).unwrap_or(latest - i as i64);
                let metrics = info.info.get("operationMetrics").cloned().unwrap_or(serde_json::Value::Null);
                let gold = info.info.into_iter().filter(|(k, _)| k.starts_with("gold.")).collect();
                HistoryEntry {
                    version,
                    timestamp_ms: info.timestamp,
                    operation: info.operation.unwrap_or_default(),
                    gold,
                    metrics,
                }
            })
            .collect())
    }

    /// Compacts the table's small files (Delta OPTIMIZE; `zorder` columns
    /// Z-order the rewritten files). The rows do not change (the commit
    /// says `dataChange: false`), and the old files stay for time travel
    /// until a vacuum. Returns the new version (`None` when there was
    /// nothing to compact) and the files removed and added.
    pub async fn optimize(
        &self,
        name: &TableName,
        zorder: Option<&[String]>,
        commit: &Commit<'_>,
    ) -> Result<(Option<i64>, u64, u64)> {
        use deltalake::operations::optimize::OptimizeType;
        let table = self.load(name).await?.ok_or_else(|| Error::NoSuchTable { table: name.to_string() })?;
        let kind = match zorder {
            Some(columns) => OptimizeType::ZOrder(columns.to_vec()),
            None => OptimizeType::Compact,
        };
        Self::optimize_loaded(name, table, kind, None, commit).await
    }

    /// [`Self::optimize`] of `table` as loaded, into files of about
    /// `target` bytes (delta-rs's default when `None`).
    pub(crate) async fn optimize_loaded(
        name: &TableName,
        table: DeltaTable,
        kind: deltalake::operations::optimize::OptimizeType,
        target: Option<std::num::NonZeroU64>,
        commit: &Commit<'_>,
    ) -> Result<(Option<i64>, u64, u64)> {
        let before = committed_version(name, &table)?;
        // Our session reads strings and binaries as plain types, so the
        // rewritten files keep the table's types (no view types).
        let session: Arc<dyn deltalake::datafusion::catalog::Session> = Arc::new(Self::session().state());
        let mut optimize =
            table.optimize().with_type(kind).with_session_state(session).with_commit_properties(commit.properties());
        if let Some(target) = target {
            optimize = optimize.with_target_size(target);
        }
        let (after, metrics) = optimize.await.map_err(delta_err(name))?;
        let after = committed_version(name, &after)?;
        Ok(((after != before).then_some(after), metrics.num_files_removed, metrics.num_files_added))
    }

    /// Deletes the files of the table that no version in `keep` reads and
    /// that left the table more than `retain` ago (Delta VACUUM). Returns
    /// the paths deleted.
    pub async fn vacuum(&self, name: &TableName, retain: chrono::Duration, keep: &[i64]) -> Result<Vec<String>> {
        let table = self.load(name).await?.ok_or_else(|| Error::NoSuchTable { table: name.to_string() })?;
        let keep: Vec<u64> = keep.iter().filter_map(|v| u64::try_from(*v).ok()).collect();
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retain)
            .with_enforce_retention_duration(false)
            .with_keep_versions(&keep)
            .await
            .map_err(delta_err(name))?;
        Ok(metrics.files_deleted)
    }

    /// The scans above: a version, an optional filter, optional columns.
    async fn query(
        &self,
        name: &TableName,
        version: Option<i64>,
        filter: Option<&str>,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let table = match version {
            Some(v) => self.load_version(name, v).await?,
            None => self.load(name).await?.ok_or_else(|| Error::NoSuchTable { table: name.to_string() })?,
        };
        let query_err = |source: DataFusionError| Error::Query { table: name.to_string(), source: Box::new(source) };
        let ctx = Self::session();
        table.update_datafusion_session(&ctx.state()).map_err(delta_err(name))?;
        let provider = table.table_provider().await.map_err(&query_err)?;
        let mut frame = ctx.read_table(provider).map_err(&query_err)?;
        if let Some(filter) = filter {
            let predicate = frame.parse_sql_expr(filter).map_err(&query_err)?;
            frame = frame.filter(predicate).map_err(&query_err)?;
        }
        if let Some(columns) = columns {
            frame = frame.select_columns(columns).map_err(&query_err)?;
        }
        collect_plain(name, frame).await
    }
}

/// The rows of `frame`, a query of table `name`, with plain types.
pub(crate) async fn collect_plain(
    name: &TableName,
    frame: deltalake::datafusion::prelude::DataFrame,
) -> Result<Vec<RecordBatch>> {
    let batches =
        frame.collect().await.map_err(|source| Error::Query { table: name.to_string(), source: Box::new(source) })?;
    batches
        .iter()
        .map(plain_batch)
        .collect::<std::result::Result<_, _>>()
        .map_err(|source| Error::Arrow { table: name.to_string(), source: Box::new(source) })
}

/// The version a write just committed.
/// The table properties a new table is created with (see `layout`).
pub(crate) fn new_table_properties() -> Vec<(&'static str, Option<String>)> {
    crate::table_properties().into_iter().map(|(k, v)| (k, Some(v))).collect()
}

pub(crate) fn committed_version(name: &TableName, table: &DeltaTable) -> Result<i64> {
    table
        .version()
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| Error::Unsupported { table: name.to_string(), reason: "no version after a commit".into() })
}

/// `t` with strings and binaries as plain `Utf8`/`Binary` (an all-NULL
/// `Null` column as a string) and list items named `item`, at any depth:
/// the types gold writes, which every Delta reader takes.
pub fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 | DataType::Null => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            DataType::List(Arc::new(Field::new_list_field(plain_type(f.data_type()), true)))
        }
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Arc::new(Field::new(f.name(), plain_type(f.data_type()), f.is_nullable())))
                .collect::<Fields>(),
        ),
        other => other.clone(),
    }
}

/// `batch` cast to [`plain_type`]s; columns already plain are not copied.
pub fn plain_batch(batch: &RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if schema.fields().iter().all(|f| plain_type(f.data_type()) == *f.data_type()) {
        return Ok(batch.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), plain_type(f.data_type()), true).with_metadata(f.metadata().clone()))
        .collect();
    let columns = batch
        .columns()
        .iter()
        .zip(&fields)
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Some Delta readers reject `Utf8View`; gold writes plain `Utf8` only.
pub(crate) fn check_plain_strings(name: &TableName, batches: &[RecordBatch]) -> Result<()> {
    fn has_view(t: &DataType) -> bool {
        match t {
            DataType::Utf8View | DataType::BinaryView => true,
            DataType::List(f) | DataType::LargeList(f) => has_view(f.data_type()),
            DataType::Struct(fields) => fields.iter().any(|f| has_view(f.data_type())),
            _ => false,
        }
    }
    match batches.first().map(|b| b.schema()) {
        Some(schema) if schema.fields().iter().any(|f| has_view(f.data_type())) => Err(Error::Unsupported {
            table: name.to_string(),
            reason: "refusing to write Utf8View/BinaryView columns, which some Delta readers reject".into(),
        }),
        _ => Ok(()),
    }
}
