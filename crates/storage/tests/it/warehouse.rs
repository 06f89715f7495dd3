//! Tables under the warehouse root: commit metadata, protocol, time travel.

use std::sync::Arc;

use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray, StringViewArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use storage::{Commit, RunContext, TableName, Warehouse};
use testkit::{count, date};

/// Build run `id` of 2025-01-01, the date every test here writes.
pub(crate) fn run(id: i64) -> RunContext {
    testkit::run(id, date("2025-01-01"))
}

/// Rows `id` (from `ids`) and `name` (`n<id>`).
pub(crate) fn batch(ids: &[i64]) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("name", DataType::Utf8, true)]));
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names))])
        .unwrap()
}

/// The commit entries of one Delta log file, as JSON values.
fn log_actions(table_dir: &std::path::Path, version: u64) -> Vec<serde_json::Value> {
    let path = table_dir.join("_delta_log").join(format!("{version:020}.json"));
    std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn every_commit_names_its_run_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let name = TableName::new("bronze_things").unwrap();
    assert_eq!(warehouse.append(&name, vec![batch(&[1, 2])], &Commit::new(&run(7), "ingest.append")).await.unwrap(), 0);
    assert_eq!(warehouse.append(&name, vec![batch(&[3])], &Commit::new(&run(8), "ingest.append")).await.unwrap(), 1);
    for (version, run_id) in [(0, 7), (1, 8)] {
        let actions = log_actions(&dir.path().join("bronze_things"), version);
        let info = actions.iter().find_map(|a| a.get("commitInfo")).expect("commitInfo");
        assert_eq!(info["gold.run_id"], run_id, "{info}");
        assert_eq!(info["gold.operation"], "ingest.append");
        assert_eq!(info["gold.logical_date"], "2025-01-01");
    }
}

#[tokio::test]
async fn tables_use_the_minimal_protocol_and_plain_strings() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let name = TableName::new("silver_things").unwrap();
    warehouse.append(&name, vec![batch(&[1])], &Commit::new(&run(1), "test")).await.unwrap();
    let actions = log_actions(&dir.path().join("silver_things"), 0);
    let protocol = actions.iter().find_map(|a| a.get("protocol")).expect("protocol");
    assert_eq!((protocol["minReaderVersion"].as_i64(), protocol["minWriterVersion"].as_i64()), (Some(1), Some(2)));
    let schema =
        actions.iter().find_map(|a| a.get("metaData")).expect("metaData")["schemaString"].as_str().unwrap().to_string();
    assert!(schema.contains(r#""type":"string""#), "{schema}");

    let view_schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8View, true)]));
    let view = RecordBatch::try_new(view_schema, vec![Arc::new(StringViewArray::from(vec!["a"]))]).unwrap();
    let err = warehouse
        .append(&TableName::new("silver_views").unwrap(), vec![view], &Commit::new(&run(1), "test"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Utf8View"), "{err}");
    assert!(!dir.path().join("silver_views").join("_delta_log").exists(), "nothing is committed");
}

#[tokio::test]
async fn time_travel_reads_each_version() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let name = TableName::new("dim_things").unwrap();
    assert!(warehouse.load(&name).await.unwrap().is_none());
    warehouse.append(&name, vec![batch(&[1, 2])], &Commit::new(&run(1), "test")).await.unwrap();
    warehouse.append(&name, vec![batch(&[3, 4, 5])], &Commit::new(&run(2), "test")).await.unwrap();
    assert_eq!(count(&warehouse.scan(&name, Some(0)).await.unwrap()), 2);
    assert_eq!(count(&warehouse.scan(&name, None).await.unwrap()), 5);
    let err = warehouse.scan(&TableName::new("dim_nothing").unwrap(), None).await.unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("dim_nothing"), "{err}");
}

#[test]
fn table_names_and_locations_are_checked() {
    for bad in ["", "Bronze", "1table", "a-b", "a/b"] {
        assert!(TableName::new(bad).unwrap_err().is_user_error(), "{bad:?} accepted");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let err = Warehouse::open(file.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("a_file"), "{err}");
    let err = Warehouse::open("gs://bucket/wh").unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("gs://"), "{err}");
    let err = Warehouse::open("s3:///wh").unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("bucket"), "{err}");
    // Object-store roots are directories: a missing trailing slash is added.
    let warehouse = Warehouse::open("s3://bucket/wh").unwrap();
    assert_eq!(warehouse.root().as_str(), "s3://bucket/wh/");
    assert!(!warehouse.is_local());
    let warehouse = Warehouse::open("az://container").unwrap();
    assert_eq!(warehouse.root().as_str(), "az://container/");
}

