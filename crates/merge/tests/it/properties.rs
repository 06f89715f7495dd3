//! Property tests: random sequences of batches (inserts, updates, deletes,
//! resurrections, out-of-order changes, duplicates, NULLs) against a small
//! in-memory model of SCD2 history.

use std::collections::BTreeMap;

use merge::{Deletes, OPEN_END, Spec, Tracked};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::{Table, batch, dates, day, ints, micros, strings};

/// One source row: key, effective day, value (None = NULL), delete event.
type Change = (String, u32, Option<String>, bool);

/// A version in the model: (from, to, value, closed by a delete).
type Version = (i64, i64, Option<String>, bool);

/// The model: apply each batch's changes in (key, day, position) order to
/// sorted per-key lists of versions. Written for clarity, not speed.
fn model(batches: &[Vec<Change>]) -> BTreeMap<String, Vec<Version>> {
    let mut keys: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    for changes in batches {
        let mut ordered: Vec<&Change> = changes.iter().collect();
        ordered.sort_by_key(|c| (c.0.clone(), c.1));
        for (key, d, value, delete) in ordered {
            let t = micros(*d);
            let versions = keys.entry(key.clone()).or_default();
            let holding = versions.iter().position(|v| v.0 <= t && t < v.1);
            if *delete {
                if let Some(p) = holding
                    && !versions[p].3
                {
                    if versions[p].0 == t {
                        versions.remove(p);
                    } else {
                        versions[p].1 = t;
                        versions[p].3 = true;
                    }
                }
                continue;
            }
            match holding {
                Some(p) if versions[p].2 == *value => {}
                Some(p) if versions[p].0 == t => versions[p].2 = value.clone(),
                Some(p) => {
                    let (end, deleted) = (versions[p].1, versions[p].3);
                    versions[p].1 = t;
                    versions[p].3 = false;
                    versions.insert(p + 1, (t, end, value.clone(), deleted));
                }
                None => {
                    let end = versions.iter().map(|v| v.0).filter(|&f| f > t).min().unwrap_or(OPEN_END);
                    versions.push((t, end, value.clone(), false));
                    versions.sort_by_key(|v| v.0);
                }
            }
        }
    }
    keys.retain(|_, v| !v.is_empty());
    keys
}

fn spec() -> Spec {
    Spec {
        tracked: Tracked::Columns(vec!["value".into()]),
        order_by: vec!["seq".into()],
        effective_from: Some("at".into()),
        deletes: Deletes::Events { column: "op".into(), values: vec!["D".into()] },
        ..Spec::new(&["id"])
    }
}

fn to_batch(n: usize, changes: &[Change]) -> merge::Batch {
    let ids: Vec<Option<&str>> = changes.iter().map(|c| Some(c.0.as_str())).collect();
    let days: Vec<u32> = changes.iter().map(|c| c.1).collect();
    let seqs: Vec<i64> = (0..changes.len() as i64).collect();
    let values: Vec<Option<&str>> = changes.iter().map(|c| c.2.as_deref()).collect();
    let ops: Vec<Option<&str>> = changes.iter().map(|c| Some(if c.3 { "D" } else { "U" })).collect();
    let mut b = batch(
        &format!("batch{n}"),
        n as i64 + 1,
        day(28),
        vec![
            ("id", strings(&ids)),
            ("at", dates(&days)),
            ("seq", ints(&seqs)),
            ("op", strings(&ops)),
            ("value", strings(&values)),
        ],
    );
    // The rows in pieces of up to three, as a file read in parts comes.
    let whole = b.rows.remove(0);
    let rows = whole.num_rows();
    b.rows = (0..rows).step_by(3).map(|start| whole.slice(start, 3.min(rows - start))).collect();
    b
}

fn change() -> impl Strategy<Value = Change> {
    let key = prop::sample::select(vec!["k1", "k2", "k3", "k4"]).prop_map(String::from);
    // A small value space makes "unchanged" and "back to an old value" common;
    // "" and NULL are both in it.
    let value = prop::sample::select(vec![None, Some(""), Some("a"), Some("b")]).prop_map(|v| v.map(String::from));
    (key, 1u32..=27, value, prop::bool::weighted(0.15))
}

fn batches() -> impl Strategy<Value = Vec<Vec<Change>>> {
    // Duplicates arise from the small key, day and value spaces.
    prop::collection::vec(prop::collection::vec(change(), 1..8), 1..4)
}

/// Runs the batches on a table with deletion vectors (`dv`) or without;
/// returns the table, its history in the model's shape, its rows, and
/// whether the last batch wrote a version.
async fn run(batches: &[Vec<Change>], dv: bool) -> (Table, BTreeMap<String, Vec<Version>>, Vec<crate::Row>, bool) {
    let mut t = Table::new();
    t.target.deletion_vectors = dv;
    let spec = spec();
    let mut last_wrote = false;
    for (n, changes) in batches.iter().enumerate() {
        let out =
            merge::merge(&t.target, &spec, to_batch(n, changes)).await.unwrap_or_else(|e| panic!("batch {n}: {e}"));
        last_wrote = out.version.is_some();
    }
    let rows = if t.version().await.is_some() { t.rows("id").await } else { Vec::new() };
    let mut got: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    for r in &rows {
        got.entry(r.key.clone()).or_default().push((r.from, r.to, r.value.clone(), r.deleted));
    }
    (t, got, rows, last_wrote)
}

fn cases() -> u32 {
    std::env::var("GOLD_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

#[test]
fn random_batches_match_the_model_hold_the_invariants_and_rerun_as_no_ops() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    runner
        .run(&(batches(), any::<bool>()), |(batches, dv)| {
            runtime.block_on(async {
                let (t, got, rows, last_wrote) = run(&batches, dv).await;
                prop_assert_eq!(&got, &model(&batches));
                crate::assert_invariants(&rows);
                // The last batch again is a no-op: skipped by its transaction
                // when it wrote a version, and changing nothing when it did not.
                let before = t.version().await;
                let n = batches.len() - 1;
                let again = merge::merge(&t.target, &spec(), to_batch(n, &batches[n])).await;
                let again = again.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again.already_applied, last_wrote);
                prop_assert_eq!(again.version, None);
                prop_assert_eq!(t.version().await, before);
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_same_batches_give_the_same_rows_and_surrogate_keys_with_deletion_vectors_or_without() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(Config { cases: cases() / 10, failure_persistence: None, ..Config::default() });
    runner
        .run(&batches(), |batches| {
            runtime.block_on(async {
                let (_a, _, first, _) = run(&batches, true).await;
                let (_b, _, second, _) = run(&batches, true).await;
                prop_assert_eq!(&first, &second);
                let (_c, _, rewritten, _) = run(&batches, false).await;
                prop_assert_eq!(&first, &rewritten);
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
