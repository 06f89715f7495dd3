//! The SQL functions silver models may call, beside DataFusion's own:
//!
//! | function | what it returns |
//! |---|---|
//! | `to_bool(text)` | `1`/`1.0`/`true`/`Y` -> true, `0`/`0.0`/`false`/`N` -> false (any case), empty or anything else -> NULL |
//! | `normalise_code(text)` | an ICD-10 code upper-cased, trimmed, without its dot |
//! | `split_codes(text)` | a `;`-separated code list as a list of normalised codes |
//! | `normalise_codes(list)` | each code of a list normalised, empties left out |
//! | `all_icd10cm(list)` | every code is a billable ICD-10-CM (FY2026) code |
//! | `all_in_diagnosis_ref(list)` | every code is in `silver_diagnosis_ref` |
//! | `npi_valid(text)` | a 10-digit NPI whose Luhn check digit holds |
//! | `run_date()` | the run's logical date |

use std::collections::HashSet;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListBuilder, StringArray, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field};
use deltalake::datafusion::common::{DataFusionError, ScalarValue};
use deltalake::datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use deltalake::datafusion::prelude::SessionContext;

/// The silver table `all_in_diagnosis_ref` reads.
pub(crate) const DIAGNOSIS_REF_TABLE: &str = "silver_diagnosis_ref";

type DfResult<T> = std::result::Result<T, DataFusionError>;

/// An ICD-10 (or CPT) code as compared: trimmed, upper case, no dot.
pub(crate) fn normalise(code: &str) -> String {
    code.trim().chars().filter(|c| *c != '.').flat_map(char::to_uppercase).collect()
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// The functions, with the run's date and the diagnosis reference codes.
pub(crate) fn register(ctx: &SessionContext, run_date: NaiveDate, diagnosis_ref: Arc<HashSet<String>>) {
    ctx.register_udf(to_bool());
    ctx.register_udf(normalise_code());
    ctx.register_udf(split_codes());
    ctx.register_udf(normalise_codes());
    ctx.register_udf(all_in("all_icd10cm", None));
    ctx.register_udf(all_in("all_in_diagnosis_ref", Some(diagnosis_ref)));
    ctx.register_udf(npi_valid());
    let days = Date32Type::from_naive_date(run_date);
    ctx.register_udf(create_udf(
        "run_date",
        vec![],
        DataType::Date32,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Date32(Some(days))))),
    ));
}

/// `name(value)`: is the value one of `keys` (a parent table's keys)?
pub(crate) fn exists_in(name: &str, keys: Arc<HashSet<String>>) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let values = arrays[0].as_string::<i32>();
            let out: BooleanArray = values.iter().map(|v| Some(v.is_some_and(|v| keys.contains(v)))).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

fn text_fn(name: &str, out: DataType, f: impl Fn(&StringArray) -> ArrayRef + Send + Sync + 'static) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        out,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            Ok(ColumnarValue::Array(f(arrays[0].as_string::<i32>())))
        }),
    )
}

fn to_bool() -> ScalarUDF {
    text_fn("to_bool", DataType::Boolean, |values| {
        let out: BooleanArray = values.iter().map(|v| v.and_then(parse_bool)).collect();
        Arc::new(out)
    })
}

/// The spellings of a flag that senders use.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "y" => Some(true),
        "0" | "0.0" | "false" | "n" => Some(false),
        _ => None,
    }
}

fn normalise_code() -> ScalarUDF {
    text_fn("normalise_code", DataType::Utf8, |values| {
        let out: StringArray = values.iter().map(|v| v.map(normalise)).collect();
        Arc::new(out)
    })
}

fn split_codes() -> ScalarUDF {
    text_fn("split_codes", list_type(), |values| {
        let mut out = ListBuilder::new(StringBuilder::new());
        for v in values.iter() {
            match v {
                Some(v) => {
                    for code in v.split(';').map(normalise).filter(|c| !c.is_empty()) {
                        out.values().append_value(code);
                    }
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Arc::new(out.finish())
    })
}

fn list_fn(
    name: &str,
    out: DataType,
    f: impl Fn(&dyn Array) -> DfResult<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    create_udf(
        name,
        vec![list_type()],
        out,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| -> DfResult<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            Ok(ColumnarValue::Array(f(arrays[0].as_ref())?))
        }),
    )
}

/// Each list entry's codes, or `None` for a NULL list.
fn each_list(array: &dyn Array) -> DfResult<Vec<Option<Vec<Option<String>>>>> {
    let list =
        array.as_list_opt::<i32>().ok_or_else(|| DataFusionError::Execution("expected a list of strings".into()))?;
    let mut rows = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        if list.is_null(i) {
            rows.push(None);
            continue;
        }
        let item = list.value(i);
        let strings = item
            .as_string_opt::<i32>()
            .ok_or_else(|| DataFusionError::Execution("expected a list of strings".into()))?;
        rows.push(Some(strings.iter().map(|s| s.map(str::to_string)).collect()));
    }
    Ok(rows)
}

fn normalise_codes() -> ScalarUDF {
    list_fn("normalise_codes", list_type(), |array| {
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in each_list(array)? {
            match row {
                Some(codes) => {
                    for code in codes.into_iter().flatten().map(|c| normalise(&c)).filter(|c| !c.is_empty()) {
                        out.values().append_value(code);
                    }
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Ok(Arc::new(out.finish()))
    })
}

/// `name(list)`: every (non-NULL) code of the list is in the set; NULL for
/// a NULL list. `None` is the ICD-10-CM list.
fn all_in(name: &str, set: Option<Arc<HashSet<String>>>) -> ScalarUDF {
    list_fn(name, DataType::Boolean, move |array| {
        let known = |code: &str| match set.as_deref() {
            Some(set) => set.contains(code),
            None => reference::is_icd10cm(code),
        };
        let out: BooleanArray = each_list(array)?
            .into_iter()
            .map(|row| row.map(|codes| codes.iter().flatten().all(|c| known(&normalise(c)))))
            .collect();
        Ok(Arc::new(out))
    })
}

fn npi_valid() -> ScalarUDF {
    text_fn("npi_valid", DataType::Boolean, |values| {
        let out: BooleanArray = values.iter().map(|v| v.map(reference::is_npi)).collect();
        Arc::new(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_flags_and_npis_parse_as_documented() {
        assert_eq!(normalise(" e11.9 "), "E119");
        assert!(reference::is_icd10cm(&normalise("e11.9")));
        assert_eq!(parse_bool("1.0"), Some(true));
        assert_eq!(parse_bool("N"), Some(false));
        assert_eq!(parse_bool(""), None);
        assert_eq!(parse_bool("yes"), None);
        assert!(reference::is_npi("1234567893"));
        assert!(!reference::is_npi("1234567890"));
        assert!(!reference::is_npi("123456789"));
    }
}
