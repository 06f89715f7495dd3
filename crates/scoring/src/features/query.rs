//! The features' queries: the window's claims with what the joins say of
//! each ([`CLAIMS_SQL`], into [`RawClaims`]), and (claim, value) pairs
//! streamed batch by batch for the counts done in Rust.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Float64Type, Int32Type};
use deltalake::datafusion::prelude::SessionContext;
use futures::StreamExt;
use hashbrown::HashMap;

use super::RawClaims;
use crate::{Error, Result};

/// The claims serviced in the window (`{from}`/`{to}` are date keys), in
/// claim id order, with what the joins say of each: the provider's
/// specialty, whether the claim was serviced after the extract that showed
/// the member's coverage ended, and whether on a weekend or holiday. A
/// claim whose feed sends no service date (the claims stream, the
/// care-management feed: its key is the unknown date, -1) counts as
/// serviced on its claim date, for the window and for every date feature.
///
/// What depends on a claim's procedure codes (its signature, duplicate
/// rank, unbundling) is counted in Rust over integer ids ([`Procedures`]):
/// the same in SQL (an ordered `array_agg` per claim, a window function
/// partitioned by four string keys, and self-joins of the day's codes)
/// took two thirds of the score stage at a million members.
pub(super) const CLAIMS_SQL: &str = r#"
WITH f AS (
  SELECT *, CASE WHEN service_date_key > 0 THEN service_date_key ELSE claim_date_key END AS serviced_key
  FROM fact_claims
),
c AS (
  SELECT claim_id,
         coalesce(member_id, concat('#', claim_id)) AS member_id,
         coalesce(provider_id, '') AS provider_id,
         member_sk, serviced_key AS service_date_key, claim_date_key,
         CAST(billed_amount AS DOUBLE) AS amount,
         upper(coalesce(status, '')) AS status
  FROM f
  WHERE serviced_key BETWEEN {from} AND {to}
),
spec AS (
  SELECT provider_id, min(specialty) AS specialty
  FROM silver_provider_specialties WHERE position = 1 GROUP BY provider_id
)
SELECT c.claim_id, c.provider_id, c.member_id,
       coalesce(spec.specialty, '') AS specialty,
       c.service_date_key, c.claim_date_key,
       coalesce(c.amount, 0.0) AS amount,
       c.status,
       -- Serviced after the extract that showed the member's coverage ended.
       CASE WHEN m.is_active = false AND dt.date > CAST(m.last_updated AS DATE) THEN 1.0 ELSE 0.0 END AS after_coverage,
       CASE WHEN coalesce(dt.is_weekend, false) OR coalesce(dt.is_federal_holiday, false) THEN 1.0 ELSE 0.0 END AS weekend
FROM c
LEFT JOIN spec ON spec.provider_id = c.provider_id
LEFT JOIN dim_members m ON m.member_sk = c.member_sk
LEFT JOIN dim_date dt ON dt.date_key = c.service_date_key
ORDER BY c.claim_id
"#;

/// Streams the `claim_id` and `value` columns of `sql`, calling `each`
/// with the claim's index for every row of a claim `claim_index` holds.
pub(super) async fn stream_pairs(
    ctx: &SessionContext,
    sql: &str,
    value: &str,
    claim_index: &HashMap<&str, u32>,
    mut each: impl FnMut(u32, &str),
) -> Result<()> {
    stream_strings(ctx, sql, "claim_id", value, |claim, value| {
        if let Some(&claim) = claim_index.get(claim) {
            each(claim, value);
        }
    })
    .await
}

/// Streams the `first` and `second` columns of `sql` as strings, calling
/// `each` for every row whose `first` is not NULL (a NULL `second` is "").
pub(super) async fn stream_strings(
    ctx: &SessionContext,
    sql: &str,
    first: &str,
    second: &str,
    mut each: impl FnMut(&str, &str),
) -> Result<()> {
    let frame = ctx.sql(sql).await.map_err(|e| Error::query("features", e))?;
    let mut stream = frame.execute_stream().await.map_err(|e| Error::query("features", e))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::query("features", e))?;
        let keys = cast(column(&batch, first)?, &DataType::Utf8).map_err(|e| Error::arrow(first, e))?;
        let values = cast(column(&batch, second)?, &DataType::Utf8).map_err(|e| Error::arrow(second, e))?;
        let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
        for i in 0..batch.num_rows() {
            if keys.is_valid(i) {
                each(keys.value(i), if values.is_valid(i) { values.value(i) } else { "" });
            }
        }
    }
    Ok(())
}

/// Every batch of `sql`.
pub(super) async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let frame = ctx.sql(sql).await.map_err(|e| Error::query("features", e))?;
    frame.collect().await.map_err(|e| Error::query("features", e))
}

/// Column `name` of `batch`.
fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    batch.column_by_name(name).ok_or_else(|| Error::Column { column: name.to_string(), reason: "is missing".into() })
}

/// Column `name` as text, "" for NULL.
fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let col = cast(column(batch, name)?, &DataType::Utf8).map_err(|e| Error::arrow(name, e))?;
    let col = col.as_string::<i32>();
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i).to_string() } else { String::new() }).collect())
}

/// Column `name` as floats, 0 for NULL.
fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let col = cast(column(batch, name)?, &DataType::Float64).map_err(|e| Error::arrow(name, e))?;
    let col = col.as_primitive::<Float64Type>();
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i) } else { 0.0 }).collect())
}

/// Column `name` as integers, -1 for NULL.
fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<i32>> {
    let col = cast(column(batch, name)?, &DataType::Int32).map_err(|e| Error::arrow(name, e))?;
    let col = col.as_primitive::<Int32Type>();
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i) } else { -1 }).collect())
}

/// The columns [`CLAIMS_SQL`] returns; the others are counted later.
pub(super) fn raw_claims(batches: &[RecordBatch]) -> Result<RawClaims> {
    let mut r = RawClaims::default();
    for b in batches {
        r.claim_id.extend(strings(b, "claim_id")?);
        r.provider_id.extend(strings(b, "provider_id")?);
        r.member_id.extend(strings(b, "member_id")?);
        r.specialty.extend(strings(b, "specialty")?);
        r.service_date_key.extend(ints(b, "service_date_key")?);
        r.claim_date_key.extend(ints(b, "claim_date_key")?);
        r.amount.extend(floats(b, "amount")?);
        r.status.extend(strings(b, "status")?);
        r.after_coverage.extend(floats(b, "after_coverage")?);
        r.weekend.extend(floats(b, "weekend")?);
    }
    Ok(r)
}
