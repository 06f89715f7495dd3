//! Reading a table of a SQL database (SQLite, PostgreSQL, MySQL/MariaDB)
//! into bronze rows. Rows stream from the server in chunks; every value is
//! read as text and typed like a CSV field, so the three databases give the
//! same bronze rows.

use futures::TryStreamExt;
use sqldb::Dialect;
use sqlx::{AssertSqlSafe, Row};

use deltalake::arrow::array::RecordBatch;

use crate::bronze::{BronzeBuilder, parse_timestamp};
use crate::model::{LoadMode, SourceDef};
use crate::{Error, Result};

/// What a SQL read returned.
pub(crate) struct SqlRead {
    pub(crate) rows: u64,
    /// The largest watermark value read, as text.
    pub(crate) watermark: Option<String>,
    /// The URL, password removed.
    pub(crate) shown_url: String,
    /// BLAKE3 of every value read, to tell an unchanged full load.
    pub(crate) content_hash: String,
}

/// Sends `batches` to `lanes` in turn.
pub(crate) async fn send_all(lanes: &[storage::Lane], batches: Vec<RecordBatch>) -> Result<()> {
    for (i, batch) in batches.into_iter().enumerate() {
        lanes[i % lanes.len()].send(batch).await?;
    }
    Ok(())
}

/// The query of `source`'s table in `dialect`: every declared column as
/// text, and with a `watermark`, in its order, past a bind parameter when
/// there is a value to start `after`.
fn select(source: &SourceDef, dialect: Dialect, watermark: Option<&str>, after: bool) -> String {
    let text_type = if dialect == Dialect::MySql { "CHAR" } else { "TEXT" };
    let columns: Vec<String> =
        source.columns.iter().map(|c| format!("CAST({} AS {text_type})", dialect.quote(&c.name))).collect();
    let table = source.table.as_deref().unwrap_or_default();
    let table_sql = table.split('.').map(|part| dialect.quote(part)).collect::<Vec<_>>().join(".");
    let mut sql = format!("SELECT {} FROM {table_sql}", columns.join(", "));
    if let Some(w) = watermark {
        let col = dialect.quote(w);
        if after {
            let param = match dialect {
                Dialect::Postgres => "CAST($1 AS TIMESTAMP)",
                _ => "?",
            };
            sql.push_str(&format!(" WHERE {col} > {param}"));
        }
        sql.push_str(&format!(" ORDER BY {col}"));
    }
    sql
}

/// Reads `source` from the database at `url`, past `since` for incremental
/// loads, into `out`. With `lanes`, each batch goes to the next lane as
/// soon as it is cut, so memory holds a batch or two whatever the table's
/// size; without, the batches stay in `out`.
pub(crate) async fn read_table(
    source: &SourceDef,
    url: &str,
    since: Option<&str>,
    out: &mut BronzeBuilder,
    lanes: &[storage::Lane],
) -> Result<SqlRead> {
    let shown = sqldb::redact_url(url);
    let fail = |what: String, e: sqlx::Error| Error::SqlRead {
        source_name: source.name.clone(),
        location: shown.clone(),
        what,
        source: Box::new(e),
    };
    let sqldb::Database { pool, dialect, .. } = sqldb::connect(url).await.map_err(|e| {
        let (source_name, location) = (source.name.clone(), shown.clone());
        match e.is_transient() {
            true => Error::Unavailable { source_name, location, source: e },
            false => Error::Database { source_name, location, source: e },
        }
    })?;

    let table = source.table.as_deref().unwrap_or_default();
    let watermark = source.watermark.as_deref().filter(|_| source.load == LoadMode::Incremental);
    let wm_index = watermark.and_then(|w| source.columns.iter().position(|c| c.name == w));
    // Identifiers are quoted and come from the validated model; the
    // watermark is a bind parameter.
    let mut query = sqlx::query(AssertSqlSafe(select(source, dialect, watermark, since.is_some())));
    if let (Some(_), Some(since)) = (watermark, since) {
        query = query.bind(since.to_string());
    }
    let location = format!("sql:{table}");
    let mut rows = query.fetch(&pool);
    let mut count: u64 = 0;
    let mut sent = 0usize;
    let mut max_wm: Option<(i64, String)> = None;
    let mut hasher = blake3::Hasher::new();
    while let Some(row) = rows.try_next().await.map_err(|e| fail(format!("reading {table}"), e))? {
        count += 1;
        let mut errors = Vec::new();
        let mut values: Vec<Option<String>> = Vec::with_capacity(source.columns.len());
        for (i, c) in source.columns.iter().enumerate() {
            let v: Option<String> = row.try_get(i).map_err(|e| fail(format!("column {}", c.name), e))?;
            match &v {
                Some(text) => hasher.update(&(text.len() as u64).to_le_bytes()).update(text.as_bytes()),
                None => hasher.update(&u64::MAX.to_le_bytes()),
            };
            if !out.text(i, v.as_deref()) {
                errors.push(format!(
                    "column {}: {:?} is not a {}",
                    c.name,
                    v.as_deref().unwrap_or(""),
                    c.column_type()
                ));
            }
            values.push(v);
        }
        if let Some(i) = wm_index
            && let Some(text) = values[i].as_deref()
            && let Some(t) = parse_timestamp(text)
            && max_wm.as_ref().is_none_or(|(m, _)| t > *m)
        {
            max_wm = Some((t, text.to_string()));
        }
        let (rescued, error) = if errors.is_empty() {
            (None, None)
        } else {
            let raw: serde_json::Map<String, serde_json::Value> = source
                .columns
                .iter()
                .zip(&values)
                .map(|(c, v)| (c.name.clone(), v.clone().map_or(serde_json::Value::Null, serde_json::Value::String)))
                .collect();
            (Some(serde_json::Value::Object(raw).to_string()), Some(errors.join("; ")))
        };
        out.end_row(&location, count, rescued.as_deref(), error.as_deref())?;
        if !lanes.is_empty() {
            let cut = out.take_batches();
            if !cut.is_empty() {
                for batch in cut {
                    lanes[sent % lanes.len()].send(batch).await?;
                    sent += 1;
                }
            }
        }
    }
    drop(rows);
    pool.close().await;
    Ok(SqlRead {
        rows: count,
        watermark: max_wm.map(|(_, t)| t).or_else(|| since.map(str::to_string)),
        shown_url: shown,
        content_hash: hasher.finalize().to_hex().to_string(),
    })
}
