//! The conformed dimensions the facts point at, written whole when their
//! content changed: `dim_date` ([`crate::date`]) over every year a fact
//! falls in, and `dim_diagnosis` ([`crate::diagnosis`]) over the official
//! ICD-10-CM list, the insurer's reference and every code a claim carries.

use std::collections::BTreeSet;

use deltalake::arrow::array::{Array, RecordBatch, StringArray};
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::read::{silver, string_col};
use crate::{DIM_DATE, DIM_DIAGNOSIS, Error, FactsReport, Result, TableReport, date, diagnosis};

/// Writes `batch` over `table` unless its content equals what the
/// table's last commit recorded (a BLAKE3 digest in the commit info).
async fn write_if_changed(
    warehouse: &Warehouse,
    run: &RunContext,
    table: &str,
    batch: RecordBatch,
    report: &mut FactsReport,
) -> Result<()> {
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&batch).map_err(|e| Error::arrow(table, e))?;
        w.finish().map_err(|e| Error::arrow(table, e))?;
    }
    let digest = blake3::hash(&buf).to_hex().to_string();
    let name = TableName::new(table)?;
    let last = warehouse.commit_metadata(&name, 1).await?;
    let rows = batch.num_rows() as u64;
    let version = if last.first().and_then(|m| m.get("gold.content_digest")).and_then(|v| v.as_str()) == Some(&digest) {
        None
    } else {
        let commit = Commit::new(run, "facts").with_metadata("content_digest", serde_json::json!(digest));
        Some(warehouse.overwrite(&name, vec![batch], &commit).await?)
    };
    report.tables.push(TableReport {
        table: table.to_string(),
        version,
        rebuilt: if version.is_some() { rows } else { 0 },
        full_refresh: version.is_some(),
        ..TableReport::default()
    });
    Ok(())
}

/// `dim_date` over every year a fact falls in (and the run's), and
/// `dim_diagnosis` over the official list, the reference and every code a
/// claim carries.
pub(crate) async fn conformed_dims(
    warehouse: &Warehouse,
    run: &RunContext,
    years: &BTreeSet<i32>,
    report: &mut FactsReport,
) -> Result<()> {
    let (first, last) = (years.first().copied().unwrap_or(2000), years.last().copied().unwrap_or(2000));
    write_if_changed(warehouse, run, DIM_DATE, date::dim_date(first, last)?, report).await?;
    let mut reference = Vec::new();
    if let Some(r) = silver(warehouse, "silver_diagnosis_ref", &["code", "code_dotted", "description"]).await?
        && r.num_columns() > 0
    {
        let t = "silver_diagnosis_ref";
        let (code, dotted, desc) =
            (string_col(t, &r, "code")?, string_col(t, &r, "code_dotted")?, string_col(t, &r, "description")?);
        for i in 0..r.num_rows() {
            if code.is_valid(i) {
                let opt = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
                reference.push((code.value(i).to_string(), opt(&dotted), opt(&desc)));
            }
        }
    }
    let mut other = BTreeSet::new();
    if let Some(r) = silver(warehouse, "silver_claim_diagnoses", &["code"]).await?
        && r.num_columns() > 0
    {
        let codes = string_col("silver_claim_diagnoses", &r, "code")?;
        other.extend(codes.iter().flatten().map(str::to_string));
    }
    write_if_changed(warehouse, run, DIM_DIAGNOSIS, diagnosis::dim_diagnosis(&reference, other)?, report).await
}
