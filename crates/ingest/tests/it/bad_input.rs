//! The bad-input corpus: each file either lands row by row (bad rows kept
//! and rescued) or is refused with an error naming the file, and never
//! panics or commits a part.

use std::path::Path;

use storage::Warehouse;

use crate::support::{catalog, count, date, ingest, rows, strings};

const CSV_SOURCE: &str = r#"[[source]]
name = "things"
kind = "csv"
location = "things*.csv"
load = "files-once"
drift = "rescue"
columns = [
  { name = "id", type = "string" },
  { name = "amount", type = "decimal(18,2)" },
  { name = "day", type = "date" },
]
"#;

const JSON_SOURCE: &str = r#"[[source]]
name = "events"
kind = "json"
location = "events*.json"
load = "files-once"
columns = [
  { name = "id", type = "string" },
  { name = "amount", type = "decimal(18,2)" },
  { name = "codes", type = "list<string>" },
  { name = "where", type = "struct<city:string,state:string>" },
]
"#;

/// What a case must give.
enum Expect {
    /// Rows land; `rescued` of them keep their raw data; `check` looks at the bronze rows.
    Rows { rows: usize, rescued: usize, check: fn(&[deltalake::arrow::array::RecordBatch]) },
    /// The file is refused with an error containing this text.
    Refused(&'static str),
}

#[track_caller]
fn check(source: &'static str, file: &'static str, bytes: Vec<u8>, expect: Expect) {
    let caller = std::panic::Location::caller();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let landing = dir.path().join("landing");
        std::fs::create_dir_all(landing.join("2025-01-01")).unwrap();
        std::fs::write(landing.join("2025-01-01").join(file), &bytes).unwrap();
        let wh_dir = dir.path().join("wh");
        let warehouse = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
        let cat = catalog(source);
        let table = cat.sources()[0].bronze_table();
        let result = ingest(&warehouse, 1, &cat, &landing, date("2025-01-01")).await;
        match (expect, result) {
            (Expect::Rows { rows: n, rescued, check }, Ok(report)) => {
                let s = &report.sources[0];
                assert_eq!(
                    (s.rows_read as usize, s.rows_written as usize, s.rows_rescued as usize),
                    (n, n, rescued),
                    "{file} ({caller})"
                );
                if n > 0 {
                    let bronze = rows(&warehouse, &table).await;
                    assert_eq!(count(&bronze), n, "{file}");
                    check(&bronze);
                }
                // Ingested once: a second run reads nothing.
                let again = ingest(&warehouse, 2, &cat, &landing, date("2025-01-01")).await.unwrap();
                assert!(again.sources[0].read.is_empty(), "{file}: read twice");
            }
            (Expect::Refused(text), Err(err)) => {
                let msg = err.to_string();
                assert!(err.is_user_error() && msg.contains(file) && msg.contains(text), "{file}: {msg} ({caller})");
                assert!(!wh_dir.join(&table).exists(), "{file}: nothing is committed");
            }
            (Expect::Rows { .. }, Err(err)) => panic!("{file}: refused: {err} ({caller})"),
            (Expect::Refused(_), Ok(report)) => panic!("{file}: accepted: {:?} ({caller})", report.sources),
        }
    });
}

fn no_check(_: &[deltalake::arrow::array::RecordBatch]) {}

fn col(batches: &[deltalake::arrow::array::RecordBatch], name: &str) -> Vec<Option<String>> {
    strings(batches, name)
}

#[test]
fn truncated_csv_keeps_the_cut_row_raw() {
    check(
        CSV_SOURCE,
        "things.csv",
        b"id,amount,day\na,1.50,2025-01-01\nb,2.5".to_vec(),
        Expect::Rows {
            rows: 2,
            rescued: 1,
            check: |b| {
                assert_eq!(col(b, "_rescued_data")[1].as_deref(), Some("b,2.5"));
                assert!(col(b, "_error")[1].as_deref().unwrap().contains("expected 3 fields, found 2"));
                assert_eq!(col(b, "amount")[0].as_deref(), Some("1.50"));
            },
        },
    );
}

#[test]
fn wrong_delimiter_is_refused_naming_the_file() {
    check(CSV_SOURCE, "things.csv", b"id;amount;day\na;1.50;2025-01-01\n".to_vec(), Expect::Refused("comma-separated"));
}

