//! `gold report` and the demo's report: a self-contained page with every
//! chart, rendered by headless Chromium with no console message.

use std::path::Path;
use std::process::Command;

use crate::{gold, gold_json, stderr, stdout};

const CHARTS: [&str; 6] = [
    "chart-dq-scorecard",
    "chart-claims-trend",
    "chart-prompt-pay",
    "chart-loss-ratio",
    "chart-fraud-scores",
    "chart-top-providers",
];

#[track_caller]
fn check_page(html: &str, landing: &Path) {
    for id in CHARTS {
        let at = html.find(&format!("<figure class=\"chart\" id=\"{id}\">")).unwrap_or_else(|| panic!("{id} missing"));
        assert!(html[at..].trim_start_matches(|c| c != '>').get(1..5) == Some("<svg"), "{id} holds an inline SVG");
    }
    assert_eq!(html.matches("<svg").count(), CHARTS.len(), "one SVG per chart");
    assert!(!html.contains("No data"), "every chart has data on a built warehouse");
    // Self-contained: no script, no link, no address of any kind.
    for banned in ["<script", "<link", "src=", "http:", "https:", "url("] {
        assert!(!html.contains(banned), "the page holds {banned:?}");
    }
    assert!(html.contains("Tables and versions shown") && html.contains("gold_claim_outcomes"));
    let pii = crate::sql::member_pii(landing);
    assert!(pii.len() > 100);
    let page = html.to_lowercase();
    for p in &pii {
        assert!(!page.contains(p.as_str()), "the analyst's report shows {p:?}");
    }
}

#[test]
fn demo_ends_with_a_report_that_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = gold(d, &["demo", "--out", "demo", "--members", "400", "--warehouse", "wh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("report: demo/report.html"), "{out}");
    let html = std::fs::read_to_string(d.join("demo/report.html")).unwrap();
    check_page(&html, &d.join("demo/landing"));
    assert!(html.contains("The warehouse as run 1 (demo, "), "the page names its run");

    // gold report: the same page for the same run, any role, as JSON.
    let (code, doc) = gold_json(d, &["report", "--out", "r/auditor.html", "--role", "auditor", "--warehouse", "wh"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["charts"].as_array().unwrap().len(), CHARTS.len(), "{doc}");
    assert!(doc["tables"]["gold_prompt_pay"].is_i64(), "{doc}");
    assert_eq!(std::fs::read_to_string(d.join("r/auditor.html")).unwrap(), html, "the report reads no PII");
    let (code, doc) = gold_json(d, &["report", "--out", "x.html", "--role", "nobody", "--warehouse", "wh"]);
    assert_eq!(code, Some(1), "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("no role \"nobody\""), "{doc}");
    let (code, doc) = gold_json(d, &["report", "--out", "x.html", "--warehouse", "empty"]);
    assert_eq!(code, Some(1), "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("gold build first"), "{doc}");

    let Ok(chromium) = std::env::var("GOLD_TEST_CHROMIUM") else {
        eprintln!(
            "skipped the browser check: GOLD_TEST_CHROMIUM is not set (tests/run.sh installs chromium and sets it)"
        );
        return;
    };
    let page = format!("file://{}", d.join("demo/report.html").display());
    let browse = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let o = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--enable-logging=stderr", "--v=0", "--window-size=1000,5000"])
            .args(extra)
            .arg(&page)
            .output()
            .expect("run chromium");
        assert!(o.status.success(), "chromium: {}", stderr(&o));
        o
    };
    let shot = d.join("report.png");
    let o = browse(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot: {} bytes", png.len());
    // The page has no script, so any console message is an error (a
    // resource that failed to load, a parse error).
    let console: Vec<&str> =
        std::str::from_utf8(&o.stderr).unwrap().lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    // The DOM Chromium built holds every chart's SVG.
    let dom = stdout(&browse(&["--dump-dom"]));
    for id in CHARTS {
        assert!(dom.contains(&format!("id=\"{id}\"><svg")), "{id} in the rendered DOM");
    }
    if let Ok(keep) = std::env::var("GOLD_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
