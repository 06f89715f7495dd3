//! Each rule action on a small hand-written feed.

use ingest::SourceCatalog;
use silver::SilverCatalog;
use storage::Warehouse;

use testkit::{date, rows, strings, write};

use crate::support::{build, lineage, lists, versions};

const SOURCES: &str = r#"
[[source]]
name = "items"
kind = "csv"
location = "items.csv"
load = "files-once"
drift = "rescue"
columns = [
  { name = "id", type = "string" },
  { name = "amount", type = "decimal(18,2)" },
  { name = "status", type = "string" },
  { name = "updated", type = "timestamp" },
]
"#;

fn model(fail_rule: &str) -> SilverCatalog {
    let text = format!(
        r#"
table = "silver_items"
key = ["id"]
order = ["updated"]
tie_break = ["_source_file", "_source_row"]
columns = [{{ name = "id" }}, {{ name = "amount" }}, {{ name = "status" }}, {{ name = "updated" }}]

[[source]]
bronze = "bronze_items"
select.id = "trim(id)"
select.amount = "amount"
select.status = "lower(status)"
select.updated = "updated"

[[expect]]
name = "big_amount"
rule = "amount < 1000"
action = "warn"

[[expect]]
name = "amount_positive"
rule = "amount > 0"
action = "drop"

[[expect]]
name = "status_known"
rule = "status IN ('open', 'closed')"
action = "quarantine"

[[expect]]
name = "id_format"
rule = "id LIKE 'I%'"
action = "quarantine"

{fail_rule}
"#
    );
    SilverCatalog::parse([("test.toml".to_string(), text)]).unwrap()
}

const THRESHOLD: &str = r#"
[[expect]]
name = "mostly_open"
rule = "status = 'open'"
action = "fail"
fail_above = 0.5
"#;

