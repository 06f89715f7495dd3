//! How a role that may not see PII sees a table: the SQL expression that
//! stands for each masked column, and the keyed pseudonym function.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{AsArray, StringArray};
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::common::DataFusionError;
use deltalake::datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// How a role sees PII.
#[derive(Clone, Debug, Default)]
pub struct Masking {
    /// Columns (lower-cased names) whose values are hidden.
    pub hidden: HashSet<String>,
    /// Columns (lower-cased) reduced to their year: dates of birth.
    pub year_only: HashSet<String>,
    /// Columns (lower-cased) replaced by keyed pseudonyms: member and
    /// patient ids, so that joins still match.
    pub pseudonymised: HashSet<String>,
    /// The pseudonym key (from the environment), when set.
    pub key: Option<[u8; 32]>,
}

impl Masking {
    /// The key from the secret `text` (any length).
    pub fn key_from(text: &str) -> [u8; 32] {
        blake3::derive_key("gold 2025 pii pseudonym key", text.as_bytes())
    }

    /// The SQL expression that stands for `column` of `data_type`, when it
    /// is masked.
    pub(crate) fn expr(&self, column: &str, data_type: &DataType) -> Option<String> {
        let lower = column.to_lowercase();
        let quoted = format!("\"{}\"", column.replace('"', "\"\""));
        let text = matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        if self.year_only.contains(&lower) {
            Some(if text {
                format!("substr({quoted}, 1, 4)")
            } else {
                format!("CAST(date_part('year', {quoted}) AS INT)")
            })
        } else if self.hidden.contains(&lower) {
            Some(format!("CASE WHEN {quoted} IS NULL THEN NULL ELSE '***' END"))
        } else if self.pseudonymised.contains(&lower) {
            // Without a key this fails when a query reads the column (and
            // only then: a count over the table does not).
            Some(format!("gold_pseudonym(CAST({quoted} AS VARCHAR))"))
        } else {
            None
        }
    }

    /// `gold_pseudonym(text)`: `p-` and the first 16 hex digits of the
    /// keyed BLAKE3 hash of `text`; an error when there is no key.
    pub(crate) fn pseudonym_udf(&self) -> ScalarUDF {
        let key = self.key;
        create_udf(
            "gold_pseudonym",
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let values = arrays[0].as_string::<i32>();
                let key = key.ok_or_else(|| {
                    DataFusionError::Execution(
                        "member and patient ids are pseudonymised for this role, and GOLD_PII_KEY (the pseudonym \
                         key) is not set; set it in the environment, or use a role that sees PII"
                            .into(),
                    )
                })?;
                let out: StringArray = values
                    .iter()
                    .map(|v| v.map(|v| format!("p-{}", &blake3::keyed_hash(&key, v.as_bytes()).to_hex()[..16])))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }),
        )
    }
}
