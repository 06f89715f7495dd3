//! Fixtures: generating into temporary folders and reading the results.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

pub(crate) fn generate(config: &synth::Config) -> synth::Summary {
    runtime().block_on(synth::generate(config, &mut |_, _| {})).expect("generate")
}

pub(crate) fn config(out: &Path, members: u64, days: u32, seed: u64) -> synth::Config {
    synth::Config { members, days, seed, ..synth::Config::new(out) }
}

/// A parsed CSV file: header and rows.
pub(crate) struct Csv {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Csv {
    pub(crate) fn read(path: &Path) -> Self {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let header = reader.headers().expect("header").iter().map(str::to_string).collect();
        let rows = reader.records().map(|r| r.expect("record").iter().map(str::to_string).collect()).collect();
        Self { header, rows }
    }

    pub(crate) fn col(&self, name: &str) -> usize {
        self.header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {:?}", self.header))
    }
}

/// The day folders of a landing root, oldest first.
pub(crate) fn day_folders(root: &Path) -> Vec<(NaiveDate, PathBuf)> {
    let mut days: Vec<(NaiveDate, PathBuf)> = std::fs::read_dir(root)
        .expect("landing root")
        .filter_map(|e| {
            let e = e.ok()?;
            let date = NaiveDate::parse_from_str(e.file_name().to_str()?, "%Y-%m-%d").ok()?;
            Some((date, e.path()))
        })
        .collect();
    days.sort();
    days
}

/// Every CSV of one source over all days: (relative file, 1-based row, row).
pub(crate) fn all_rows(root: &Path, file: &str) -> Vec<(String, usize, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for (date, dir) in day_folders(root) {
        let path = dir.join(file);
        if !path.exists() {
            continue;
        }
        let csv = Csv::read(&path);
        let rel = format!("{date}/{file}");
        for (i, row) in csv.rows.into_iter().enumerate() {
            out.push((rel.clone(), i + 1, csv.header.clone(), row));
        }
    }
    out
}

/// Every line of one NDJSON source over all days: (relative file, 1-based line, text).
pub(crate) fn all_lines(root: &Path, file: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for (date, dir) in day_folders(root) {
        let path = dir.join(file);
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("ndjson");
        for (i, line) in text.lines().enumerate() {
            out.push((format!("{date}/{file}"), i + 1, line.to_string()));
        }
    }
    out
}

/// `_truth/defects.csv`, keyed by (file, row).
pub(crate) fn defects(root: &Path) -> HashMap<(String, usize), (String, String)> {
    let csv = Csv::read(&root.join("_truth/defects.csv"));
    let (f, r, k, c) = (csv.col("file"), csv.col("row"), csv.col("kind"), csv.col("column"));
    csv.rows
        .iter()
        .map(|row| ((row[f].clone(), row[r].parse().expect("row number")), (row[k].clone(), row[c].clone())))
        .collect()
}

/// The official ICD-10-CM billable codes, without dots, read straight from
/// the shipped reference file.
pub(crate) fn official_icd() -> HashSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/reference/icd10cm_fy2026_billable.tsv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("icd list"))
        .read_to_string(&mut text)
        .expect("gunzip");
    text.lines().skip(1).filter_map(|l| l.split('\t').next()).map(str::to_string).collect()
}

/// Every file below `root` with its bytes, by relative path.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base").display().to_string();
                out.insert(rel, std::fs::read(&path).expect("file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A database URL for a server test, from the environment. Without it the
/// test is skipped, except under CI, where `.ci/run` always sets it.
pub(crate) fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("{var} must be set under CI (see .ci/run)"),
        _ => {
            eprintln!("skipped: set {var} to run this test against a real server");
            None
        }
    }
}
