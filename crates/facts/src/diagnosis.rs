//! `dim_diagnosis`: the official ICD-10-CM list, the insurer's own
//! reference codes, and any other code a claim carries.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{BooleanArray, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

use crate::{Error, Result};

/// The diagnosis key of a normalised code (upper case, no dot): 63 bits of
/// BLAKE3, so the same code has the same key in every build.
pub fn diagnosis_key(code: &str) -> i64 {
    let digest = blake3::hash(format!("gold.dim_diagnosis:{code}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    (u64::from_le_bytes(first) >> 1) as i64
}

pub(crate) fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("diagnosis_key", DataType::Int64, false),
        Field::new("code", DataType::Utf8, true),
        Field::new("code_dotted", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("official_description", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("is_billable", DataType::Boolean, true),
        Field::new("in_reference", DataType::Boolean, true),
    ]))
}

#[derive(Default)]
struct Row {
    dotted: Option<String>,
    official: Option<String>,
    reference: Option<String>,
}

/// The dimension: one row per code in the official list, the reference
/// (`(code, code_dotted, description)` from `silver_diagnosis_ref`) or
/// `other` codes seen on claims, plus the unknown row ([`merge::UNKNOWN_SK`])
/// for claims without a diagnosis. `description` is the insurer's when it
/// has one, else the official one.
pub(crate) fn dim_diagnosis(
    reference: &[(String, Option<String>, Option<String>)],
    other: impl IntoIterator<Item = String>,
) -> Result<RecordBatch> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for c in reference::icd10cm() {
        let row = rows.entry(c.code.clone()).or_default();
        row.dotted = Some(c.dotted.clone());
        row.official = Some(c.description.clone());
    }
    for (code, dotted, description) in reference {
        let row = rows.entry(code.clone()).or_default();
        if row.dotted.is_none() {
            row.dotted = dotted.clone();
        }
        row.reference = description.clone();
    }
    for code in other {
        rows.entry(code).or_default();
    }
    let n = rows.len() + 1;
    let mut keys = Vec::with_capacity(n);
    let mut codes: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut dotted: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut description: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut official: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut category: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut billable = Vec::with_capacity(n);
    let mut in_reference = Vec::with_capacity(n);
    keys.push(merge::UNKNOWN_SK);
    codes.push(None);
    dotted.push(None);
    description.push(Some("unknown: the claim has no diagnosis code"));
    official.push(None);
    category.push(None);
    billable.push(None);
    in_reference.push(None);
    for (code, row) in &rows {
        keys.push(diagnosis_key(code));
        codes.push(Some(code));
        dotted.push(row.dotted.as_deref());
        description.push(row.reference.as_deref().or(row.official.as_deref()));
        official.push(row.official.as_deref());
        category.push(code.get(..3));
        billable.push(Some(row.official.is_some()));
        in_reference.push(Some(row.reference.is_some()));
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(StringArray::from(codes)),
            Arc::new(StringArray::from(dotted)),
            Arc::new(StringArray::from(description)),
            Arc::new(StringArray::from(official)),
            Arc::new(StringArray::from(category)),
            Arc::new(BooleanArray::from(billable)),
            Arc::new(BooleanArray::from(in_reference)),
        ],
    )
    .map_err(|e| Error::arrow("dim_diagnosis", e))
}
