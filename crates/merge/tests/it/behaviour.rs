//! Each SCD2 behaviour of SPEC.md, on a small table a reader can follow.

use merge::{Deletes, Error, OPEN_END, Spec, Tracked};

use crate::{Table, batch, bools, dates, day, micros, strings};

fn snapshot_spec() -> Spec {
    Spec { tracked: Tracked::AllExcept(vec!["touched".into()]), ..Spec::new(&["id"]) }
}

fn snapshot(seq: i64, d: u32, ids: &[&str], values: &[Option<&str>], touched: &[&str]) -> merge::Batch {
    let ids: Vec<Option<&str>> = ids.iter().map(|s| Some(*s)).collect();
    let touched: Vec<Option<&str>> = touched.iter().map(|s| Some(*s)).collect();
    batch(
        &format!("day{d}"),
        seq,
        day(d),
        vec![("id", strings(&ids)), ("value", strings(values)), ("touched", strings(&touched))],
    )
}

#[tokio::test]
async fn a_snapshot_versions_changes_closes_deletes_and_ignores_untracked_columns() {
    let t = Table::new();
    let spec = snapshot_spec();
    let day1 = snapshot(1, 1, &["a", "b", "c", "d"], &[Some("1"), Some("1"), Some("1"), None], &["x", "x", "x", "x"]);
    let first = t.merge(&spec, day1).await;
    assert_eq!(first.version, Some(0));
    assert_eq!(first.metrics.inserted, 4);

    // a: only the untracked column moves; b: changes; c: gone; d: NULL -> ""; e: new.
    let day2 =
        snapshot(2, 2, &["a", "b", "d", "e"], &[Some("1"), Some("2"), Some(""), Some("1")], &["y", "y", "y", "y"]);
    let second = t.merge(&spec, day2).await;
    assert_eq!(second.version, Some(1));
    let m = &second.metrics;
    assert_eq!((m.inserted, m.closed, m.unchanged, m.deleted), (3, 2, 1, 1), "{m:?}");
    assert_eq!(second.current_rows, 4);

    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    let of = |k: &str| rows.iter().filter(|r| r.key == k).cloned().collect::<Vec<_>>();
    assert_eq!(of("a").len(), 1, "a touched only in an untracked column must not version");
    let b = of("b");
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].value.as_deref(), b[0].to, b[0].current), (Some("1"), micros(2), false));
    assert_eq!((b[1].value.as_deref(), b[1].from, b[1].to, b[1].current), (Some("2"), micros(2), OPEN_END, true));
    let c = of("c");
    assert_eq!(c.len(), 1);
    assert!(c[0].deleted && !c[0].current && c[0].to == micros(2), "{c:?}");
    let d = of("d");
    assert_eq!(d.len(), 2, "NULL -> empty string is a change");
    assert_eq!((d[0].value.clone(), d[1].value.clone()), (None, Some(String::new())));
    assert_eq!(of("e").len(), 1);

    // The same batch again is a no-op by its transaction; the same data
    // under a later sequence changes nothing either.
    let again = t.merge(&spec, snapshot(2, 2, &["a"], &[Some("1")], &["y"])).await;
    assert!(again.already_applied);
    let same =
        snapshot(3, 3, &["a", "b", "d", "e"], &[Some("1"), Some("2"), Some(""), Some("1")], &["z", "z", "z", "z"]);
    let third = t.merge(&spec, same).await;
    assert_eq!(third.version, None, "an unchanged snapshot writes no version: {:?}", third.metrics);
    assert_eq!(t.version().await, Some(1));
    assert_eq!(t.rows("id").await, rows);
}

#[tokio::test]
async fn rebuilding_the_same_inputs_gives_the_same_rows_and_surrogate_keys() {
    let spec = snapshot_spec();
    let mut tables = Vec::new();
    for _ in 0..2 {
        let t = Table::new();
        t.merge(&spec, snapshot(1, 1, &["a", "b"], &[Some("1"), Some("1")], &["x", "x"])).await;
        t.merge(&spec, snapshot(2, 2, &["a", "c"], &[Some("2"), Some("1")], &["x", "x"])).await;
        tables.push(t.rows("id").await);
    }
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[0].len(), 4);
}

