//! `gold sql`: read-only SQL over the warehouse with DataFusion, at the
//! table versions of a run, with PII masked for roles that may not see it.
//!
//! Only the tables a query names are registered, each at the version the
//! run chose (by default the last successful run's, so a build that is
//! running or failed half-way is never seen). With a [`Masking`], each
//! table is registered as a view that hides PII columns, reduces dates of
//! birth to the year and replaces member and patient ids by keyed BLAKE3
//! pseudonyms, so no query can reach the raw values.
//!
//! - [`run`] checks a query ([`read_only_tables`]), registers its tables
//!   at their [`Versions`] and returns a [`QueryResult`];
//! - [`to_json`], [`to_csv`] and [`pretty`] write a result out.
//!
//! ```no_run
//! # async fn show(warehouse: &storage::Warehouse) -> query::Result<()> {
//! let state = [("gold_claim_outcomes".to_string(), 3)].into();
//! let versions = query::Versions::State { state, origin: "run 3 (build, 2025-01-04)".into() };
//! let sql = "SELECT claim_month, sum(claims) AS claims FROM gold_claim_outcomes GROUP BY claim_month";
//! let result = query::run(warehouse, sql, &versions, None).await?;
//! println!("{}", query::pretty(&result.batches)?);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod format;
mod masking;
mod run;

pub use error::{Error, Result};
pub use format::{pretty, to_csv, to_json};
pub use masking::Masking;
pub use run::{QueryResult, Versions, read_only_tables, run};
