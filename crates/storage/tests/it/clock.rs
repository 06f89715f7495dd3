//! The run clock, and the invariant that only it reads the wall clock.

use std::path::{Path, PathBuf};

use storage::RunClock;
use testkit::date;

#[tokio::test]
async fn a_dated_run_clock_reads_midnight_of_its_date() {
    let clock = RunClock::for_date(date("2025-01-01"));
    assert_eq!(clock.now().to_rfc3339(), "2025-01-01T00:00:00+00:00");
    assert_eq!(clock.logical_date(), date("2025-01-01"));
    assert_eq!(clock.now(), RunClock::for_date(date("2025-01-01")).now(), "the same date gives the same clock");
}

/// The calls that read the wall clock.
const WALL_CLOCK_READS: [&str; 3] = ["Utc::now", "Local::now", "SystemTime::now"];

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// ARCHITECTURE.md: nothing reads the wall clock except `storage::wall_clock`
/// (crates/storage/src/clock.rs). Every other source file of every crate
/// takes its time from the run clock.
#[test]
fn only_the_clock_module_reads_the_wall_clock() {
    let storage = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = storage.join("..");
    let clock = std::fs::canonicalize(storage.join("src").join("clock.rs")).unwrap();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 20, "the scan found the workspace's sources: {files:?}");
    let mut readers = Vec::new();
    for file in files.iter().filter(|f| std::fs::canonicalize(f).unwrap() != clock) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if WALL_CLOCK_READS.iter().any(|call| line.contains(call)) {
                let path = file.strip_prefix(&crates).unwrap_or(file);
                readers.push(format!("crates/{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        readers.is_empty(),
        "only storage::wall_clock reads the wall clock; call it instead:\n{}",
        readers.join("\n")
    );
}