/// `tests/fixtures/encoding1` was written by `gold snapshot` at commit
/// 1e4b1ce, under hash encoding 1, from `encoding1-source/day1.csv` and
/// `day2.csv` (`--key id --track-all-except touched --date 2025-01-0N`):
/// the days below. This build merges into it in encoding 1, so its
/// unchanged rows stay unchanged, and the table keeps the version. Key
/// hashes and surrogate keys do not depend on the encoding: the table ends
/// with the same rows and surrogate keys as one built anew, in encoding 2.
#[tokio::test]
async fn a_table_written_in_encoding_1_is_merged_in_it_with_the_same_keys_as_encoding_2() {
    let spec = snapshot_spec();
    let ids = ["a", "b", "c", "d"];
    let day3 = || snapshot(3, 3, &ids, &[Some("v1"), Some("v2"), Some("v3"), None], &["z"; 4]);
    let old = Table::from_fixture("encoding1");
    assert_eq!(old.encoding().await.as_deref(), Some("1"));
    let outcome = old.merge(&spec, day3()).await;
    let m = &outcome.metrics;
    assert_eq!((m.inserted, m.closed, m.unchanged, m.deleted), (1, 1, 3, 0), "{m:?}");
    assert_eq!(old.encoding().await.as_deref(), Some("1"));

    let new = Table::new();
    new.merge(&spec, snapshot(1, 1, &ids, &[Some("v1"), Some("v1"), Some("v1"), None], &["x"; 4])).await;
    new.merge(&spec, snapshot(2, 2, &ids, &[Some("v1"), Some("v2"), Some("v1"), None], &["y"; 4])).await;
    new.merge(&spec, day3()).await;
    assert_eq!(new.encoding().await.as_deref(), Some("2"));
    let rows = new.rows("id").await;
    crate::assert_invariants(&rows);
    assert_eq!(rows.len(), 6);
    assert_eq!(old.rows("id").await, rows);

    // A table recording an encoding this build does not know (one from a
    // later build, say) is refused, naming it, and nothing is committed.
    let later = Table::from_fixture("encoding1");
    let log = later.target.url.to_file_path().expect("a folder").join("_delta_log/00000000000000000000.json");
    let text = std::fs::read_to_string(&log).expect("the first commit");
    let edited = text.replace(r#""gold.scd2.encoding":"1""#, r#""gold.scd2.encoding":"9""#);
    assert_ne!(edited, text, "the fixture's log records its encoding");
    std::fs::write(&log, edited).expect("rewrite the commit");
    let err = merge::merge(&later.target, &spec, day3()).await.expect_err("an unknown encoding");
    assert!(matches!(err, Error::SpecMismatch { .. }), "{err}");
    assert!(err.to_string().contains("hash encoding 9"), "{err}");
    assert_eq!(later.version().await, Some(1), "nothing committed");
}

fn events_spec() -> Spec {
    Spec {
        tracked: Tracked::Columns(vec!["value".into()]),
        type1: vec!["phone".into()],
        order_by: vec!["seq".into()],
        effective_from: Some("at".into()),
        deletes: Deletes::Events { column: "op".into(), values: vec!["D".into()] },
        ..Spec::new(&["id"])
    }
}

/// (id, effective day, seq, op, value, phone)
type Event<'a> = (&'a str, u32, i64, &'a str, Option<&'a str>, &'a str);

fn events(seq: i64, rows: &[Event<'_>]) -> merge::Batch {
    let ids: Vec<Option<&str>> = rows.iter().map(|r| Some(r.0)).collect();
    let at: Vec<u32> = rows.iter().map(|r| r.1).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let ops: Vec<Option<&str>> = rows.iter().map(|r| Some(r.3)).collect();
    let values: Vec<Option<&str>> = rows.iter().map(|r| r.4).collect();
    let phones: Vec<Option<&str>> = rows.iter().map(|r| Some(r.5)).collect();
    batch(
        &format!("b{seq}"),
        seq,
        day(28),
        vec![
            ("id", strings(&ids)),
            ("at", dates(&at)),
            ("seq", crate::ints(&seqs)),
            ("op", strings(&ops)),
            ("value", strings(&values)),
            ("phone", strings(&phones)),
        ],
    )
}

#[tokio::test]
async fn several_changes_late_splits_deletes_resurrection_and_type1() {
    let t = Table::new();
    let spec = events_spec();
    // Three changes of one key in one batch, given out of order.
    let first = t
        .merge(
            &spec,
            events(
                1,
                &[
                    ("a", 9, 3, "U", Some("v3"), "p"),
                    ("a", 1, 1, "I", Some("v1"), "p"),
                    ("a", 5, 2, "U", Some("v2"), "p"),
                ],
            ),
        )
        .await;
    assert_eq!(first.metrics.inserted, 3);
    let rows = t.rows("id").await;
    let spans: Vec<_> = rows.iter().map(|r| (r.value.clone().unwrap_or_default(), r.from, r.to)).collect();
    assert_eq!(
        spans,
        vec![
            ("v1".into(), micros(1), micros(5)),
            ("v2".into(), micros(5), micros(9)),
            ("v3".into(), micros(9), OPEN_END)
        ]
    );

    // A late change on day 3 splits [1, 5).
    let late = t.merge(&spec, events(2, &[("a", 3, 1, "U", Some("late"), "p")])).await;
    assert_eq!(late.metrics.late_split, 1);
    assert_eq!(late.changed.len(), 2, "the split version and the new one: {:?}", late.changed);
    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    let spans: Vec<_> = rows.iter().map(|r| (r.value.clone().unwrap_or_default(), r.from, r.to)).collect();
    assert_eq!(spans[0], ("v1".into(), micros(1), micros(3)));
    assert_eq!(spans[1], ("late".into(), micros(3), micros(5)));
    let kept_sk = rows[0].sk;

    // A type-1 change updates the current version in place.
    let phone = t.merge(&spec, events(3, &[("a", 20, 1, "U", Some("v3"), "q")])).await;
    assert_eq!((phone.metrics.type1_updated, phone.metrics.inserted), (1, 0));
    let rows = t.rows("id").await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].sk, kept_sk, "surrogate keys of untouched versions never change");

    // Delete on day 21, back on day 25.
    let gone = t.merge(&spec, events(4, &[("a", 21, 1, "D", None, "q")])).await;
    assert_eq!(gone.metrics.deleted, 1);
    let rows = t.rows("id").await;
    assert!(rows.iter().all(|r| !r.current), "a deleted key has no current row");
    assert!(rows[3].deleted && rows[3].to == micros(21));
    let back = t.merge(&spec, events(5, &[("a", 25, 1, "U", Some("v3"), "q")])).await;
    assert_eq!(back.metrics.resurrected, 1);
    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    assert_eq!(rows.len(), 5);
    assert!(rows[4].current && rows[4].from == micros(25));
}

