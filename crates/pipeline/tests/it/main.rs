//! The pipeline as a library, without the command line: a nightly build,
//! a build that catches up missed nights in rounds, a rerun that writes
//! nothing, and a rebuild that matches the live warehouse.

use pipeline::{BuildRequest, Models, RebuildRequest, Stage, StageReport};
use storage::{Ledger, RunStatus, Warehouse};
use testkit::date;

mod year;

const DAYS: [&str; 4] = ["2024-12-29", "2024-12-30", "2024-12-31", "2025-01-01"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_build_runs_one_round_per_missed_day_and_rebuilds_to_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    testkit::stages::generate(&landing, 250, 4, 11).await;
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    let models = Models::defaults().unwrap();

    let first =
        pipeline::build(&warehouse, &models, &BuildRequest::nightly(&landing, Some(date(DAYS[0])))).await.unwrap();
    let ran: Vec<Stage> = first.stages.0.iter().map(|s| s.stage).collect();
    assert_eq!(ran, Stage::ALL.to_vec(), "a nightly build runs every stage in order");

    // Nights 2 to 4 were missed: one build catches up, one silver round per day.
    let catch_up =
        pipeline::build(&warehouse, &models, &BuildRequest::nightly(&landing, Some(date(DAYS[3])))).await.unwrap();
    let rounds = catch_up.stages.0.iter().find_map(|s| match &s.report {
        StageReport::Silver { rounds, .. } => Some(rounds.iter().map(|r| r.day).collect::<Vec<_>>()),
        _ => None,
    });
    assert_eq!(rounds, Some(vec![Some(date(DAYS[1])), Some(date(DAYS[2])), Some(date(DAYS[3]))]));
    let dims_doc = &catch_up.stages.0.iter().find(|s| s.stage == Stage::Dims).unwrap().doc;
    assert_eq!(dims_doc["rounds"].as_array().map(Vec::len), Some(3), "the dimensions merge once per day: {dims_doc}");

    // The same night again writes nothing.
    let again =
        pipeline::build(&warehouse, &models, &BuildRequest::nightly(&landing, Some(date(DAYS[3])))).await.unwrap();
    assert_eq!(again.stages.tables(), Vec::new(), "a rerun commits no table version");

    let runs = Ledger::new(&warehouse).runs().await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.status == RunStatus::Succeeded).count(), 3);

    let out = dir.path().join("rebuilt").display().to_string();
    let request = RebuildRequest { as_of: date(DAYS[3]), out: Some(out) };
    let rebuilt = pipeline::rebuild(&warehouse, &models, &request).await.unwrap();
    // The target is the last build of the day: the rerun, which left the
    // catch-up run's tables as they were.
    assert_eq!(rebuilt.target.run_id, again.run.id, "the rebuild reproduces the last build of the day");
    let differing: Vec<&str> = rebuilt.tables.iter().filter(|t| !t.matches).map(|t| t.table.as_str()).collect();
    assert!(differing.is_empty(), "tables that differ from the live run: {differing:?}");
    assert!(rebuilt.tables.iter().any(|t| t.table == "fact_claims" && t.live_rows > 0));
}

#[tokio::test]
async fn a_rebuild_into_the_live_warehouse_or_of_a_date_before_any_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("wh").display().to_string();
    let warehouse = Warehouse::open(&root).unwrap();
    let models = Models::defaults().unwrap();
    let err =
        pipeline::rebuild(&warehouse, &models, &RebuildRequest { as_of: date(DAYS[0]), out: None }).await.unwrap_err();
    assert!(err.is_user_error(), "{err}");
    assert!(err.to_string().contains("no build succeeded for 2024-12-29"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_night_with_too_little_history_builds_and_leaves_scoring_for_later() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    let config = synth::Config {
        members: 300,
        days: 2,
        seed: 5,
        claims_per_member_year: Some(12.0),
        ..synth::Config::new(&landing)
    };
    synth::generate(&config, &mut |_, _| {}).await.unwrap();
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    let models = Models::defaults().unwrap();
    let night =
        pipeline::build(&warehouse, &models, &BuildRequest::nightly(&landing, Some(config.start_date))).await.unwrap();
    let score = night.stages.0.iter().find(|s| s.stage == Stage::Score).unwrap();
    assert!(matches!(score.report, StageReport::ScoreSkipped(_)), "{}", score.doc);
    assert!(score.doc["warnings"][0].as_str().unwrap().contains("rows to train on"), "{}", score.doc);
    let facts = night.stages.0.iter().find(|s| s.stage == Stage::Facts).unwrap();
    assert!(facts.tables.iter().any(|t| t.table == "fact_claims" && t.rows > 0), "the night's facts are built");
    let runs = Ledger::new(&warehouse).runs().await.unwrap();
    assert_eq!(runs.last().unwrap().status, RunStatus::Succeeded);
}
