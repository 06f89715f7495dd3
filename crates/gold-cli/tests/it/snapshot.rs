//! `gold snapshot`: an SCD2 table from CSV snapshots, as a user runs it.

use crate::interop::{python, read_with_polars};
use crate::{gold, gold_json, stderr};

const HEADER: &str = "MemberID,Name,DOB,Region,IsActive,LastUpdated\n";

fn write(dir: &std::path::Path, name: &str, rows: &[&str]) {
    let mut text = HEADER.to_string();
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(dir.join(name), text).unwrap();
}

fn snapshot(dir: &std::path::Path, file: &str, date: &str) -> (Option<i32>, serde_json::Value) {
    gold_json(
        dir,
        &[
            "snapshot",
            "--source",
            file,
            "--target",
            "dim_members",
            "--key",
            "MemberID",
            "--track-all-except",
            "LastUpdated",
            "--hard-deletes",
            "invalidate",
            "--date",
            date,
        ],
    )
}

#[test]
fn snapshot_builds_history_that_another_reader_sees_and_reruns_as_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "day1.csv",
        &[
            "M1,Ann,1980-01-02,North,1.0,2025-01-01",
            "M2,Bob,1975-03-04,South,,2025-01-01",
            "M3,Cy,1990-05-06,East,0.0,2025-01-01",
        ],
    );
    // M1 only touched; M2 IsActive NULL -> 1.0; M3 gone; M4 new.
    write(
        d,
        "day2.csv",
        &[
            "M1,Ann,1980-01-02,North,1.0,2025-01-02",
            "M2,Bob,1975-03-04,South,1.0,2025-01-02",
            "M4,Di,2000-07-08,West,1.0,2025-01-02",
        ],
    );
    let (code, first) = snapshot(d, "day1.csv", "2025-01-01");
    assert_eq!(code, Some(0), "{first}");
    assert_eq!(first["version"], 0);
    let (code, second) = snapshot(d, "day2.csv", "2025-01-02");
    assert_eq!(code, Some(0), "{second}");
    let m = &second["metrics"];
    assert_eq!(
        (m["inserted"].as_u64(), m["closed"].as_u64(), m["deleted"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{second}"
    );
    assert_eq!(second["current_rows"], 3);

    let (code, again) = snapshot(d, "day2.csv", "2025-01-02");
    assert_eq!(code, Some(0));
    assert_eq!(again["already_applied"], true, "{again}");
    assert!(again["version"].is_null());

    let Some(python) = python() else { return };
    let table = read_with_polars(&python, &d.join("dim_members"), None);
    assert_eq!(table["rows"], 5, "{table}");
    let rows = table["data"].as_array().unwrap();
    let current: Vec<&str> =
        rows.iter().filter(|r| r["is_current"] == "True").map(|r| r["MemberID"].as_str().unwrap()).collect();
    assert_eq!(current.len(), 3);
    for id in ["M1", "M2", "M4"] {
        assert!(current.contains(&id), "{id} should be current: {table}");
    }
    let m3 = rows.iter().find(|r| r["MemberID"] == "M3").unwrap();
    // The reader renders booleans the Python way.
    assert_eq!((m3["is_current"].as_str(), m3["is_deleted"].as_str()), (Some("False"), Some("True")));
    let dtypes: Vec<&str> = table["dtypes"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(dtypes.iter().all(|t| !t.contains("View")), "{dtypes:?}");
    let day1 = read_with_polars(&python, &d.join("dim_members"), Some(0));
    assert_eq!(day1["rows"], 3);
}

fn snapshot_with(dir: &std::path::Path, file: &str, date: &str, deletes: &str) -> serde_json::Value {
    let args = ["snapshot", "--source", file, "--target", "dim_members", "--key", "MemberID"];
    let (code, out) = gold_json(
        dir,
        &[&args[..], &["--hard-deletes", deletes, "--date", date, "--track-all-except", "LastUpdated"]].concat(),
    );
    assert_eq!(code, Some(0), "{out}");
    out
}

#[test]
fn a_snapshot_applied_again_is_known_by_its_digest_unless_its_bytes_or_options_differ() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "all.csv", &["M1,Ann,1980-01-02,North,1.0,2025-01-01", "M2,Bob,1975-03-04,South,1.0,2025-01-01"]);
    // M1 changed, M2 missing.
    write(d, "one.csv", &["M1,Ann,1980-01-02,West,1.0,2025-01-02"]);
    assert_eq!(snapshot_with(d, "all.csv", "2025-01-01", "invalidate")["version"], 0);
    let first = snapshot_with(d, "one.csv", "2025-01-02", "ignore");
    assert_eq!((first["version"].as_u64(), first["metrics"]["deleted"].as_u64()), (Some(1), Some(0)), "{first}");

    // The same bytes and options on a later day: known without a merge.
    let again = snapshot_with(d, "one.csv", "2025-01-03", "ignore");
    assert_eq!(again["already_applied"], true, "{again}");
    assert_eq!(again["source_applied_in_version"], 1, "{again}");
    assert!(again["version"].is_null() && again["metrics"].is_null(), "{again}");

    // The same rows in other bytes are merged, and change nothing.
    write(d, "one-quoted.csv", &["\"M1\",\"Ann\",1980-01-02,West,1.0,2025-01-02"]);
    let same = snapshot_with(d, "one-quoted.csv", "2025-01-03", "ignore");
    assert_eq!(same["already_applied"], false, "{same}");
    assert!(same["version"].is_null(), "{same}");
    assert_eq!(same["metrics"]["unchanged"], 1, "{same}");

    // The same bytes under other options are another source: as a full
    // snapshot, the file now deletes M2.
    let deleting = snapshot_with(d, "one.csv", "2025-01-03", "invalidate");
    assert_eq!(deleting["already_applied"], false, "{deleting}");
    assert_eq!(
        (deleting["version"].as_u64(), deleting["metrics"]["deleted"].as_u64()),
        (Some(2), Some(1)),
        "{deleting}"
    );
    assert_eq!(deleting["current_rows"], 1, "{deleting}");
}

