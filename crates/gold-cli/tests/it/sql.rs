//! `gold sql`: read-only, time travel, and the analyst's masked view.

use std::path::Path;
use std::process::Command;

use crate::{gold_json, stderr, stdout};

const KEY: &str = "a test secret, not a real one";

fn gold_sql(dir: &Path, key: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gold"));
    cmd.args(["--warehouse", "wh", "sql"])
        .args(args)
        .current_dir(dir)
        .env_remove("GOLD_WAREHOUSE")
        .env("RUST_LOG", "warn");
    match key {
        Some(k) => cmd.env("GOLD_PII_KEY", k),
        None => cmd.env_remove("GOLD_PII_KEY"),
    };
    cmd.output().unwrap()
}

#[track_caller]
fn sql_ok(dir: &Path, args: &[&str]) -> String {
    let o = gold_sql(dir, Some(KEY), args);
    assert!(o.status.success(), "gold sql {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn count(dir: &Path, args: &[&str]) -> i64 {
    let out = sql_ok(dir, &[args, &["--format", "csv"]].concat());
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// The names, emails and dates of birth of every member the landing ever
/// sent, lower-cased.
pub(crate) fn member_pii(landing: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(landing).unwrap() {
        let file = day.unwrap().path().join("members.csv");
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() < 8 {
                continue;
            }
            let (name, dob, email) = (cols[1].trim(), cols[2].trim(), cols[7].trim());
            if name.len() > 5 {
                out.push(name.to_lowercase());
            }
            if email.contains('@') {
                out.push(email.to_lowercase());
            }
            if dob.len() == 10 && dob < "2010" {
                out.push(dob.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn sql_is_read_only_travels_in_time_and_masks_pii_for_analysts_in_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::gold_ok(d, &["generate", "--out", "landing", "--members", "150", "--days", "2", "--seed", "5"]);
    let mut runs = Vec::new();
    for day in ["2024-12-29", "2024-12-30"] {
        let (code, doc) = gold_json(d, &["--warehouse", "wh", "build", "--landing", "landing", "--date", day]);
        assert_eq!(code, Some(0), "{doc}");
        runs.push(doc["run_id"].as_i64().unwrap());
    }

    // Read-only: every kind of write is refused, and nothing changes.
    let claims = count(d, &["SELECT count(*) AS n FROM fact_claims"]);
    assert!(claims > 0);
    for statement in [
        "DROP TABLE fact_claims",
        "DELETE FROM fact_claims",
        "INSERT INTO fact_claims SELECT * FROM fact_claims",
        "CREATE TABLE x AS SELECT 1",
        "COPY fact_claims TO 'out.csv'",
        "UPDATE fact_claims SET claim_id = 'x'",
    ] {
        let o = gold_sql(d, Some(KEY), &[statement]);
        assert_eq!(o.status.code(), Some(1), "{statement}: {}", stderr(&o));
        assert!(stderr(&o).contains("read-only"), "{statement}: {}", stderr(&o));
    }
    assert!(!d.join("out.csv").exists());
    assert_eq!(count(d, &["SELECT count(*) AS n FROM fact_claims"]), claims);

    // Time travel: day 1's run has fewer claims; the one table's version 0
    // is day 1's; a timestamp before any run finds none.
    let day1 = count(d, &["SELECT count(*) AS n FROM fact_claims", "--as-of-run", &runs[0].to_string()]);
    assert!(day1 < claims, "day 1 {day1} < day 2 {claims}");
    assert_eq!(count(d, &["SELECT count(*) AS n FROM fact_claims", "--as-of-version", "0"]), day1);
    assert_eq!(count(d, &["SELECT count(*) AS n FROM fact_claims", "--as-of-timestamp", "2100-01-01"]), claims);
    let o = gold_sql(d, Some(KEY), &["SELECT 1 FROM fact_claims", "--as-of-timestamp", "2000-01-01"]);
    assert_eq!(o.status.code(), Some(1));

    // The analyst sees no name, email or full date of birth in any table.
    let pii = member_pii(&d.join("landing"));
    assert!(pii.len() > 100, "{}", pii.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tables = rt.block_on(storage::Warehouse::open(&d.join("wh").display().to_string()).unwrap().tables()).unwrap();
    let mut seen_by_auditor = 0;
    for table in tables.keys() {
        let query = format!("SELECT * FROM {table}");
        let analyst = sql_ok(d, &[&query, "--format", "csv"]).to_lowercase();
        for needle in &pii {
            assert!(!analyst.contains(needle.as_str()), "{table} shows {needle} to an analyst");
        }
        let auditor = sql_ok(d, &[&query, "--format", "csv", "--role", "auditor"]).to_lowercase();
        seen_by_auditor += pii.iter().filter(|n| auditor.contains(n.as_str())).count();
    }
    assert!(seen_by_auditor > 100, "the auditor sees PII: {seen_by_auditor}");

    // Pseudonyms are stable, so analysts still join on member ids.
    let joined = count(
        d,
        &["SELECT count(*) FROM silver_members s JOIN dim_members m ON s.member_id = m.member_id AND m.is_current"],
    );
    assert!(joined > 100, "{joined}");
    let ids = sql_ok(d, &["SELECT member_id, dob FROM silver_members LIMIT 3", "--format", "csv"]);
    assert!(ids.lines().skip(1).all(|l| l.starts_with("p-") && l.split(',').nth(1).unwrap().len() == 4), "{ids}");
    // Without the key, pseudonyms cannot be made: a clear error for a query
    // that reads an id, and none for one that does not.
    let o = gold_sql(d, None, &["SELECT member_id FROM silver_members"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("GOLD_PII_KEY"), "{}", stderr(&o));
    let o = gold_sql(d, None, &["SELECT count(*) AS n FROM fact_claims", "--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().nth(1).unwrap().parse::<i64>().unwrap(), claims);
    // Unknown roles and tables are named.
    let o = gold_sql(d, Some(KEY), &["SELECT 1", "--role", "intern"]);
    assert!(o.status.code() == Some(1) && stderr(&o).contains("intern"), "{}", stderr(&o));
    let o = gold_sql(d, Some(KEY), &["SELECT * FROM no_such_table"]);
    assert!(o.status.code() == Some(1) && stderr(&o).contains("no_such_table"), "{}", stderr(&o));
}