#[tokio::test]
async fn restore_brings_back_the_rows_and_the_exactly_once_markers_of_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let name = TableName::new("silver_things").unwrap();
    let r = run(1);
    warehouse.append(&name, vec![batch(&[1, 2])], &Commit::new(&r, "a").with_txn("app", 1)).await.unwrap();
    warehouse
        .append(&name, vec![batch(&[3])], &Commit::new(&r, "b").with_txn("app", 2).with_txn("late", 7))
        .await
        .unwrap();
    warehouse.append(&name, vec![batch(&[4])], &Commit::new(&r, "c").with_txn("app", 3)).await.unwrap();

    let restored = warehouse.restore(&name, 0, &Commit::new(&run(2), "rollback")).await.unwrap();
    assert_eq!(restored, Some(3), "a new version");
    assert_eq!(count(&warehouse.scan(&name, None).await.unwrap()), 2, "version 0's rows");
    assert_eq!(warehouse.txn_version(&name, "app").await.unwrap(), Some(1), "the marker of version 0");
    assert_eq!(warehouse.txn_version(&name, "late").await.unwrap(), None, "a marker version 0 did not have");
    assert_eq!(count(&warehouse.scan(&name, Some(2)).await.unwrap()), 4, "nothing deleted: version 2 still reads");
    assert_eq!(warehouse.restore(&name, 3, &Commit::new(&run(2), "again")).await.unwrap(), None, "already there");

    // Back to version 2, then empty it as if it never existed.
    warehouse.restore(&name, 2, &Commit::new(&run(3), "rollback")).await.unwrap();
    assert_eq!(warehouse.txn_version(&name, "app").await.unwrap(), Some(3));
    assert_eq!(warehouse.txn_version(&name, "late").await.unwrap(), Some(7));
    warehouse.empty(&name, &Commit::new(&run(4), "rollback")).await.unwrap();
    assert_eq!(count(&warehouse.scan(&name, None).await.unwrap()), 0);
    assert_eq!(warehouse.txn_version(&name, "app").await.unwrap(), None);

    let tables = warehouse.tables().await.unwrap();
    assert_eq!(tables.keys().collect::<Vec<_>>(), ["silver_things"]);
    let history = warehouse.history(&name, None).await.unwrap();
    assert_eq!(history.len(), 6);
    assert_eq!(history[0].version, 5);
    assert_eq!(history[0].gold["gold.run_id"], 4);
    assert!(history.iter().any(|h| h.operation == "RESTORE"));
}

#[tokio::test]
async fn only_the_files_holding_the_keys_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let name = TableName::new("silver_things").unwrap();
    // Three files: ids 1-2, 3-4 and 5-6.
    for (i, ids) in [[1, 2], [3, 4], [5, 6]].iter().enumerate() {
        warehouse.append(&name, vec![batch(ids)], &Commit::new(&run(i as i64 + 1), "silver")).await.unwrap();
    }
    let keys: std::collections::HashSet<String> = ["3".to_string(), "9".to_string()].into();
    let touched = warehouse.files_with_keys(&name, "id", &keys).await.unwrap().unwrap();
    assert_eq!((touched.files(), touched.touched_rows(), touched.table_rows()), (1, 2, 6));
    let read = touched.rows().await.unwrap();
    let mut ids: Vec<String> = testkit::texts(&read, "id");
    ids.sort();
    assert_eq!(ids, ["3", "4"], "only the file holding key 3 is read");
    // Key 3 renamed, key 4 kept, key 9 new.
    let mut new = batch(&[3, 4, 9]);
    let names = StringArray::from(vec!["three", "n4", "nine"]);
    new = RecordBatch::try_new(new.schema(), vec![new.column(0).clone(), Arc::new(names)]).unwrap();
    let version = touched.replace(&warehouse, vec![new], &Commit::new(&run(4), "silver")).await.unwrap();
    assert_eq!(version, 3);
    let actions = log_actions(&dir.path().join("silver_things"), 3);
    let removed: Vec<&str> = actions.iter().filter_map(|a| a["remove"]["path"].as_str()).collect();
    assert_eq!(removed.len(), 1, "one file replaced: {removed:?}");
    let all = warehouse.scan(&name, None).await.unwrap();
    assert_eq!(
        testkit::content(&all),
        ["1|n1", "2|n2", "3|three", "4|n4", "5|n5", "6|n6", "9|nine"],
        "the other files' rows are untouched"
    );
}
