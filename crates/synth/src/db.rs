//! The legacy enrollment database: the member table as of the last day,
//! written to SQLite (the embedded default), PostgreSQL or MySQL/MariaDB.

use sqldb::Dialect;
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};

use crate::{Error, Result};

/// One row of the member table.
#[derive(Clone)]
pub(crate) struct MemberRow {
    pub(crate) member_id: String,
    pub(crate) name: String,
    pub(crate) dob: String,
    pub(crate) gender: String,
    pub(crate) region: String,
    pub(crate) plan_type: String,
    pub(crate) effective_date: String,
    pub(crate) email: String,
    pub(crate) is_active: Option<f64>,
    pub(crate) last_updated: String,
}

/// Rows per INSERT statement: 10 columns × 500 stays far below every
/// driver's bind-parameter limit.
const ROWS_PER_INSERT: usize = 500;

/// The whole table is written in one transaction: readers see the old
/// table or the complete new one, never a part.
pub(crate) struct MemberTable {
    pool: AnyPool,
    tx: Transaction<'static, Any>,
    table: String,
    dialect: Dialect,
    shown: String,
    buffer: Vec<MemberRow>,
    pub(crate) rows: u64,
}

fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl MemberTable {
    /// Connects and (re)creates the table, empty.
    pub(crate) async fn create(url: &str, table: &str) -> Result<Self> {
        let shown = sqldb::redact_url(url);
        if !valid_table_name(table) {
            return Err(Error::InvalidConfig(format!(
                "members table name {table:?} must be letters, digits and underscores"
            )));
        }
        tracing::debug!(url = %shown, table, "writing the member table");
        let sqldb::Database { pool, dialect, .. } = sqldb::connect(url).await.map_err(|e| match e {
            sqldb::Error::Connect(source) => Error::Database { url: shown.clone(), source },
            other => Error::InvalidConfig(format!("members database {shown}: {other}")),
        })?;
        let db_err = |source: sqlx::Error| Error::Database { url: shown.clone(), source };
        let ddl = match dialect {
            Dialect::Sqlite => format!(
                "CREATE TABLE {table} (MemberID TEXT PRIMARY KEY, Name TEXT NOT NULL, DOB DATE, Gender TEXT, Region TEXT, PlanType TEXT, EffectiveDate DATE, Email TEXT, IsActive REAL, LastUpdated TIMESTAMP NOT NULL)"
            ),
            Dialect::Postgres => format!(
                r#"CREATE TABLE {table} ("MemberID" VARCHAR(16) PRIMARY KEY, "Name" VARCHAR(200) NOT NULL, "DOB" DATE, "Gender" VARCHAR(8), "Region" VARCHAR(32), "PlanType" VARCHAR(32), "EffectiveDate" DATE, "Email" VARCHAR(200), "IsActive" DOUBLE PRECISION, "LastUpdated" TIMESTAMP NOT NULL)"#
            ),
            Dialect::MySql => format!(
                "CREATE TABLE {table} (MemberID VARCHAR(16) PRIMARY KEY, Name VARCHAR(200) NOT NULL, DOB DATE, Gender VARCHAR(8), Region VARCHAR(32), PlanType VARCHAR(32), EffectiveDate DATE, Email VARCHAR(200), IsActive DOUBLE, LastUpdated DATETIME NOT NULL)"
            ),
        };
        if dialect == Dialect::Sqlite {
            // A plain rollback journal leaves one file behind, and the same
            // statements always give the same bytes.
            sqlx::query("PRAGMA journal_mode = DELETE").execute(&pool).await.map_err(db_err)?;
        }
        let drop = format!("DROP TABLE IF EXISTS {table}");
        let tx = if dialect == Dialect::MySql {
            // MySQL commits implicitly around DDL, so it runs before the
            // transaction that fills the table.
            sqlx::query(AssertSqlSafe(drop.clone())).execute(&pool).await.map_err(db_err)?;
            sqlx::query(AssertSqlSafe(ddl.clone())).execute(&pool).await.map_err(db_err)?;
            pool.begin().await.map_err(db_err)?
        } else {
            let mut tx = pool.begin().await.map_err(db_err)?;
            sqlx::query(AssertSqlSafe(drop.clone())).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query(AssertSqlSafe(ddl.clone())).execute(&mut *tx).await.map_err(db_err)?;
            tx
        };
        Ok(Self {
            pool,
            tx,
            table: table.to_string(),
            dialect,
            shown,
            buffer: Vec::with_capacity(ROWS_PER_INSERT),
            rows: 0,
        })
    }

    pub(crate) async fn push(&mut self, row: MemberRow) -> Result<()> {
        self.buffer.push(row);
        if self.buffer.len() >= ROWS_PER_INSERT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut sql = match self.dialect {
            Dialect::Postgres => format!(
                r#"INSERT INTO {} ("MemberID","Name","DOB","Gender","Region","PlanType","EffectiveDate","Email","IsActive","LastUpdated") VALUES "#,
                self.table
            ),
            _ => format!(
                "INSERT INTO {} (MemberID,Name,DOB,Gender,Region,PlanType,EffectiveDate,Email,IsActive,LastUpdated) VALUES ",
                self.table
            ),
        };
        let mut n = 0;
        let mut p = |cast: Option<&str>| {
            n += 1;
            match (self.dialect, cast) {
                (Dialect::Postgres, Some(t)) => format!("CAST(${n} AS {t})"),
                (Dialect::Postgres, None) => format!("${n}"),
                _ => "?".to_string(),
            }
        };
        for i in 0..self.buffer.len() {
            if i > 0 {
                sql.push(',');
            }
            let cols = [
                p(None),
                p(None),
                p(Some("DATE")),
                p(None),
                p(None),
                p(None),
                p(Some("DATE")),
                p(None),
                p(None),
                p(Some("TIMESTAMP")),
            ];
            sql.push('(');
            sql.push_str(&cols.join(","));
            sql.push(')');
        }
        // The table name is validated; every value is a bind parameter.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for r in &self.buffer {
            query = query
                .bind(&r.member_id)
                .bind(&r.name)
                .bind(&r.dob)
                .bind(&r.gender)
                .bind(&r.region)
                .bind(&r.plan_type)
                .bind(&r.effective_date)
                .bind(&r.email)
                .bind(r.is_active)
                .bind(&r.last_updated);
        }
        query.execute(&mut *self.tx).await.map_err(|source| Error::Database { url: self.shown.clone(), source })?;
        self.rows += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    pub(crate) async fn finish(mut self) -> Result<u64> {
        self.flush().await?;
        self.tx.commit().await.map_err(|source| Error::Database { url: self.shown.clone(), source })?;
        self.pool.close().await;
        Ok(self.rows)
    }
}