#[tokio::test]
async fn a_new_column_fills_in_place_and_a_new_record_delete_leaves_a_tombstone() {
    let t = Table::new();
    let spec = Spec { deletes: Deletes::NewRecord, ..snapshot_spec() };
    t.merge(&spec, snapshot(1, 1, &["a", "b"], &[Some("1"), Some("1")], &["x", "x"])).await;
    let day2 = batch(
        "day2",
        2,
        day(2),
        vec![
            ("id", strings(&[Some("a")])),
            ("value", strings(&[Some("1")])),
            ("touched", strings(&[Some("x")])),
            ("extra", strings(&[Some("new")])),
        ],
    );
    let out = t.merge(&spec, day2).await;
    assert_eq!(out.columns_added, vec!["extra".to_string()]);
    assert_eq!((out.metrics.inserted, out.metrics.type1_updated, out.metrics.deleted), (1, 1, 1), "{:?}", out.metrics);
    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    let a: Vec<_> = rows.iter().filter(|r| r.key == "a").collect();
    assert_eq!(a.len(), 1, "a new column must not open a version");
    assert_eq!(a[0].extra.as_deref(), Some("new"));
    let b: Vec<_> = rows.iter().filter(|r| r.key == "b").collect();
    assert_eq!(b.len(), 2);
    assert!(b[1].current && b[1].deleted, "new-record keeps a current tombstone: {b:?}");

    // The next batch sees the column as tracked: a change to it versions.
    let day3 = batch(
        "day3",
        3,
        day(3),
        vec![
            ("id", strings(&[Some("a"), Some("b")])),
            ("value", strings(&[Some("1"), Some("1")])),
            ("touched", strings(&[Some("x"), Some("x")])),
            ("extra", strings(&[Some("newer"), None])),
        ],
    );
    let out = t.merge(&spec, day3).await;
    assert_eq!((out.metrics.closed, out.metrics.resurrected), (1, 1), "{:?}", out.metrics);
    crate::assert_invariants(&t.rows("id").await);
}

