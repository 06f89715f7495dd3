//! The warehouse on object storage, against real emulators on loopback:
//! moto's S3 server and Azurite (Azure Blob), which tests/run.sh starts
//! with tests/interop/emulators.sh. Each test works under a fresh prefix.
//! Concurrent writers, each with its own object-store client, commit
//! through Delta's put-if-absent: no commit is lost or overwritten.

use std::collections::HashMap;

use storage::{Commit, Ledger, RunClock, RunKind, TableName, Warehouse};
use testkit::{count, date};

use crate::warehouse::{batch, run};

#[derive(Clone, Copy, Debug)]
enum Store {
    S3,
    Azure,
}

/// A fresh warehouse root on the emulator and its storage options, or
/// `None` (skipped) when the emulator's variables are unset outside CI.
fn emulator(store: Store, test: &str) -> Option<(String, HashMap<String, String>)> {
    let (var, scheme, options): (&str, &str, Vec<(&str, String)>) = match store {
        Store::S3 => (
            "GOLD_TEST_S3_BUCKET",
            "s3",
            vec![
                ("aws_endpoint", std::env::var("GOLD_TEST_S3_ENDPOINT").unwrap_or_default()),
                ("aws_allow_http", "true".into()),
            ],
        ),
        Store::Azure => ("GOLD_TEST_AZURE_CONTAINER", "az", vec![("azure_storage_use_emulator", "true".into())]),
    };
    let (name, unique) = testkit::emulator(var, test)?;
    let options = options.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Some((format!("{scheme}://{name}/{unique}"), options))
}

async fn tables_are_written_listed_and_read_back(store: Store) {
    let Some((root, options)) = emulator(store, "roundtrip") else { return };
    let warehouse = Warehouse::open_with(&root, options).unwrap();
    assert!(!warehouse.is_local());
    assert!(warehouse.tables().await.unwrap().is_empty(), "a new prefix holds no table");
    let things = TableName::new("silver_things").unwrap();
    let others = TableName::new("dim_others").unwrap();
    let r = run(1);
    warehouse.append(&things, vec![batch(&[1, 2])], &Commit::new(&r, "a")).await.unwrap();
    warehouse.append(&things, vec![batch(&[3])], &Commit::new(&r, "b")).await.unwrap();
    warehouse.overwrite(&others, vec![batch(&[7])], &Commit::new(&r, "c")).await.unwrap();
    let tables = warehouse.tables().await.unwrap();
    assert_eq!(
        tables.into_iter().collect::<Vec<_>>(),
        [("dim_others".to_string(), 0), ("silver_things".to_string(), 1)]
    );
    assert_eq!(count(&warehouse.scan(&things, None).await.unwrap()), 3);
    assert_eq!(count(&warehouse.scan(&things, Some(0)).await.unwrap()), 2, "time travel");
    let history = warehouse.history(&things, None).await.unwrap();
    assert_eq!(history.len(), 2);
}

async fn concurrent_writers_lose_no_commit(store: Store) {
    const WRITERS: i64 = 6;
    const COMMITS: i64 = 3;
    let Some((root, options)) = emulator(store, "writers") else { return };
    let name = TableName::new("bronze_events").unwrap();
    let first = Warehouse::open_with(&root, options.clone()).unwrap();
    first.append(&name, vec![batch(&[0])], &Commit::new(&run(1), "create")).await.unwrap();

    // Each writer is its own warehouse handle (its own client), as separate
    // processes would be, and commits its appends as fast as it can.
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (root, options, name) = (root.clone(), options.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let warehouse = Warehouse::open_with(&root, options).unwrap();
            let mut versions = Vec::new();
            for c in 0..COMMITS {
                let id = 1 + w * COMMITS + c;
                let writer = run(id);
                let commit = Commit::new(&writer, "append");
                versions.push(warehouse.append(&name, vec![batch(&[id])], &commit).await.unwrap());
            }
            versions
        }));
    }
    let mut versions: Vec<i64> = Vec::new();
    for t in tasks {
        versions.extend(t.await.unwrap());
    }
    versions.sort_unstable();
    let expected: Vec<i64> = (1..=WRITERS * COMMITS).collect();
    assert_eq!(versions, expected, "every commit took its own version");

    let table = first.load(&name).await.unwrap().unwrap();
    assert_eq!(table.version(), Some((WRITERS * COMMITS) as u64));
    let batches = first.scan(&name, None).await.unwrap();
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("id").unwrap();
            col.as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap().values().to_vec()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..=WRITERS * COMMITS).collect::<Vec<_>>(), "every appended row is there once");
}

async fn two_runs_beginning_at_once_hold_the_warehouse_one_at_a_time(store: Store) {
    let Some((root, options)) = emulator(store, "lease") else { return };
    lease_race(&root, &options).await;
}

/// Two runs begin at once, on a new warehouse and then on one with a
/// finished run: each time exactly one holds the warehouse.
pub(crate) async fn lease_race(root: &str, options: &HashMap<String, String>) {
    let day = || RunClock::for_date(date("2025-01-01"));
    let a = Warehouse::open_with(root, options.clone()).unwrap();
    let b = Warehouse::open_with(root, options.clone()).unwrap();
    let (la, lb) = (Ledger::new(&a), Ledger::new(&b));
    for round in 1..=2 {
        let (ra, rb) = tokio::join!(la.begin(RunKind::Build, day()), lb.begin(RunKind::Build, day()));
        let runs = la.runs().await.unwrap();
        let ids: Vec<(i64, String)> = runs.iter().map(|r| (r.run_id.0, r.status.to_string())).collect();
        assert_eq!(
            [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "round {round}: exactly one run holds the warehouse; ledger: {ids:?}"
        );
        let (won, refused) = match (ra, rb) {
            (Ok(run), Err(e)) | (Err(e), Ok(run)) => (run, e),
            _ => unreachable!(),
        };
        assert!(refused.to_string().contains("busy"), "{refused}");
        assert_eq!(runs.len(), round, "round {round}: the ledger holds the runs that began: {ids:?}");
        la.finish(&won, storage::RunRecord::succeeded(&won, "test")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_tables_are_written_listed_and_read_back() {
    tables_are_written_listed_and_read_back(Store::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_tables_are_written_listed_and_read_back() {
    tables_are_written_listed_and_read_back(Store::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_concurrent_writers_lose_no_commit() {
    concurrent_writers_lose_no_commit(Store::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_concurrent_writers_lose_no_commit() {
    concurrent_writers_lose_no_commit(Store::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_two_runs_beginning_at_once_hold_the_warehouse_one_at_a_time() {
    two_runs_beginning_at_once_hold_the_warehouse_one_at_a_time(Store::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_two_runs_beginning_at_once_hold_the_warehouse_one_at_a_time() {
    two_runs_beginning_at_once_hold_the_warehouse_one_at_a_time(Store::Azure).await;
}
