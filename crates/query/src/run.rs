//! Running one read-only query: checking that it is one, registering the
//! tables it names at the chosen versions (as masked views for a role that
//! may not see PII), and collecting its rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::sql::parser::{DFParser, Statement as DfStatement};
use deltalake::datafusion::sql::resolve::resolve_table_references;
use deltalake::datafusion::sql::sqlparser::ast::Statement;
use storage::{TableName, Warehouse};

use crate::{Error, Masking, Result};

/// Which versions a query reads.
#[derive(Clone, Debug)]
pub enum Versions {
    /// Each table at the version in this state (a run's); tables outside it
    /// do not exist for the query.
    State {
        /// Table name → version.
        state: BTreeMap<String, i64>,
        /// Which run the state is, for messages ("run 3 (build, 2025-01-04)").
        origin: String,
    },
    /// The one table the query names, at this version.
    Version(i64),
}

/// A query's result.
#[derive(Debug)]
pub struct QueryResult {
    /// The rows (nested and view types as plain Arrow types).
    pub batches: Vec<RecordBatch>,
    /// The columns, also when there are no rows.
    pub schema: deltalake::arrow::datatypes::SchemaRef,
    /// The tables read and their versions.
    pub versions: BTreeMap<String, i64>,
}

/// Checks that `sql` is one read-only query (SELECT, WITH, VALUES or
/// EXPLAIN of one) and returns the tables it names.
pub fn read_only_tables(sql: &str) -> Result<Vec<String>> {
    let mut statements = DFParser::parse_sql(sql).map_err(Error::sql)?;
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
    let (tables, _ctes) = resolve_table_references(&statement, true).map_err(Error::sql)?;
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
        ctx.register_udf(m.pseudonym_udf());
    }
    if let Versions::Version(_) = versions
        && tables.len() != 1
    {
        return Err(Error::OneVersion { tables: tables.len() });
    }
    let mut read = BTreeMap::new();
    for table in &tables {
        let version = register(warehouse, &ctx, table, versions, masking).await?;
        read.insert(table.clone(), version);
    }
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, options).await.map_err(Error::sql)?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(Error::sql)?;
    let batches = batches
        .iter()
        .map(storage::plain_batch)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::arrow("the result as plain Arrow types"))?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    Ok(QueryResult { batches, schema, versions: read })
}

/// Registers `table` with `ctx` at its version in `versions` (as a masked
/// view with `masking`); returns the version.
async fn register(
    warehouse: &Warehouse,
    ctx: &SessionContext,
    table: &str,
    versions: &Versions,
    masking: Option<&Masking>,
) -> Result<i64> {
    let name = TableName::new(table)
        .map_err(|_| Error::NoTable { table: table.to_string(), reason: "is not a warehouse table name".into() })?;
    let version = match versions {
        Versions::Version(v) => *v,
        Versions::State { state, origin } => *state.get(table).ok_or_else(|| Error::NoTable {
            table: table.to_string(),
            reason: format!("does not exist as of {origin}"),
        })?,
    };
    let table_ref = warehouse.load_version(&name, version).await?;
    table_ref
        .update_datafusion_session(&ctx.state())
        .map_err(|e| Error::Delta { table: table.to_string(), source: Box::new(e) })?;
    let register_err = |e| Error::Register { table: table.to_string(), source: Box::new(e) };
    let provider = table_ref.table_provider().await.map_err(register_err)?;
    let Some(m) = masking else {
        ctx.register_table(table, provider).map_err(register_err)?;
        return Ok(version);
    };
    // The masked view is all the query can name: the raw table is never
    // registered.
    let raw = ctx.read_table(provider).map_err(register_err)?;
    let mut select = Vec::new();
    for field in raw.schema().fields() {
        let expr = match m.expr(field.name(), field.data_type()) {
            Some(sql) => raw.parse_sql_expr(&sql).map_err(register_err)?,
            None => deltalake::datafusion::prelude::ident(field.name()),
        };
        select.push(expr.alias(field.name()));
    }
    let view = raw.select(select).map_err(register_err)?;
    ctx.register_table(table, view.into_view()).map_err(register_err)?;
    Ok(version)
}
