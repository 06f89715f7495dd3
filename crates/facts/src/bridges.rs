//! The claims' bridges: `fact_claim_diagnoses` (a claim's diagnosis keys)
//! and `fact_claim_procedures` (its procedure codes), one row per silver
//! line of a rebuilt claim, in the claim's month partition.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Int32Type, Schema};
use storage::{Commit, RunContext, Warehouse};

use crate::read::{cast_to, silver, string_col};
use crate::write::{FactTable, Rebuilt, write_facts};
use crate::{Error, FACT_CLAIM_DIAGNOSES, FACT_CLAIM_PROCEDURES, Result, TableReport, diagnosis_key};

/// A bridge table of the claims, and the silver lines it is built from.
#[derive(Clone, Copy)]
pub(crate) struct Bridge {
    /// The bridge table.
    pub(crate) table: &'static str,
    /// The silver table of its lines.
    source: &'static str,
    /// The column of a line's code.
    value: &'static str,
    /// The value is a diagnosis code, stored as its `dim_diagnosis` key.
    as_diagnosis_key: bool,
}

/// The claims' bridges, in the order of the stage's report.
pub(crate) const BRIDGES: [Bridge; 2] = [
    Bridge { table: FACT_CLAIM_DIAGNOSES, source: "silver_claim_diagnoses", value: "code", as_diagnosis_key: true },
    Bridge { table: FACT_CLAIM_PROCEDURES, source: "silver_claim_procedures", value: "code", as_diagnosis_key: false },
];

/// Writes the bridge rows of the `rebuilt` claims to `b.table`, and
/// returns its report.
pub(crate) async fn write_bridge(
    warehouse: &Warehouse,
    run: &RunContext,
    rebuilt: &Rebuilt,
    full: bool,
    b: Bridge,
) -> Result<TableReport> {
    let started = std::time::Instant::now();
    let lines = bridge(warehouse, b, rebuilt).await?;
    tracing::debug!(table = b.table, seconds = started.elapsed().as_secs_f64(), "bridge built");
    let rows = lines.num_rows() as u64;
    let fact = FactTable { name: b.table, id: "claim_id", month: "service_month" };
    let w = write_facts(warehouse, &Commit::new(run, "facts"), &fact, lines, rebuilt, full).await?;
    tracing::debug!(table = b.table, seconds = started.elapsed().as_secs_f64(), "bridge written");
    Ok(TableReport {
        table: b.table.to_string(),
        version: w.version,
        rebuilt: rows,
        restated: 0,
        months_rewritten: w.months_rewritten,
        full_refresh: full,
    })
}

/// The bridge rows of the `rebuilt` claims: claim id, the diagnosis key
/// (or the procedure code), the line and the claim's month.
async fn bridge(warehouse: &Warehouse, b: Bridge, rebuilt: &Rebuilt) -> Result<RecordBatch> {
    let Bridge { table, source, value, as_diagnosis_key } = b;
    let (value_name, value_type) =
        if as_diagnosis_key { ("diagnosis_key", DataType::Int64) } else { ("procedure_code", DataType::Utf8) };
    let schema = Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Utf8, false),
        Field::new(value_name, value_type, false),
        Field::new("line", DataType::Int32, true),
        Field::new("service_month", DataType::Int32, false),
    ]));
    let rows = match silver(warehouse, source, &["claim_id", value, "line"]).await? {
        Some(r) if r.num_columns() > 0 => r,
        _ => return Ok(RecordBatch::new_empty(schema)),
    };
    let ids = string_col(source, &rows, "claim_id")?;
    let values = string_col(source, &rows, value)?;
    let lines = cast_to(source, &rows, "line", &DataType::Int32)?;
    let lines = lines.as_primitive::<Int32Type>();
    let (mut c, mut k, mut s, mut l, mut mo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows.num_rows() {
        if !ids.is_valid(i) || !values.is_valid(i) {
            continue;
        }
        let Some(&month) = rebuilt.get(ids.value(i)) else { continue };
        c.push(ids.value(i));
        if as_diagnosis_key {
            k.push(diagnosis_key(values.value(i)));
        } else {
            s.push(values.value(i));
        }
        l.push(lines.is_valid(i).then(|| lines.value(i)));
        mo.push(month);
    }
    let value_col: ArrayRef =
        if as_diagnosis_key { Arc::new(Int64Array::from(k)) } else { Arc::new(StringArray::from(s)) };
    RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(c)), value_col, Arc::new(Int32Array::from(l)), Arc::new(Int32Array::from(mo))],
    )
    .map_err(|e| Error::arrow(table, e))
}
