//! Catch-up rounds: the pending bronze batches cut by landing day, so
//! that silver processes each day's batches before the next day's, as the
//! nightly runs would have.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Date32Type};
use storage::{TableName, Warehouse};

use crate::Result;
use crate::bronze::{app_id, batch_seq};
use crate::error::{arrow_err, sql_err};

/// One landing day of a catch-up: the bronze batches read from that day's
/// folder (or, for a SQL source, ingested on that day), which silver
/// processes before the next day's, as the nightly runs would have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// The landing day; `None` for every pending batch at once.
    pub day: Option<NaiveDate>,
    /// The last batch to process, by (silver table, bronze table), when
    /// bounded; a pair missing from it has nothing in this round.
    upto: Option<HashMap<(String, String), i64>>,
}

impl Round {
    /// Every pending batch, in one pass.
    pub fn everything() -> Self {
        Self { day: None, upto: None }
    }

    /// How far to read `bronze` for `table`: `None` when this round has
    /// nothing of it, `Some(None)` for every pending batch, `Some(Some(b))`
    /// up to batch `b`.
    pub(crate) fn bound(&self, table: &str, bronze: &str) -> Option<Option<i64>> {
        match &self.upto {
            None => Some(None),
            Some(upto) => upto.get(&(table.to_string(), bronze.to_string())).map(|b| Some(*b)),
        }
    }
}

/// A pending batch: (silver table, bronze table), its sequence and its
/// landing day.
type Pending = ((String, String), i64, NaiveDate);

/// The rounds that process what bronze holds beyond what silver has
/// processed, oldest landing day first: one per landing day of the pending
/// batches. A batch's day is its files' day folder (the newest, for a
/// batch ingested before batches were cut per day), or its `_ingest_date`
/// for a SQL source. A source's batches are still processed in their
/// order: a round takes every batch up to its day's last one. The last
/// round is unbounded, so it also takes any batch that came after the
/// rounds were planned. Zero or one round means one pass over everything.
pub async fn silver_rounds(warehouse: &Warehouse, catalog: &crate::SilverCatalog) -> Result<Vec<Round>> {
    let mut pending: Vec<Pending> = Vec::new();
    for model in catalog.tables() {
        let t = model.table.as_str();
        let name = TableName::new(t)?;
        for source in &model.sources {
            pending_batches(warehouse, t, &name, &source.bronze, &mut pending).await?;
        }
    }
    let days: BTreeSet<NaiveDate> = pending.iter().map(|(_, _, d)| *d).collect();
    let last = days.last().copied();
    Ok(days
        .iter()
        .map(|&day| {
            let upto = (Some(day) != last).then(|| {
                let mut upto: HashMap<(String, String), i64> = HashMap::new();
                for (pair, seq, _) in pending.iter().filter(|(_, _, d)| *d <= day) {
                    let bound = upto.entry(pair.clone()).or_insert(*seq);
                    *bound = (*bound).max(*seq);
                }
                upto
            });
            Round { day: Some(day), upto }
        })
        .collect())
}

/// Adds to `pending` the batches of `source_bronze` that silver table `t`
/// (`name`) has not processed, with their landing day.
async fn pending_batches(
    warehouse: &Warehouse,
    t: &str,
    name: &TableName,
    source_bronze: &str,
    pending: &mut Vec<Pending>,
) -> Result<()> {
    let bronze = TableName::new(source_bronze)?;
    let ctx = storage::Warehouse::session();
    if warehouse.register(&ctx, &bronze, None).await?.is_none() {
        return Ok(());
    }
    let done = warehouse.txn_version(name, &app_id(source_bronze)).await?;
    let prefix = source_bronze.strip_prefix("bronze_").unwrap_or(source_bronze);
    let filter = done.map_or_else(String::new, |seq| format!("WHERE _batch_id > '{prefix}-{seq:06}'"));
    let sql = format!(
        "SELECT _batch_id, MAX(CAST(_source_file AS VARCHAR)) AS f, MAX(_ingest_date) AS d \
         FROM \"{bronze}\" {filter} GROUP BY _batch_id"
    );
    let what = format!("the pending batches of {bronze}");
    let frame = ctx.sql(&sql).await.map_err(sql_err(t, what.clone()))?;
    for b in frame.collect().await.map_err(sql_err(t, what))? {
        let as_type = |i: usize, to: &DataType| cast(b.column(i), to).map_err(arrow_err(t));
        let (ids, files, dates) =
            (as_type(0, &DataType::Utf8)?, as_type(1, &DataType::Utf8)?, as_type(2, &DataType::Date32)?);
        let (ids, files) = (ids.as_string::<i32>(), files.as_string::<i32>());
        let dates = dates.as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            let Some(seq) = ids.is_valid(i).then(|| batch_seq(ids.value(i))).flatten() else { continue };
            let folder = files
                .is_valid(i)
                .then(|| files.value(i).get(..10).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()))
                .flatten();
            let Some(day) = folder.or_else(|| dates.is_valid(i).then(|| dates.value_as_date(i)).flatten()) else {
                continue;
            };
            pending.push(((t.to_string(), source_bronze.to_string()), seq, day));
        }
    }
    Ok(())
}
