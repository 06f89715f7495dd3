//! `gold sql`: read-only SQL over the warehouse with DataFusion, at the
//! table versions of a run, with PII masked for roles that may not see it.
//!
//! Only the tables a query names are registered, each at the version the
//! run chose (by default the last successful run's, so a build that is
//! running or failed half-way is never seen). With a [`Masking`], each
//! table is registered as a view that hides PII columns, reduces dates of
//! birth to the year and replaces member and patient ids by keyed BLAKE3
//! pseudonyms, so no query can reach the raw values.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{AsArray, StringArray};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::common::DataFusionError;
use deltalake::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use deltalake::datafusion::sql::parser::{DFParser, Statement as DfStatement};
use deltalake::datafusion::sql::resolve::resolve_table_references;
use deltalake::datafusion::sql::sqlparser::ast::Statement;
use storage::{TableName, Warehouse};

/// Errors of `gold sql`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query is not a read-only query.
    #[error("gold sql is read-only: {0}")]
    NotReadOnly(String),
    /// The query does not parse or plan.
    #[error("{0}")]
    Sql(String),
    /// A table the query names is not in the chosen run's state.
    #[error("table {table} {reason}")]
    NoTable { table: String, reason: String },
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

impl Error {
    /// Whether the user can fix this (the query, a name, a setting).
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_user_error(),
            _ => true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a role sees PII.
#[derive(Clone, Debug, Default)]
pub struct Masking {
    /// Columns (lower-cased names) whose values are hidden.
    pub hidden: HashSet<String>,
    /// Columns (lower-cased) reduced to their year: dates of birth.
    pub year_only: HashSet<String>,
    /// Columns (lower-cased) replaced by keyed pseudonyms: member and
    /// patient ids, so that joins still match.
    pub pseudonymised: HashSet<String>,
    /// The pseudonym key (from the environment), when set.
    pub key: Option<[u8; 32]>,
}

impl Masking {
    /// The key from the secret `text` (any length).
    pub fn key_from(text: &str) -> [u8; 32] {
        blake3::derive_key("gold 2025 pii pseudonym key", text.as_bytes())
    }

    fn expr(&self, column: &str, data_type: &DataType) -> Option<String> {
        let lower = column.to_lowercase();
        let quoted = format!("\"{}\"", column.replace('"', "\"\""));
        let text = matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        if self.year_only.contains(&lower) {
            Some(if text {
                format!("substr({quoted}, 1, 4)")
            } else {
                format!("CAST(date_part('year', {quoted}) AS INT)")
            })
        } else if self.hidden.contains(&lower) {
            Some(format!("CASE WHEN {quoted} IS NULL THEN NULL ELSE '***' END"))
        } else if self.pseudonymised.contains(&lower) {
            // Without a key this fails when a query reads the column (and
            // only then: a count over the table does not).
            Some(format!("gold_pseudonym(CAST({quoted} AS VARCHAR))"))
        } else {
            None
        }
    }
}

/// Which versions a query reads.
#[derive(Clone, Debug)]
pub enum Versions {
    /// Each table at the version in this state (a run's); tables outside it
    /// do not exist for the query.
    State { state: BTreeMap<String, i64>, origin: String },
    /// The one table the query names, at this version.
    Version(i64),
}

/// A query's result.
#[derive(Debug)]
pub struct QueryResult {
    pub batches: Vec<RecordBatch>,
    pub schema: deltalake::arrow::datatypes::SchemaRef,
    /// The tables read and their versions.
    pub versions: BTreeMap<String, i64>,
}

/// Checks that `sql` is one read-only query (SELECT, WITH, VALUES or
/// EXPLAIN of one) and returns the tables it names.
pub fn read_only_tables(sql: &str) -> Result<Vec<String>> {
    let mut statements = DFParser::parse_sql(sql).map_err(|e| Error::Sql(e.to_string()))?;
    if statements.len() != 1 {
        return Err(Error::NotReadOnly(format!("give exactly one query, not {}", statements.len())));
    }
    let statement = statements.pop_front().expect("one statement");
    let keyword = sql.split_whitespace().next().unwrap_or("").to_uppercase();
    match &statement {
        DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)) => {}
        DfStatement::Explain(e) if matches!(e.statement.as_ref(), DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_))) =>
            {}
        _ => {
            return Err(Error::NotReadOnly(format!(
                "{keyword} statements are refused; only queries (SELECT, WITH, VALUES, EXPLAIN) run"
            )));
        }
    }
    let (tables, _ctes) = resolve_table_references(&statement, true).map_err(|e| Error::Sql(e.to_string()))?;
    let mut names: Vec<String> = tables.iter().map(|t| t.table().to_string()).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Runs the read-only query `sql` over `warehouse` at `versions`, masked by
