//! The run ledger `_gold_runs`.

use storage::{Ledger, RunClock, RunKind, RunRecord, RunStatus, Warehouse};
use testkit::date;

#[tokio::test]
async fn runs_get_increasing_ids_and_keep_their_table_versions() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let ledger = Ledger::new(&warehouse);
    assert!(ledger.runs().await.unwrap().is_empty(), "a new warehouse has no runs");

    let first = ledger.begin(RunKind::Build, RunClock::for_date(date("2025-01-01"))).await.unwrap();
    assert_eq!(first.id.0, 1);
    let record = RunRecord::succeeded(&first, "0.1.0")
        .with_table("bronze_members", 0, 1000)
        .with_table("silver_members", 3, 990)
        .with_summary(&serde_json::json!({"stages": ["ingest"]}));
    // A run holds the warehouse until it finishes.
    let err = ledger.begin(RunKind::Build, RunClock::for_date(date("2025-01-01"))).await.unwrap_err();
    assert!(matches!(err, storage::Error::Busy(_)), "{err}");
    assert!(err.to_string().contains("run 1 (build, for 2025-01-01)"), "{err}");
    assert_eq!(ledger.runs().await.unwrap()[0].status, RunStatus::Running);
    assert_eq!(
        ledger.finish(&first, record).await.unwrap(),
        2,
        "begin created the empty ledger (version 0) and wrote its lease (1); finish is version 2"
    );

    let second = ledger.begin(RunKind::Build, RunClock::for_date(date("2025-01-02"))).await.unwrap();
    assert_eq!(second.id.0, 2);
    ledger.finish(&second, RunRecord::failed(&second, "0.1.0", "stage silver: expectation failed")).await.unwrap();

    let runs = ledger.runs().await.unwrap();
    assert_eq!(runs.len(), 2);
    let (a, b) = (&runs[0], &runs[1]);
    assert_eq!(
        (a.run_id.0, a.kind.as_str(), a.logical_date, a.status),
        (1, "build", date("2025-01-01"), RunStatus::Succeeded)
    );
    assert_eq!(
        a.tables.iter().map(|t| (t.table.as_str(), t.version, t.rows_written)).collect::<Vec<_>>(),
        [("bronze_members", 0, 1000), ("silver_members", 3, 990)]
    );
    assert_eq!(a.summary.as_deref(), Some(r#"{"stages":["ingest"]}"#));
    assert!(a.ended_at >= a.started_at);
    assert_eq!((b.status, b.message.as_deref()), (RunStatus::Failed, Some("stage silver: expectation failed")));
    assert!(b.tables.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_beginning_at_once_on_a_local_warehouse_hold_it_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    crate::object_store::lease_race(dir.path().to_str().unwrap(), &Default::default()).await;
}