#[tokio::test]
async fn duplicates_are_counted_and_conflicts_refused_before_any_commit() {
    let t = Table::new();
    let spec = snapshot_spec();
    let dup = snapshot(1, 1, &["a", "a", "b"], &[Some("1"), Some("1"), Some("1")], &["x", "x", "x"]);
    let out = t.merge(&spec, dup).await;
    assert_eq!((out.metrics.duplicates, out.metrics.inserted), (1, 2));

    let conflict = snapshot(2, 2, &["a", "a"], &[Some("1"), Some("2")], &["x", "x"]);
    let err = merge::merge(&t.target, &spec, conflict).await.expect_err("conflicting rows");
    assert!(matches!(err, Error::Row { row: 2, .. }), "{err}");
    assert!(err.to_string().contains("row 1"), "{err}");
    assert_eq!(t.version().await, Some(0), "nothing committed");

    let other_key = Spec::new(&["value"]);
    let err = merge::merge(&t.target, &other_key, snapshot(3, 3, &["a"], &[Some("1")], &["x"])).await;
    assert!(matches!(err, Err(Error::SpecMismatch { .. })), "{err:?}");

    let no_key = Spec::new(&["member"]);
    let err = merge::merge(&Table::new().target, &no_key, snapshot(1, 1, &["a"], &[Some("1")], &["x"])).await;
    assert!(matches!(err, Err(Error::Column { ref column, .. }) if column == "member"), "{err:?}");
    let _ = bools(&[true]);
}

#[tokio::test]
async fn a_version_deleted_at_its_start_and_recreated_keeps_its_identity() {
    let t = Table::new();
    let spec = events_spec();
    t.merge(&spec, events(1, &[("a", 1, 1, "I", Some("v1"), "p")])).await;
    let first = t.rows("id").await;
    // Deleted at the very instant it started, then back with another value.
    let out = t.merge(&spec, events(2, &[("a", 1, 1, "D", None, "p"), ("a", 1, 2, "U", Some("v2"), "p")])).await;
    assert_eq!((out.metrics.deleted, out.metrics.inserted), (1, 1), "{:?}", out.metrics);
    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].value.as_deref(), rows[0].from, rows[0].sk), (Some("v2"), micros(1), first[0].sk));
}

/// A snapshot that leaves most keys as they are: their rewritten current
/// rows keep the stored untracked values and the stored float bits (the
/// hash treats -0.0 as 0.0), while the changed key's closed version keeps
/// every old value.
#[tokio::test]
async fn unchanged_rows_rewritten_beside_changes_keep_their_stored_values() {
    use deltalake::arrow::array::{AsArray as _, Float64Array};
    let t = Table::new();
    let spec = snapshot_spec();
    let ids = ["a", "b", "c", "d", "e", "f"];
    let snapshot_of = |seq: i64, d: u32, values: &[&str], touched: &str, score: f64| {
        let ids: Vec<Option<&str>> = ids.iter().map(|s| Some(*s)).collect();
        let values: Vec<Option<&str>> = values.iter().map(|s| Some(*s)).collect();
        let scores: Vec<f64> = (0..ids.len()).map(|i| if i == 0 { score } else { i as f64 }).collect();
        batch(
            &format!("day{d}"),
            seq,
            day(d),
            vec![
                ("id", strings(&ids)),
                ("value", strings(&values)),
                ("touched", strings(&vec![Some(touched); ids.len()])),
                ("score", std::sync::Arc::new(Float64Array::from(scores))),
            ],
        )
    };
    t.merge(&spec, snapshot_of(1, 1, &["1", "1", "1", "1", "1", "1"], "x", -0.0)).await;
    let second = t.merge(&spec, snapshot_of(2, 2, &["1", "1", "1", "1", "1", "2"], "y", 0.0)).await;
    let m = &second.metrics;
    assert_eq!((m.unchanged, m.closed, m.inserted), (5, 1, 1), "{m:?}");

    let table = deltalake::open_table(t.target.url.clone()).await.expect("open table");
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    ctx.register_table("dim", table.table_provider().await.expect("provider")).expect("register");
    let batches = ctx
        .sql("SELECT id, value, touched, score, is_current, batch_id FROM dim ORDER BY id, valid_from")
        .await
        .expect("query")
        .collect()
        .await
        .expect("collect");
    let mut rows = Vec::new();
    for b in &batches {
        let text = |c: usize| {
            let a = deltalake::arrow::compute::cast(b.column(c), &deltalake::arrow::datatypes::DataType::Utf8)
                .expect("text");
            (0..b.num_rows()).map(|r| a.as_string::<i32>().value(r).to_string()).collect::<Vec<_>>()
        };
        let (id, value, touched, batch_id) = (text(0), text(1), text(2), text(5));
        let score = b.column(3).as_primitive::<deltalake::arrow::datatypes::Float64Type>();
        let current = b.column(4).as_boolean();
        for r in 0..b.num_rows() {
            rows.push((
                id[r].clone(),
                value[r].clone(),
                touched[r].clone(),
                score.value(r).to_bits(),
                current.value(r),
                batch_id[r].clone(),
            ));
        }
    }
    let row = |id: &str, value: &str, touched: &str, score: f64, current: bool, batch: &str| {
        (id.to_string(), value.to_string(), touched.to_string(), score.to_bits(), current, batch.to_string())
    };
    assert_eq!(
        rows,
        vec![
            row("a", "1", "x", -0.0, true, "day1"),
            row("b", "1", "x", 1.0, true, "day1"),
            row("c", "1", "x", 2.0, true, "day1"),
            row("d", "1", "x", 3.0, true, "day1"),
            row("e", "1", "x", 4.0, true, "day1"),
            row("f", "1", "x", 5.0, false, "day1"),
            row("f", "2", "y", 5.0, true, "day2"),
        ]
    );
}