const DAY1: &str = "id,amount,status,updated
I1,10.00,OPEN,2025-01-01 10:00:00
I2,2000.00,open,2025-01-01 10:00:00
I3,-5.00,open,2025-01-01 10:00:00
I4,10.00,weird,2025-01-01 10:00:00
X5,10.00,bogus,2025-01-01 10:00:00
I1,10.00,OPEN,2025-01-01 10:00:00
I6,abc,open,2025-01-01 10:00:00
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_drop_quarantine_and_fail_each_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    write(&landing, "2025-01-01/items.csv", DAY1);
    let wh_dir = dir.path().join("warehouse");
    let warehouse = Warehouse::open(wh_dir.to_str().unwrap()).unwrap();
    let sources = SourceCatalog::parse(SOURCES, "test").unwrap();
    let silver = model(THRESHOLD);

    let report = build(&warehouse, 1, &sources, &silver, &landing, date("2025-01-01")).await.unwrap();
    let acct = &report.tables[0].batches[0];
    assert_eq!((acct.bronze_rows, acct.accepted, acct.duplicates, acct.quarantined, acct.dropped), (7, 2, 1, 3, 1));

    // warn: kept, flagged.
    let items = rows(&warehouse, "silver_items").await;
    let ids = strings(&items, "id");
    assert_eq!(ids, vec![Some("I1".to_string()), Some("I2".to_string())]);
    assert_eq!(strings(&items, "status")[0].as_deref(), Some("open"), "normalised to lower case");
    let warnings = lists(&items, "_dq_warnings");
    assert_eq!(warnings, vec![Vec::<String>::new(), vec!["big_amount".to_string()]]);
    assert_eq!(lineage(&items).len(), 2, "the duplicate I1 is counted, not in lineage");

    // quarantine: every failed rule, the batch and the raw row.
    let q = rows(&warehouse, "quarantine_silver_items").await;
    let q_ids = strings(&q, "id");
    let failed = lists(&q, "_failed_rules");
    let raw = strings(&q, "_raw");
    let at =
        |id: &str| q_ids.iter().position(|x| x.as_deref() == Some(id)).unwrap_or_else(|| panic!("{id} quarantined"));
    assert_eq!(failed[at("X5")], vec!["status_known", "id_format", "mostly_open"]);
    assert_eq!(failed[at("I4")], vec!["status_known", "mostly_open"]);
    let i6 = q_ids.iter().position(|x| x.is_none() || x.as_deref() == Some("I6")).unwrap();
    assert_eq!(failed[i6][0], "parsed", "a value that does not parse fails `parsed`");
    assert!(raw[at("X5")].as_deref().unwrap().contains("\"X5\""), "{:?}", raw[at("X5")]);
    assert!(raw[i6].as_deref().unwrap().contains("abc"), "the raw bronze row keeps the bad value: {:?}", raw[i6]);
    assert!(strings(&q, "_batch_id").iter().all(|b| b.as_deref() == Some("items-000001")));

    // dq_results: one row per batch, table and rule.
    let dq = rows(&warehouse, silver::DQ_RESULTS_TABLE).await;
    let (rule, evaluated, failed) = (strings(&dq, "rule"), strings(&dq, "rows_evaluated"), strings(&dq, "rows_failed"));
    let get = |name: &str| {
        let i = rule.iter().position(|r| r.as_deref() == Some(name)).unwrap_or_else(|| panic!("dq_results has {name}"));
        (evaluated[i].clone().unwrap(), failed[i].clone().unwrap())
    };
    assert_eq!(get("big_amount"), ("7".into(), "2".into()), "I2, and I6 whose amount is NULL");
    assert_eq!(get("amount_positive"), ("7".into(), "2".into()), "NULL fails a rule");
    assert_eq!(get("mostly_open"), ("7".into(), "2".into()));
    assert_eq!(get("exact_duplicate").1, "1");
    assert_eq!(get("dropped").1, "1");

    // fail over a threshold: an error, and nothing committed to silver.
    write(
        &landing,
        "2025-01-02/items.csv",
        "id,amount,status,updated\nI7,1.00,closed,2025-01-02 10:00:00\nI8,1.00,closed,2025-01-02 10:00:00\nI9,1.00,open,2025-01-02 10:00:00\n",
    );
    let before = versions(&wh_dir);
    let err = build(&warehouse, 2, &sources, &silver, &landing, date("2025-01-02")).await.unwrap_err();
    assert!(
        matches!(&err, silver::Error::ExpectationFailed { rule, failed: 2, evaluated: 3, .. } if rule == "mostly_open"),
        "{err}"
    );
    assert!(err.is_user_error());
    assert!(err.to_string().contains("nothing was committed"), "{err}");
    let after = versions(&wh_dir);
    for table in ["silver_items", "quarantine_silver_items", "dq_results"] {
        assert_eq!(after.get(table), before.get(table), "{table} unchanged by a failed run");
    }

    // fail without a threshold: one failing row is enough.
    let dir2 = tempfile::tempdir().unwrap();
    let warehouse2 = Warehouse::open(dir2.path().to_str().unwrap()).unwrap();
    let strict = model("[[expect]]\nname = \"no_bogus\"\nrule = \"status <> 'bogus'\"\naction = \"fail\"\n");
    let only_day1 = dir.path().join("day1");
    write(&only_day1, "2025-01-01/items.csv", DAY1);
    let err = build(&warehouse2, 1, &sources, &strict, &only_day1, date("2025-01-01")).await.unwrap_err();
    assert!(matches!(&err, silver::Error::ExpectationFailed { rule, failed: 1, .. } if rule == "no_bogus"), "{err}");
    assert!(!versions(dir2.path()).contains_key("silver_items"), "no silver table was created");
}

#[test]
fn a_malformed_model_names_its_file_and_the_problem() {
    let bad = |text: &str| {
        SilverCatalog::parse([("models/silver/x.toml".to_string(), text.to_string())]).unwrap_err().to_string()
    };
    let base = "table = \"silver_x\"\nkey = [\"id\"]\ncolumns = [{ name = \"id\" }]\n[[source]]\nbronze = \"bronze_x\"\nselect.id = \"id\"\n";
    assert!(bad("table = 1").contains("models/silver/x.toml"));
    let e = bad(&base.replace("key = [\"id\"]", "key = [\"nope\"]"));
    assert!(e.contains("key column \"nope\""), "{e}");
    let e = bad(&format!("{base}[[expect]]\nname = \"r\"\nrule = \"true\"\naction = \"explode\"\n"));
    assert!(e.contains("explode"), "{e}");
    let e = bad(&format!("{base}[[expect]]\nname = \"r\"\nrule = \"true\"\naction = \"fail\"\nfail_above = 5.0\n"));
    assert!(e.contains("fail_above"), "{e}");
}