#[test]
fn binary_junk_is_refused_or_rescued_never_a_panic() {
    // Deterministic junk with a few newlines, so that it has "rows".
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(landing.join("2025-01-01")).unwrap();
    std::fs::write(landing.join("2025-01-01/things.csv"), &junk).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    match rt.block_on(ingest(&warehouse, 1, &catalog(CSV_SOURCE), &landing, date("2025-01-01"))) {
        Ok(report) => {
            assert_eq!(report.sources[0].rows_read, report.sources[0].rows_rescued, "junk rows are all rescued")
        }
        Err(err) => assert!(err.is_user_error() && err.to_string().contains("things.csv"), "{err}"),
    }
}

#[test]
fn a_ten_megabyte_field_lands_whole() {
    let big = "x".repeat(10 * 1024 * 1024);
    check(
        CSV_SOURCE,
        "things.csv",
        format!("id,amount,day\n{big},1.00,2025-01-01\n").into_bytes(),
        Expect::Rows {
            rows: 1,
            rescued: 0,
            check: |b| assert_eq!(col(b, "id")[0].as_ref().map(String::len), Some(10 * 1024 * 1024)),
        },
    );
}

#[test]
fn invalid_utf8_keeps_the_row_with_the_reason() {
    check(
        CSV_SOURCE,
        "things.csv",
        b"id,amount,day\nok,1.00,2025-01-01\nbad\xff\xfe,2.00,2025-01-01\n".to_vec(),
        Expect::Rows {
            rows: 2,
            rescued: 1,
            check: |b| assert!(col(b, "_error")[1].as_deref().unwrap().contains("not valid UTF-8")),
        },
    );
}

#[test]
fn empty_and_header_only_files_land_no_rows_once() {
    check(CSV_SOURCE, "things.csv", Vec::new(), Expect::Rows { rows: 0, rescued: 0, check: no_check });
    check(CSV_SOURCE, "things.csv", b"id,amount,day\n".to_vec(), Expect::Rows { rows: 0, rescued: 0, check: no_check });
}

#[test]
fn a_repeated_header_line_is_rescued_and_a_duplicated_column_refused() {
    check(
        CSV_SOURCE,
        "things.csv",
        b"id,amount,day\nid,amount,day\na,1.00,2025-01-01\n".to_vec(),
        Expect::Rows {
            rows: 2,
            rescued: 1,
            check: |b| assert_eq!(col(b, "_error")[0].as_deref(), Some("repeated header line")),
        },
    );
    check(CSV_SOURCE, "things.csv", b"id,amount,amount\na,1.00,2.00\n".to_vec(), Expect::Refused("appears twice"));
}

#[test]
fn bom_and_crlf_are_read_as_plain_csv() {
    check(
        CSV_SOURCE,
        "things.csv",
        b"\xef\xbb\xbfid,amount,day\r\na,1.00,2025-01-01\r\nb,,2025-01-02\r\n".to_vec(),
        Expect::Rows {
            rows: 2,
            rescued: 0,
            check: |b| {
                assert_eq!(col(b, "id"), [Some("a".into()), Some("b".into())]);
                assert_eq!(col(b, "day")[1].as_deref(), Some("2025-01-02"), "no stray \\r");
                assert_eq!(col(b, "amount")[1], None, "an empty amount is NULL, not a failure");
            },
        },
    );
}