/// The written files as a reader sees them: columns whose values mostly
/// differ (the key, an e-mail address in `extra`) and the hashes carry no
/// Parquet dictionary, a low-cardinality column (a region in `value`)
/// keeps one, and the hashes carry no statistics; the values read back
/// whole.
#[tokio::test]
async fn unique_columns_are_written_without_a_dictionary_and_repeating_ones_with_one() {
    use deltalake::parquet::file::reader::{FileReader as _, SerializedFileReader};
    let t = Table::new();
    let n = 3_000;
    let ids: Vec<String> = (0..n).map(|i| format!("M{i:07}")).collect();
    let emails: Vec<String> = (0..n).map(|i| format!("member{i}@example.com")).collect();
    let regions: Vec<&str> = (0..n).map(|i| ["North", "South", "East", "West"][i % 4]).collect();
    let column = |values: Vec<&str>| strings(&values.into_iter().map(Some).collect::<Vec<_>>());
    let rows = batch(
        "day1",
        1,
        day(1),
        vec![
            ("id", column(ids.iter().map(String::as_str).collect())),
            ("extra", column(emails.iter().map(String::as_str).collect())),
            ("value", column(regions.clone())),
        ],
    );
    let outcome = t.merge(&Spec::new(&["id"]), rows).await;
    assert_eq!(outcome.metrics.inserted, n as u64);

    let folder = t.target.url.to_file_path().expect("a folder").join("is_current=true");
    let mut files = 0;
    for entry in std::fs::read_dir(&folder).expect("the current partition") {
        let path = entry.expect("an entry").path();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).expect("a file")).expect("Parquet");
        for group in reader.metadata().row_groups() {
            let chunk = |name: &str| {
                group.columns().iter().find(|c| c.column_path().string() == name).unwrap_or_else(|| panic!("{name}"))
            };
            for name in ["id", "extra", "key_hash", "attr_hash", "surrogate_key"] {
                assert!(chunk(name).dictionary_page_offset().is_none(), "{name} has a dictionary in {path:?}");
            }
            assert!(chunk("value").dictionary_page_offset().is_some(), "value has no dictionary in {path:?}");
            for name in ["key_hash", "attr_hash"] {
                assert!(chunk(name).statistics().is_none(), "{name} has statistics in {path:?}");
            }
            assert!(chunk("extra").statistics().is_some(), "extra lost its statistics in {path:?}");
        }
        files += 1;
    }
    assert!(files > 0, "no data file in {folder:?}");
    let stored = t.rows("id").await;
    let read: Vec<(String, Option<String>, Option<String>)> =
        stored.into_iter().map(|r| (r.key, r.extra, r.value)).collect();
    let written: Vec<(String, Option<String>, Option<String>)> =
        (0..n).map(|i| (ids[i].clone(), Some(emails[i].clone()), Some(regions[i].to_string()))).collect();
    assert_eq!(read, written);
}

