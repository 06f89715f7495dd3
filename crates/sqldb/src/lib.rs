//! Connections to the SQL databases gold reads and writes: SQLite (the
//! embedded default), PostgreSQL and MySQL/MariaDB, all through sqlx's
//! `Any` driver. The URL's password never reaches a message or a log:
//! [`redact_url`] is what gets shown, and statement logging is off.
//!
//! ```no_run
//! # async fn run() -> Result<(), sqldb::Error> {
//! let db = sqldb::connect("postgres://gold:secret@127.0.0.1/test").await?;
//! assert_eq!(db.shown_url, "postgres://gold:***@127.0.0.1/test");
//! let column = db.dialect.quote("MemberID");
//! # let _ = column;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::ConnectOptions;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

/// The SQL dialects gold speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (`sqlite:`), the embedded default.
    Sqlite,
    /// PostgreSQL (`postgres:` or `postgresql:`).
    Postgres,
    /// MySQL or MariaDB (`mysql:` or `mariadb:`).
    MySql,
}

impl Dialect {
    /// The dialect of a URL, by its scheme.
    pub fn of(url: &str) -> Option<Self> {
        match url.split(':').next().unwrap_or("") {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            _ => None,
        }
    }

    /// `name` quoted as an identifier (case kept).
    pub fn quote(self, name: &str) -> String {
        match self {
            Self::MySql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }
}

/// Why a database could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL's scheme is not one gold speaks.
    #[error("unsupported scheme {scheme:?} (use sqlite:, postgres: or mysql:)")]
    UnsupportedScheme {
        /// The scheme the URL gave (before the first `:`).
        scheme: String,
    },
    /// The server refused or did not answer.
    #[error("cannot connect: {0}")]
    Connect(#[source] sqlx::Error),
}

impl Error {
    /// Whether trying again later may succeed: the server did not answer,
    /// refused or dropped the connection, or the pool timed out. A refused
    /// login or an unknown database is not transient.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connect(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed))
    }
}

/// `url` with any password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// An open database: a one-connection pool, its dialect and its URL
/// without the password.
pub struct Database {
    /// The pool, of one connection.
    pub pool: AnyPool,
    /// The database's dialect, by the URL's scheme.
    pub dialect: Dialect,
    /// The URL with its password replaced by `***`, safe to print.
    pub shown_url: String,
}

/// Connects to `url` (`sqlite://…`, `postgres://…`, `mysql://…` or
/// `mariadb://…`), waiting at most ten seconds for the server.
pub async fn connect(url: &str) -> Result<Database, Error> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::of(url)
        .ok_or_else(|| Error::UnsupportedScheme { scheme: url.split(':').next().unwrap_or("").to_string() })?;
    let url_for_driver =
        if dialect == Dialect::MySql { url.replacen("mariadb:", "mysql:", 1) } else { url.to_string() };
    let options = AnyConnectOptions::from_str(&url_for_driver).map_err(Error::Connect)?.disable_statement_logging();
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(Error::Connect)?;
    Ok(Database { pool, dialect, shown_url: redact_url(url) })
}