#[test]
fn a_missing_column_is_null_and_an_extra_column_is_rescued() {
    check(
        CSV_SOURCE,
        "things.csv",
        b"id,day,colour\na,2025-01-01,red\n".to_vec(),
        Expect::Rows {
            rows: 1,
            rescued: 1,
            check: |b| {
                assert_eq!(col(b, "amount")[0], None);
                assert_eq!(col(b, "_rescued_data")[0].as_deref(), Some(r#"{"colour":"red"}"#));
            },
        },
    );
}

#[test]
fn a_value_that_does_not_parse_keeps_the_raw_line() {
    check(
        CSV_SOURCE,
        "things.csv",
        b"id,amount,day\na,12O.50,2025-01-01\n".to_vec(),
        Expect::Rows {
            rows: 1,
            rescued: 1,
            check: |b| {
                assert_eq!(col(b, "_rescued_data")[0].as_deref(), Some("a,12O.50,2025-01-01"));
                assert!(col(b, "_error")[0].as_deref().unwrap().contains("column amount"));
                assert_eq!(col(b, "id")[0].as_deref(), Some("a"), "the values that parse stay");
            },
        },
    );
}

#[test]
fn a_json_array_instead_of_ndjson_is_kept_line_by_line() {
    let text = "[\n{\"id\": \"a\", \"amount\": 1.5},\n{\"id\": \"b\"}\n]\n";
    // Each line is judged alone: "[", "]" and the line with a trailing
    // comma are kept raw; the one line that is a whole object lands.
    check(
        JSON_SOURCE,
        "events.json",
        text.as_bytes().to_vec(),
        Expect::Rows {
            rows: 4,
            rescued: 3,
            check: |b| {
                let errors = col(b, "_error");
                assert!(
                    errors[0].as_deref().unwrap().contains("not a JSON object but an array")
                        || errors[0].as_deref().unwrap().starts_with("malformed JSON"),
                    "{errors:?}"
                );
                assert_eq!(col(b, "_rescued_data")[1].as_deref(), Some("{\"id\": \"a\", \"amount\": 1.5},"));
                assert_eq!((errors[2].as_deref(), col(b, "id")[2].as_deref()), (None, Some("b")));
            },
        },
    );
}

#[test]
fn nested_json_lands_as_lists_and_structs_with_misfits_rescued() {
    let text = concat!(
        "{\"id\":\"a\",\"amount\":12.34,\"codes\":[\"I10\",\"E11.9\"],\"where\":{\"city\":\"Boise\",\"state\":\"ID\"}}\n",
        "{\"id\":\"b\",\"amount\":\"abc\",\"codes\":\"I10\",\"extra\":1}\n",
        "{\"id\":\"c\",\"amount\":null\n",
    );
    check(
        JSON_SOURCE,
        "events.json",
        text.as_bytes().to_vec(),
        Expect::Rows {
            rows: 3,
            rescued: 2,
            check: |b| {
                assert_eq!(col(b, "amount")[0].as_deref(), Some("12.34"));
                let codes = b[0].column_by_name("codes").unwrap();
                assert!(matches!(codes.data_type(), deltalake::arrow::datatypes::DataType::List(_)));
                let rescued = col(b, "_rescued_data");
                let second: serde_json::Value = serde_json::from_str(rescued[1].as_deref().unwrap()).unwrap();
                assert_eq!(second, serde_json::json!({"amount": "abc", "codes": "I10", "extra": 1}));
                assert!(col(b, "_error")[2].as_deref().unwrap().starts_with("malformed JSON"));
            },
        },
    );
}

#[test]
fn drift_policy_fail_refuses_and_add_column_widens() {
    let fail = CSV_SOURCE.replace("drift = \"rescue\"", "drift = \"fail\"").leak();
    check(fail, "things.csv", b"id,amount,day,colour\na,1.00,2025-01-01,red\n".to_vec(), Expect::Refused("colour"));
    let add = CSV_SOURCE.replace("drift = \"rescue\"", "drift = \"add-column\"").leak();
    check(
        add,
        "things.csv",
        b"id,amount,day,colour\na,1.00,2025-01-01,red\n".to_vec(),
        Expect::Rows { rows: 1, rescued: 0, check: |b| assert_eq!(col(b, "colour")[0].as_deref(), Some("red")) },
    );
}

#[test]
fn a_broken_model_names_the_source_and_column() {
    let err =
        ingest::SourceCatalog::parse(&CSV_SOURCE.replace("decimal(18,2)", "decimal(99,2)"), "models/sources.toml")
            .unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("things") && err.to_string().contains("amount"), "{err}");
    let path = Path::new("models/sources.toml");
    assert!(err.to_string().contains(path.to_str().unwrap()));
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_refusal_after_rows_were_streamed_leaves_no_file_behind() {
    // Rows stream into Parquet files while they are read; when another
    // file of the same source is refused, the files already written are
    // deleted, so the table is as if the run had never started.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let landing = dir.path().join("landing");
        std::fs::create_dir_all(landing.join("2025-01-01")).unwrap();
        let mut good = String::from("id,amount,day\n");
        for i in 0..200_000 {
            good.push_str(&format!("k{i},{}.25,2025-01-01\n", i % 1000));
        }
        std::fs::write(landing.join("2025-01-01/things_a.csv"), good).unwrap();
        std::fs::write(landing.join("2025-01-01/things_b.csv"), "id;amount;day\na;1.50;2025-01-01\n").unwrap();
        let wh_dir = dir.path().join("wh");
        let warehouse = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
        let err = ingest(&warehouse, 1, &catalog(CSV_SOURCE), &landing, date("2025-01-01")).await.unwrap_err();
        assert!(err.to_string().contains("things_b.csv"), "{err}");
        let left = files_under(&wh_dir.join("bronze_things"));
        assert!(left.is_empty(), "files left behind: {left:?}");
        assert!(files_under(&wh_dir).iter().all(|p| !p.to_string_lossy().ends_with(".parquet")));

        // Fixed, the landing ingests every row of both files once.
        std::fs::write(landing.join("2025-01-01/things_b.csv"), "id,amount,day\na,1.50,2025-01-01\n").unwrap();
        let report = ingest(&warehouse, 2, &catalog(CSV_SOURCE), &landing, date("2025-01-01")).await.unwrap();
        let s = &report.sources[0];
        assert_eq!((s.rows_read, s.rows_written, s.rows_rescued), (200_001, 200_001, 0));
        let bronze = rows(&warehouse, "bronze_things").await;
        assert_eq!(count(&bronze), 200_001);
        let ids: std::collections::HashSet<_> = strings(&bronze, "id").into_iter().flatten().collect();
        assert_eq!(ids.len(), 200_001, "every row once");
    });
}