/// The table's files as its log lists them: (in the current partition,
/// the rows its deletion vector hides), sorted.
async fn files_of(t: &Table) -> Vec<(bool, Option<i64>)> {
    let table = deltalake::open_table(t.target.url.clone()).await.expect("open table");
    let snapshot = table.snapshot().expect("snapshot");
    let mut files: Vec<(bool, Option<i64>)> = snapshot
        .log_data()
        .iter()
        .map(|f| {
            let current = f.partition_values_map().get("is_current").cloned().flatten().as_deref() == Some("true");
            (current, f.deletion_vector_descriptor().map(|dv| dv.cardinality))
        })
        .collect();
    files.sort();
    files
}

/// Ten keys, all valued "1" except `changed`, valued "2".
fn ten_keys(seq: i64, d: u32, changed: &[usize]) -> merge::Batch {
    let ids: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let values: Vec<Option<&str>> = (0..10).map(|i| Some(if changed.contains(&i) { "2" } else { "1" })).collect();
    snapshot(seq, d, &ids, &values, &["x"; 10])
}

#[tokio::test]
async fn a_current_file_keeps_its_untouched_rows_and_hides_replaced_ones_until_half_are_hidden() {
    let t = Table::new();
    let spec = snapshot_spec();
    t.merge(&spec, ten_keys(1, 1, &[])).await;
    let log = t.target.url.to_file_path().expect("a folder").join("_delta_log/00000000000000000000.json");
    let first = std::fs::read_to_string(log).expect("the first commit");
    assert!(first.contains(r#""readerFeatures":["deletionVectors"]"#), "{first}");

    // One key of ten changes: the day-1 file stays, hiding that key's old
    // row; the new version and the closed one go to new files.
    let second = t.merge(&spec, ten_keys(2, 2, &[1])).await;
    let m = &second.metrics;
    assert_eq!((m.unchanged, m.closed, m.inserted, second.current_rows), (9, 1, 1, 10), "{m:?}");
    assert_eq!(files_of(&t).await, [(false, None), (true, None), (true, Some(1))]);

    // Four more: the day-1 file hides half of its rows, read past its
    // vector by this merge and by DataFusion alike.
    let third = t.merge(&spec, ten_keys(3, 3, &[1, 2, 3, 4, 5])).await;
    let m = &third.metrics;
    assert_eq!((m.unchanged, m.closed, m.inserted, third.current_rows), (6, 4, 4, 10), "{m:?}");
    let hidden: Vec<i64> = files_of(&t).await.into_iter().filter_map(|(_, dv)| dv).collect();
    assert_eq!(hidden, [5]);

    // One more would hide more than half: the file is rewritten with only
    // the rows it kept, and no deletion vector is left.
    let fourth = t.merge(&spec, ten_keys(4, 4, &[1, 2, 3, 4, 5, 6])).await;
    let m = &fourth.metrics;
    assert_eq!((m.unchanged, m.closed, m.inserted, fourth.current_rows), (9, 1, 1, 10), "{m:?}");
    assert!(files_of(&t).await.iter().all(|(_, dv)| dv.is_none()), "{:?}", files_of(&t).await);

    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    assert_eq!(rows.len(), 16);
    for r in rows.iter().filter(|r| r.current) {
        let changed = ["k1", "k2", "k3", "k4", "k5", "k6"].contains(&r.key.as_str());
        assert_eq!(r.value.as_deref(), Some(if changed { "2" } else { "1" }), "{r:?}");
    }
    assert_eq!(rows.iter().filter(|r| !r.current).count(), 6);
}

#[tokio::test]
async fn a_table_made_without_deletion_vectors_rewrites_each_touched_file() {
    let mut t = Table::new();
    t.target.deletion_vectors = false;
    let spec = snapshot_spec();
    t.merge(&spec, ten_keys(1, 1, &[])).await;
    t.merge(&spec, ten_keys(2, 2, &[1])).await;
    let log = t.target.url.to_file_path().expect("a folder").join("_delta_log/00000000000000000000.json");
    let first = std::fs::read_to_string(log).expect("the first commit");
    assert!(!first.contains("deletionVectors"), "{first}");
    let files = files_of(&t).await;
    assert!(files.iter().all(|(_, dv)| dv.is_none()), "{files:?}");
    let rows = t.rows("id").await;
    crate::assert_invariants(&rows);
    assert_eq!((rows.len(), rows.iter().filter(|r| r.current).count()), (11, 10));
}
