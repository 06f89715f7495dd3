//! The member table as of the last day, in SQLite, PostgreSQL and MariaDB.

use sqlx::Row;

use crate::support::{Csv, config, day_folders, generate, runtime, server_url};

/// The last day's extract without the rows injected as duplicates: the
/// table the extract was dumped from.
fn last_day_members(root: &std::path::Path) -> Vec<Vec<String>> {
    let (date, dir) = day_folders(root).pop().unwrap();
    let csv = Csv::read(&dir.join("members.csv"));
    let defects = crate::support::defects(root);
    let file = format!("{date}/members.csv");
    csv.rows
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !matches!(defects.get(&(file.clone(), i + 1)), Some((k, _)) if k.ends_with("duplicate")))
        .map(|(_, r)| r)
        .collect()
}

async fn table_rows(url: &str, table: &str) -> Vec<(String, String, Option<f64>)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    let quoted = if url.starts_with("postgres") {
        format!(r#"SELECT "MemberID", "Email", "IsActive" FROM {table} ORDER BY "MemberID""#)
    } else {
        format!("SELECT MemberID, Email, IsActive FROM {table} ORDER BY MemberID")
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(quoted)).fetch_all(&pool).await.expect("select");
    rows.iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<Option<f64>, _>(2))).collect()
}

#[track_caller]
fn check_table(root: &std::path::Path, url: &str, table: &str) {
    let expected = last_day_members(root);
    let got = runtime().block_on(table_rows(url, table));
    assert_eq!(got.len(), expected.len(), "{table}: one row per member in the last extract");
    let by_id: std::collections::HashMap<&str, &Vec<String>> = expected.iter().map(|r| (r[0].as_str(), r)).collect();
    for (id, email, active) in &got {
        let row = by_id.get(id.as_str()).unwrap_or_else(|| panic!("{id} is not in the last extract"));
        assert_eq!(email, &row[7], "{id} email");
        let flag = match active {
            Some(a) if *a == 1.0 => "1.0",
            Some(_) => "0.0",
            None => "",
        };
        // A wrong-type defect may have garbled the extract's flag, never the table's.
        if row[8] != "yes" {
            assert_eq!(flag, row[8], "{id} IsActive");
        }
    }
}

#[test]
fn sqlite_legacy_db_holds_the_member_table_of_the_last_day() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&config(dir.path(), 800, 4, 5));
    let url = format!("sqlite://{}", dir.path().join("legacy.db").display());
    check_table(dir.path(), &url, "members");
    assert_eq!(summary.member_table_rows as usize, last_day_members(dir.path()).len());
    assert!(!dir.path().join("legacy.db-wal").exists(), "no WAL file is left behind");
}

fn server_case(var: &str, table: &str) {
    let Some(url) = server_url(var) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth::Config {
        members_db: Some(url.clone()),
        members_table: table.to_string(),
        ..config(dir.path(), 600, 3, 9)
    };
    generate(&cfg);
    check_table(dir.path(), &url, table);
    // Generating again replaces the table instead of adding to it.
    let again = tempfile::tempdir().unwrap();
    generate(&synth::Config { out: again.path().to_path_buf(), ..cfg });
    check_table(again.path(), &url, table);
}

#[test]
fn postgres_members_db_holds_the_member_table_of_the_last_day() {
    server_case("GOLD_TEST_POSTGRES_URL", "synth_members_it");
}

#[test]
fn mariadb_members_db_holds_the_member_table_of_the_last_day() {
    server_case("GOLD_TEST_MYSQL_URL", "synth_members_it");
}

#[test]
fn unreachable_database_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth::Config {
        members_db: Some("postgres://gold:s3cret@127.0.0.1:1/none".into()),
        ..config(dir.path(), 5, 1, 1)
    };
    let err = runtime().block_on(synth::generate(&cfg, &mut |_, _| {})).unwrap_err();
    let text = err.to_string();
    assert!(err.is_user_error(), "{text}");
    assert!(text.contains("127.0.0.1:1") && !text.contains("s3cret"), "{text}");
}
