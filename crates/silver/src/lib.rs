//! Silver: bronze batches turned into typed, validated, de-duplicated rows
//! of one common data model, with every rejected row kept and counted.
//!
//! Each silver table is declared in `models/silver/<table>.toml`
//! ([`TableModel`]): SQL expressions that type and normalise each bronze
//! source, named expectations with an [`Action`] (`warn`, `drop`,
//! `quarantine`, `fail`) and an optional threshold, parents for
//! referential integrity, and a latest-wins ordering for
//! de-duplication. [`build_silver`] processes the bronze batches not yet
//! processed, for every table of a [`SilverCatalog`], and writes:
//!
//! - `silver_<t>`: one row per key, with `_lineage` (every contributing
//!   bronze row), `_dq_warnings`, `_is_deleted` and the winning row's
//!   `_batch_id`, `_source_file` and `_source_row`;
//! - `quarantine_silver_<t>`: each rejected row with every rule it failed,
//!   its batch and its raw bronze row as JSON;
//! - `dq_results`: one row per batch, table and rule;
//! - the derived tables (e.g. flattened provider specialties).
//!
//! For every batch, rows in silver lineage + quarantined + exact
//! duplicates + dropped = bronze rows: [`SilverReport`] gives each
//! table's [`BatchAccount`]s and [`RuleCount`]s. A catch-up processes the
//! pending batches one landing day at a time ([`silver_rounds`],
//! [`build_silver_round`]).
//!
//! ```no_run
//! # async fn run(warehouse: &storage::Warehouse, run: &storage::RunContext) -> silver::Result<()> {
//! let catalog = silver::SilverCatalog::default_catalog()?;
//! let report = silver::build_silver(warehouse, run, &catalog).await?;
//! for table in &report.tables {
//!     println!("{}: {} rows", table.table, table.rows);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod accounts;
mod bronze;
mod cluster;
mod dedup;
mod dq;
mod error;
mod keyed;
mod model;
mod plan;
mod quarantine;
mod report;
mod rounds;
mod rules;
mod schema;
mod stage;
mod state;
mod udf;
mod write;

pub use dq::DQ_RESULTS_TABLE;
pub use error::{Error, Result};
pub use model::{Action, ColumnModel, Derived, Expectation, OnMissing, Parent, SilverCatalog, SourceModel, TableModel};
pub use report::{BatchAccount, RuleCount, SilverReport, TableReport};
pub use rounds::{Round, silver_rounds};
pub use stage::{build_silver, build_silver_round};