#[test]
fn a_later_snapshot_may_reorder_its_columns_or_bring_one_whose_type_comes_from_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "day1.csv", &["M1,Ann,1980-01-02,North,1.0,2025-01-01", "M2,Bob,1975-03-04,South,1.0,2025-01-01"]);
    assert_eq!(snapshot(d, "day1.csv", "2025-01-01").0, Some(0));

    // The same rows, the columns in another order: each value is read by
    // its column's name and the table's type, and nothing changes.
    let reordered = "LastUpdated,IsActive,Region,DOB,Name,MemberID\n\
                     2025-01-02,1.0,North,1980-01-02,Ann,M1\n\
                     2025-01-02,1.0,South,1975-03-04,Bob,M2\n";
    std::fs::write(d.join("reordered.csv"), reordered).unwrap();
    let (code, same) = snapshot(d, "reordered.csv", "2025-01-02");
    assert_eq!(code, Some(0), "{same}");
    assert!(same["version"].is_null(), "{same}");
    assert_eq!(same["metrics"]["unchanged"], 2, "{same}");

    // A column the table lacks: its type is inferred from the rows.
    let wider = format!(
        "{},Children\nM1,Ann,1980-01-02,North,1.0,2025-01-03,2\nM2,Bob,1975-03-04,South,1.0,2025-01-03,0\n",
        HEADER.trim_end()
    );
    std::fs::write(d.join("wider.csv"), wider).unwrap();
    let (code, added) = snapshot(d, "wider.csv", "2025-01-03");
    assert_eq!(code, Some(0), "{added}");
    assert_eq!(added["columns_added"], serde_json::json!(["Children"]), "{added}");
    assert_eq!(added["metrics"]["inserted"], 0, "a new column opens no version: {added}");
    let log = std::fs::read_to_string(d.join("dim_members/_delta_log/00000000000000000001.json")).unwrap();
    assert!(log.contains(r#"\"name\":\"Children\",\"type\":\"long\""#), "{log}");
}

#[test]
fn snapshot_bad_input_names_the_file_column_or_row_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, doc) = snapshot(d, "missing.csv", "2025-01-01");
    assert_eq!(code, Some(1), "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("missing.csv"), "{doc}");

    write(d, "day1.csv", &["M1,Ann,1980-01-02,North,1.0,2025-01-01"]);
    let o =
        gold(d, &["snapshot", "--source", "day1.csv", "--target", "dim", "--key", "Member", "--date", "2025-01-01"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"Member\""), "{}", stderr(&o));
    assert!(!d.join("dim/_delta_log").exists(), "nothing may be committed");

    assert_eq!(snapshot(d, "day1.csv", "2025-01-01").0, Some(0));
    // A date that no longer parses as the table's type, and a duplicate key.
    write(d, "bad.csv", &["M1,Ann,not-a-date,North,1.0,2025-01-02"]);
    let (code, doc) = snapshot(d, "bad.csv", "2025-01-02");
    assert_eq!(code, Some(1), "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("bad.csv") && error.contains("not-a-date"), "{error}");
    write(d, "dup.csv", &["M1,Ann,1980-01-02,North,1.0,2025-01-02", "M1,Ann,1980-01-02,South,1.0,2025-01-02"]);
    let (code, doc) = snapshot(d, "dup.csv", "2025-01-02");
    assert_eq!(code, Some(1), "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("row 2"), "{doc}");
    let (_, again) = snapshot(d, "day1.csv", "2025-01-03");
    assert!(again["version"].is_null(), "the failed runs left the table at version 0: {again}");
}