/// The Parquet files a table's Delta log adds, by name.
fn logged_files(table_dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(table_dir.join("_delta_log")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|x| x == "json") {
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                let action: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(path) = action["add"]["path"].as_str() {
                    out.insert(path.rsplit('/').next().unwrap().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn a_refused_file_on_a_later_day_keeps_the_earlier_days_batches_and_leaves_no_file_of_its_own() {
    // Days are read a few at a time (two here) and committed in order, one
    // batch each: the days before the refused file are committed, the
    // refused day and the one read beside it are not, no file of theirs is
    // on disk, and the next run takes both once.
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let landing = dir.path().join("landing");
        let day = |d: &str, rows: std::ops::Range<u32>| {
            std::fs::create_dir_all(landing.join(d)).unwrap();
            let mut text = String::from("id,amount,day\n");
            for i in rows {
                text.push_str(&format!("{d}-{i},{}.25,{d}\n", i % 1000));
            }
            std::fs::write(landing.join(d).join("things.csv"), text).unwrap();
        };
        day("2025-01-01", 0..1_000);
        day("2025-01-02", 0..1_000);
        std::fs::create_dir_all(landing.join("2025-01-03")).unwrap();
        std::fs::write(landing.join("2025-01-03/things.csv"), "id;amount;day\na;1.50;2025-01-03\n").unwrap();
        day("2025-01-04", 0..300_000);
        let wh_dir = dir.path().join("wh");
        let warehouse = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
        let err = ingest(&warehouse, 1, &catalog(CSV_SOURCE), &landing, date("2025-01-04")).await.unwrap_err();
        assert!(err.is_user_error() && err.to_string().contains("2025-01-03/things.csv"), "{err}");
        let bronze = rows(&warehouse, "bronze_things").await;
        assert_eq!(count(&bronze), 2_000, "the first two days are in");
        let batches: std::collections::BTreeSet<_> = strings(&bronze, "_batch_id").into_iter().flatten().collect();
        assert_eq!(batches.into_iter().collect::<Vec<_>>(), ["things-000001", "things-000002"]);
        let on_disk: std::collections::BTreeSet<String> = files_under(&wh_dir.join("bronze_things"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(on_disk, logged_files(&wh_dir.join("bronze_things")), "no file of an uncommitted day is left");

        // Fixed, the next run takes the last two days, once each.
        day("2025-01-03", 0..500);
        let report = ingest(&warehouse, 2, &catalog(CSV_SOURCE), &landing, date("2025-01-04")).await.unwrap();
        assert_eq!(report.sources[0].batch_ids, ["things-000003", "things-000004"]);
        let bronze = rows(&warehouse, "bronze_things").await;
        let ids: std::collections::HashSet<_> = strings(&bronze, "id").into_iter().flatten().collect();
        assert_eq!((count(&bronze), ids.len()), (302_500, 302_500), "every row once");
    });
}
