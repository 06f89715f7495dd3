//! Referential integrity: orphans quarantined, then released when their
//! parent arrives; members missing from a full extract marked deleted.

use ingest::SourceCatalog;
use silver::SilverCatalog;
use storage::Warehouse;

use testkit::{date, rows, strings, write};

use crate::support::{build, lineage, lists};

const MEMBERS_HEADER: &str = "MemberID,Name,DOB,Gender,Region,PlanType,EffectiveDate,Email,IsActive,LastUpdated\n";
const CLAIMS_HEADER: &str = "ClaimID,MemberID,ProviderID,ClaimDate,ServiceDate,Amount,Status,ICD10Codes,CPTCodes,ClaimType,SubmissionChannel,Notes,IngestTimestamp\n";

fn member(id: &str) -> String {
    format!("{id},Ann Lee,1980-02-03,f,Northeast,HMO,2020-01-01,ann@example.com,1.0,2024-12-01 08:00:00\n")
}

fn claim(id: &str, member: &str) -> String {
    format!(
        "{id},{member},1234567893,2025-01-01,2025-01-01,120.50,Submitted,E11.9;i10,99213,Professional,EDI,,2025-01-01T09:00:00Z\n"
    )
}

/// The default models with claims of unknown members quarantined rather
/// than flagged for inferred members.
fn quarantining_orphans() -> SilverCatalog {
    let flagged = "key = \"member_id\"\non_missing = \"flag\"";
    SilverCatalog::parse(reference::models::SILVER.iter().map(|(name, text)| {
        let text = if *name == "claims.toml" {
            assert!(text.contains(flagged), "the claims model flags unknown members");
            text.replace(flagged, "key = \"member_id\"\non_missing = \"quarantine\"")
        } else {
            text.to_string()
        };
        (name.to_string(), text)
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_claim_is_released_on_the_run_after_its_member_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    write(&landing, "2025-01-01/members.csv", &format!("{MEMBERS_HEADER}{}{}", member("M1"), member("M3")));
    write(
        &landing,
        "2025-01-01/claims_batch.csv",
        &format!("{CLAIMS_HEADER}{}{}{}", claim("C1", "M1"), claim("C2", "M2"), claim("C9", "M9")),
    );
    let warehouse = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    let sources = SourceCatalog::default_catalog().unwrap();
    let silver = quarantining_orphans();

    let day1 = build(&warehouse, 1, &sources, &silver, &landing, date("2025-01-01")).await.unwrap();
    let claims = rows(&warehouse, "silver_claims").await;
    assert_eq!(strings(&claims, "claim_id"), vec![Some("C1".to_string())]);
    assert_eq!(lists(&claims, "icd10_codes")[0], vec!["E119", "I10"], "codes split and normalised");
    assert!(
        lists(&claims, "_dq_warnings")[0].contains(&"provider_known".to_string()),
        "unknown provider: kept and flagged"
    );
    let q = rows(&warehouse, "quarantine_silver_claims").await;
    assert_eq!(strings(&q, "claim_id"), vec![Some("C2".to_string()), Some("C9".to_string())]);
    assert!(lists(&q, "_failed_rules").iter().all(|r| r.contains(&"member_known".to_string())));
    assert_eq!(day1.tables.iter().find(|t| t.table == "silver_claims").unwrap().released, 0);
    let members = rows(&warehouse, "silver_members").await;
    assert_eq!(strings(&members, "gender")[0].as_deref(), Some("F"), "gender upper-cased");
    assert_eq!(lists(&members, "_dq_warnings")[0], vec!["gender_as_sent"], "and flagged as not sent upper case");

    // Day 2: M2 arrives, M3 is gone from the extract.
    write(&landing, "2025-01-02/members.csv", &format!("{MEMBERS_HEADER}{}{}", member("M1"), member("M2")));
    let day2 = build(&warehouse, 2, &sources, &silver, &landing, date("2025-01-02")).await.unwrap();
    let claims_report = day2.tables.iter().find(|t| t.table == "silver_claims").unwrap();
    assert_eq!(claims_report.released, 1);
    let claims = rows(&warehouse, "silver_claims").await;
    let mut ids: Vec<_> = strings(&claims, "claim_id").into_iter().flatten().collect();
    ids.sort();
    assert_eq!(ids, vec!["C1", "C2"]);
    assert!(
        lineage(&claims).iter().any(|e| e.batch == "claims_batch-000001" && e.row == 2),
        "C2 keeps its original bronze row in lineage"
    );
    let q = rows(&warehouse, "quarantine_silver_claims").await;
    let released: Vec<_> = strings(&q, "claim_id").into_iter().zip(strings(&q, "_released_at")).collect();
    assert!(released.iter().any(|(c, r)| c.as_deref() == Some("C2") && r.is_some()), "{released:?}");
    assert!(
        released.iter().any(|(c, r)| c.as_deref() == Some("C9") && r.is_none()),
        "a never-enrolled member's claim stays"
    );

    let members = rows(&warehouse, "silver_members").await;
    let deleted: Vec<_> = strings(&members, "member_id").into_iter().zip(strings(&members, "_is_deleted")).collect();
    assert!(deleted.contains(&(Some("M3".into()), Some("true".into()))), "{deleted:?}");
    assert!(deleted.contains(&(Some("M1".into()), Some("false".into()))), "{deleted:?}");

    // Day 3: nothing new lands; the run changes nothing.
    let day3 = build(&warehouse, 3, &sources, &silver, &landing, date("2025-01-03")).await.unwrap();
    assert!(day3.tables.iter().all(|t| t.version.is_none() && t.quarantine_version.is_none()), "{:?}", day3.tables);
}
