//! `dq_results`: one row per batch, table and rule (step 9 of a table's
//! plan, see [`crate::plan`]), and the per-rule totals of the report.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};

use crate::Result;
use crate::accounts::{Dispositions, Fates};
use crate::error::arrow_err;
use crate::plan::Plan;
use crate::report::RuleCount;
use crate::schema::timestamp_type;

/// The table of per-batch, per-rule results.
pub const DQ_RESULTS_TABLE: &str = "dq_results";

/// One `dq_results` row: bronze table, batch, rule, action, rows
/// evaluated, rows failed and the rule's threshold.
pub(crate) type DqRow = (String, String, String, String, u64, u64, Option<f64>);

fn dq_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Int64, true),
        Field::new("logical_date", DataType::Date32, true),
        Field::new("table", DataType::Utf8, true),
        Field::new("bronze_table", DataType::Utf8, true),
        Field::new("batch_id", DataType::Utf8, true),
        Field::new("rule", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("rows_evaluated", DataType::Int64, true),
        Field::new("rows_failed", DataType::Int64, true),
        Field::new("fail_above", DataType::Float64, true),
        Field::new("recorded_at", timestamp_type(), true),
    ]))
}

/// Step 9: per batch, each rule checked, the exact and conflicting
/// duplicates, and the dropped rows; sorted by bronze table, batch and
/// rule.
pub(crate) fn dq_rows(plan: &Plan<'_>, counts: &Dispositions, fates: &Fates) -> Vec<DqRow> {
    let mut dq_rows: Vec<DqRow> = Vec::new();
    for &b in &counts.by_batch {
        let (bronze, batch) = (&counts.accounts[b].bronze_table, &counts.accounts[b].batch_id);
        for (r, &(evaluated, failed)) in counts.rule_stats[b].iter().enumerate() {
            if evaluated == 0 {
                continue;
            }
            let rule = &plan.rules[r];
            dq_rows.push((
                bronze.clone(),
                batch.clone(),
                rule.name.clone(),
                rule.action.as_str().to_string(),
                evaluated,
                failed,
                rule.fail_above,
            ));
        }
        let (evaluated, dups, conflicts) = fates.dup_stats[b];
        if evaluated > 0 {
            dq_rows.push((
                bronze.clone(),
                batch.clone(),
                "exact_duplicate".into(),
                "count".into(),
                evaluated,
                dups,
                None,
            ));
            dq_rows.push((
                bronze.clone(),
                batch.clone(),
                "conflicting_duplicate".into(),
                "quarantine".into(),
                evaluated,
                conflicts,
                None,
            ));
        }
        let acct = &counts.accounts[b];
        dq_rows.push((
            bronze.clone(),
            batch.clone(),
            "dropped".into(),
            "drop".into(),
            acct.bronze_rows,
            acct.dropped,
            None,
        ));
    }
    dq_rows.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    dq_rows
}

/// The `dq_results` rows of the plan's table, as a batch.
pub(crate) fn dq_batch(plan: &Plan<'_>, rows: &[DqRow]) -> Result<RecordBatch> {
    let (t, run, now) = (plan.table(), plan.run, plan.now);
    let n = rows.len();
    let date = Date32Type::from_naive_date(run.clock.logical_date());
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![run.id.0; n])),
        Arc::new(Date32Array::from(vec![date; n])),
        Arc::new(StringArray::from(vec![t; n])),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.3))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4 as i64))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.5 as i64))),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.6).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
    ];
    RecordBatch::try_new(dq_schema(), cols).map_err(arrow_err(t))
}

/// Each rule's counts over the batches of `rows`, by rule name.
pub(crate) fn rule_counts(rows: &[DqRow]) -> Vec<RuleCount> {
    let mut totals: BTreeMap<String, RuleCount> = BTreeMap::new();
    for (_, _, rule, action, evaluated, failed, _) in rows {
        let e = totals.entry(rule.clone()).or_insert_with(|| RuleCount {
            rule: rule.clone(),
            action: action.clone(),
            rows_evaluated: 0,
            rows_failed: 0,
        });
        e.rows_evaluated += evaluated;
        e.rows_failed += failed;
    }
    totals.into_values().collect()
}