/// `masking` when given.
pub async fn run(
    warehouse: &Warehouse,
    sql: &str,
    versions: &Versions,
    masking: Option<&Masking>,
) -> Result<QueryResult> {
    let tables = read_only_tables(sql)?;
    let ctx = Warehouse::session();
    if let Some(m) = masking {
        let key = m.key;
        ctx.register_udf(create_udf(
            "gold_pseudonym",
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let values = arrays[0].as_string::<i32>();
                let key = key.ok_or_else(|| {
                    DataFusionError::Execution(
                        "member and patient ids are pseudonymised for this role, and GOLD_PII_KEY (the pseudonym \
                         key) is not set; set it in the environment, or use a role that sees PII"
                            .into(),
                    )
                })?;
                let out: StringArray = values
                    .iter()
                    .map(|v| v.map(|v| format!("p-{}", &blake3::keyed_hash(&key, v.as_bytes()).to_hex()[..16])))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }),
        ));
    }
    if let Versions::Version(_) = versions
        && tables.len() != 1
    {
        return Err(Error::Sql(format!(
            "--as-of-version pins one table's version, and this query reads {} tables; use --as-of-run",
            tables.len()
        )));
    }
    let mut read = BTreeMap::new();
    for table in &tables {
        let name = TableName::new(table)
            .map_err(|_| Error::NoTable { table: table.clone(), reason: "is not a warehouse table name".into() })?;
        let version = match versions {
            Versions::Version(v) => *v,
            Versions::State { state, origin } => *state.get(table).ok_or_else(|| Error::NoTable {
                table: table.clone(),
                reason: format!("does not exist as of {origin}"),
            })?,
        };
        let table_ref = warehouse.load_version(&name, version).await?;
        table_ref.update_datafusion_session(&ctx.state()).map_err(|e| Error::Sql(e.to_string()))?;
        let provider = table_ref.table_provider().await.map_err(|e| Error::Sql(e.to_string()))?;
        match masking {
            None => {
                ctx.register_table(table.as_str(), provider).map_err(|e| Error::Sql(e.to_string()))?;
            }
            Some(m) => {
                // The masked view is all the query can name: the raw table
                // is never registered.
                let raw = ctx.read_table(provider).map_err(|e| Error::Sql(e.to_string()))?;
                let mut select = Vec::new();
                for field in raw.schema().fields() {
                    let expr = match m.expr(field.name(), field.data_type()) {
                        Some(sql) => raw.parse_sql_expr(&sql).map_err(|e| Error::Sql(e.to_string()))?,
                        None => deltalake::datafusion::prelude::ident(field.name()),
                    };
                    select.push(expr.alias(field.name()));
                }
                let view = raw.select(select).map_err(|e| Error::Sql(e.to_string()))?;
                ctx.register_table(table.as_str(), view.into_view()).map_err(|e| Error::Sql(e.to_string()))?;
            }
        }
        read.insert(table.clone(), version);
    }
    let options = deltalake::datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, options).await.map_err(|e| Error::Sql(e.to_string()))?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| Error::Sql(e.to_string()))?;
    let batches = batches
        .iter()
        .map(storage::plain_batch)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Sql(e.to_string()))?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    Ok(QueryResult { batches, schema, versions: read })
}

/// The rows as a JSON array of objects (column → value).
pub fn to_json(batches: &[RecordBatch]) -> Result<serde_json::Value> {
    let mut writer = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b).map_err(|e| Error::Sql(e.to_string()))?;
    }
    writer.finish().map_err(|e| Error::Sql(e.to_string()))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Sql(e.to_string()))
}

/// `batch` with every nested column (lists, structs, maps) as its text.
fn flat(batch: &RecordBatch) -> Result<RecordBatch> {
    use deltalake::arrow::array::{Array, ArrayRef};
    use deltalake::arrow::datatypes::{Field, Schema};
    use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let f = ArrayFormatter::try_new(column.as_ref(), &options).map_err(|e| Error::Sql(e.to_string()))?;
            let text: StringArray =
                (0..column.len()).map(|i| column.is_valid(i).then(|| f.value(i).to_string())).collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::Sql(e.to_string()))
}

/// The rows as CSV with a header (nested values as their text).
pub fn to_csv(batches: &[RecordBatch]) -> Result<String> {
    let mut writer = deltalake::arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
    for b in batches {
        writer.write(&flat(b)?).map_err(|e| Error::Sql(e.to_string()))?;
    }
    String::from_utf8(writer.into_inner()).map_err(|e| Error::Sql(e.to_string()))
}

/// The rows as a text table.
pub fn pretty(batches: &[RecordBatch]) -> Result<String> {
    deltalake::arrow::util::pretty::pretty_format_batches(batches)
        .map(|t| t.to_string())
        .map_err(|e| Error::Sql(e.to_string()))
}
