//! A deterministic synthetic health insurer, "MediSure", with two source
//! systems, dirty feeds and injected fraud.
//!
//! [`generate`] writes one landing folder per day (`DIR/YYYY-MM-DD/`) with
//! every file of the product spec's "Sources", the member table as of the
//! last day into `DIR/legacy.db` (SQLite) and optionally a PostgreSQL or
//! MySQL/MariaDB database, and `DIR/_truth/` with every injected defect and
//! fraud label. The same [`Config`] always gives byte-identical files.
//!
//! Generation streams member by member: each member, provider and reference
//! file has its own random stream derived from the seed, so memory stays
//! bounded by the provider directory, not by the number of members.
//!
//! ```no_run
//! # async fn run() -> synth::Result<()> {
//! let config = synth::Config { members: 1_000, days: 3, seed: 7, ..synth::Config::new("landing") };
//! let summary = synth::generate(&config, &mut |_done, _total| {}).await?;
//! println!("{} rows, {} defects", summary.rows, summary.defects);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod codes;
mod db;
mod flow;
mod r#gen;
mod output;
mod rng;
mod world;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Serialize;

pub use output::SourceFile;

use crate::codes::Codes;
use crate::db::MemberTable;
use crate::r#gen::{Out, World};
use crate::output::{ExtraColumn, Landing, Truth, io_err};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of range.
    #[error("invalid generator setting: {0}")]
    InvalidConfig(String),
    /// The output folder already holds files and overwriting was not asked for.
    #[error("{} is not empty; choose another folder or pass --force to replace a previous generation", path.display())]
    NotEmpty {
        /// The folder.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The member database could not be written. The URL has its password removed.
    #[error("members database {url}: {source}")]
    Database {
        /// The database URL, without its password.
        url: String,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// A code set embedded in the binary is broken.
    #[error("embedded reference data: {0}")]
    Embedded(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the user can fix this (bad settings, unusable folder or
    /// database), as opposed to a bug.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::InvalidConfig(_) | Self::NotEmpty { .. } | Self::Io { .. } | Self::Database { .. } => true,
            Self::Embedded(_) | Self::Internal(_) => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Config {
    /// The landing root; day folders go directly below it.
    pub out: PathBuf,
    /// Distinct members over the whole history.
    pub members: u64,
    /// Day folders to write.
    pub days: u32,
    /// The first day.
    pub start_date: NaiveDate,
    /// The random seed: the same seed gives the same files.
    pub seed: u64,
    /// Probability that a row carries an injected defect.
    pub defect_rate: f64,
    /// Share of enrollment-system claims that are fraudulent.
    pub fraud_rate: f64,
    /// A steady daily flow of this many claims per member-year (over both
    /// source systems), instead of a fixed number of claims per member over
    /// the whole history: see the `flow` module.
    pub claims_per_member_year: Option<f64>,
    /// Also write the member table into this database (`postgres://…`,
    /// `mysql://…`, `sqlite://…`).
    pub members_db: Option<String>,
    /// The table name used in `members_db`.
    pub members_table: String,
    /// Replace an earlier generation in `out`.
    pub force: bool,
}

/// The default first day: the generated history spans 2025-01-01.
pub const DEFAULT_START: (i32, u32, u32) = (2024, 12, 29);
/// The default number of days.
pub const DEFAULT_DAYS: u32 = 7;

impl Config {
    /// The defaults, writing into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        let (y, m, d) = DEFAULT_START;
        Self {
            out: out.into(),
            members: 1_000,
            days: DEFAULT_DAYS,
            start_date: NaiveDate::from_ymd_opt(y, m, d).expect("valid default date"),
            seed: 42,
            defect_rate: 0.02,
            fraud_rate: 0.02,
            claims_per_member_year: None,
            members_db: None,
            members_table: "members".to_string(),
            force: false,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.members == 0 {
            return bad("--members must be at least 1".into());
        }
        if self.members > 99_999_999 {
            return bad("--members must be at most 99,999,999".into());
        }
        if !(1..=3650).contains(&self.days) {
            return bad(format!("--days must be between 1 and 3650, got {}", self.days));
        }
        if !(0.0..=0.5).contains(&self.defect_rate) {
            return bad(format!("--defect-rate must be between 0 and 0.5, got {}", self.defect_rate));
        }
        if !(0.0..=0.5).contains(&self.fraud_rate) {
            return bad(format!("--fraud-rate must be between 0 and 0.5, got {}", self.fraud_rate));
        }
        if let Some(r) = self.claims_per_member_year
            && !(0.1..=100.0).contains(&r)
        {
            return bad(format!("--claims-per-member-year must be between 0.1 and 100, got {r}"));
        }
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The landing root written.
    pub out: PathBuf,
    /// Distinct members.
    pub members: u64,
    /// Providers in the directory.
    pub providers: u64,
    /// Day folders written.
    pub days: u32,
    /// The first day folder's date.
    pub first_day: NaiveDate,
    /// The last day folder's date.
    pub last_day: NaiveDate,
    /// Data rows (not headers) in all files.
    pub rows: u64,
    /// Data rows per file, by path relative to `out`.
    pub files: BTreeMap<String, u64>,
    /// Data rows per source file name, over all days.
    pub by_source: BTreeMap<&'static str, u64>,
    /// Rows with an injected defect.
    pub defects: u64,
    /// Injected defects by kind.
    pub defects_by_kind: BTreeMap<&'static str, u64>,
    /// Claims labelled fraudulent in `_truth/`.
    pub fraud_labels: u64,
    /// Fraud labels by pattern.
    pub fraud_by_pattern: BTreeMap<&'static str, u64>,
    /// Rows in the member table of `legacy.db` (and of `--members-db`).
    pub member_table_rows: u64,
}

/// Day folders opened at once; longer histories take several passes.
const DAYS_PER_PASS: u32 = 64;

/// Generates the insurer into `config.out`. `progress` is called with
/// (members done, members to do) now and then.
pub async fn generate(config: &Config, progress: &mut dyn FnMut(u64, u64)) -> Result<Summary> {
    config.validate()?;
    prepare_out(config)?;
    let codes = Codes::load()?;
    let world = World::new(config, codes);
    let mut truth = Truth::create(&config.out)?;
    let extra = (config.days >= 2).then_some(config.days / 2).map(|day| ExtraColumn {
        day,
        file: SourceFile::ClaimsBatch,
        name: "PlaceOfService",
    });

    let legacy = config.out.join("legacy.db");
    let mut sinks = vec![MemberTable::create(&format!("sqlite://{}?mode=rwc", legacy.display()), "members").await?];
    if let Some(url) = &config.members_db {
        sinks.push(MemberTable::create(url, &config.members_table).await?);
    }

    let passes: Vec<std::ops::Range<u32>> =
        (0..config.days).step_by(DAYS_PER_PASS as usize).map(|d| d..(d + DAYS_PER_PASS).min(config.days)).collect();
    let total = config.members * passes.len() as u64;
    let mut files = BTreeMap::new();
    for (p, range) in passes.iter().enumerate() {
        let pass_extra = extra.as_ref().filter(|e| range.contains(&e.day)).map(|e| ExtraColumn {
            day: e.day,
            file: e.file,
            name: e.name,
        });
        tracing::debug!(
            pass = p + 1,
            of = passes.len(),
            first_day = range.start,
            last_day = range.end - 1,
            "generating day folders"
        );
        let mut landing = Landing::new(&config.out, config.start_date, range.clone(), pass_extra);
        let mut out = Out { landing: &mut landing, truth: &mut truth };
        world.write_reference(&mut out)?;
        let last_pass = p + 1 == passes.len();
        for i in 0..config.members {
            let row = world.member(i, &mut out)?;
            if let (true, Some(row)) = (last_pass, row) {
                for sink in &mut sinks {
                    sink.push(row.clone()).await?;
                }
            }
            if i % 1024 == 0 {
                progress(p as u64 * config.members + i, total);
            }
        }
        let written = landing.finish()?;
        // The schema-drift file is listed as a defect of its own, at row 0
        // (the header).
        if let Some(e) = extra.as_ref().filter(|e| range.contains(&e.day)) {
            let file = format!("{}/{}", Landing::day_name(config.start_date, e.day), e.file.file_name());
            if written.contains_key(&file) {
                truth.defect(
                    &output::RowRef { file, row: 0 },
                    "extra_column",
                    e.name,
                    "",
                    "column not in the source's declared schema",
                )?;
            }
        }
        files.extend(written);
    }
    progress(total, total);
    let mut member_table_rows = 0;
    for sink in sinks {
        member_table_rows = sink.finish().await?;
    }
    let output::TruthCounts { defects, fraud_labels, defects_by_kind, fraud_by_pattern } = truth.finish()?;

    let mut by_source = BTreeMap::new();
    for (path, rows) in &files {
        let name = SourceFile::ALL.iter().map(|f| f.file_name()).find(|n| path.ends_with(n)).unwrap_or("other");
        *by_source.entry(name).or_default() += rows;
    }
    let summary = Summary {
        out: config.out.clone(),
        members: config.members,
        providers: world.providers.len() as u64,
        days: config.days,
        first_day: config.start_date,
        last_day: config.start_date + chrono::Duration::days(i64::from(config.days) - 1),
        rows: files.values().sum(),
        files,
        by_source,
        defects,
        defects_by_kind,
        fraud_labels,
        fraud_by_pattern,
        member_table_rows,
    };
    write_manifest(config, &summary)?;
    tracing::debug!(rows = summary.rows, defects = summary.defects, fraud_labels = summary.fraud_labels, out = %config.out.display(), "generated");
    Ok(summary)
}

/// `_truth/manifest.json`: the settings (never the database URL, nor the
/// output path, so that the file is the same wherever it is written) and
/// the row counts, for tests and evaluation.
fn write_manifest(config: &Config, summary: &Summary) -> Result<()> {
    let path = config.out.join("_truth").join("manifest.json");
    let mut summary = serde_json::to_value(summary).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(map) = summary.as_object_mut() {
        map.remove("out");
    }
    let manifest = serde_json::json!({
        "generator": "gold synth",
        "members": config.members,
        "days": config.days,
        "start_date": config.start_date,
        "seed": config.seed,
        "defect_rate": config.defect_rate,
        "fraud_rate": config.fraud_rate,
        "summary": summary,
    });
    let mut manifest = manifest;
    if let Some(r) = config.claims_per_member_year {
        manifest["claims_per_member_year"] = serde_json::json!(r);
    }
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    fs::write(&path, text + "\n").map_err(io_err(&path))
}

/// Is `name` something `generate` writes at the landing root?
fn is_generated(name: &str) -> bool {
    name == "_truth"
        || name == "legacy.db"
        || name == "legacy.db-journal"
        || NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
}

/// Makes sure `out` exists and holds nothing but, with `force`, an earlier
/// generation, which is removed. Anything else in the folder is left alone
/// and stops the run.
fn prepare_out(config: &Config) -> Result<()> {
    let out = &config.out;
    fs::create_dir_all(out).map_err(io_err(out))?;
    let mut entries = Vec::new();
    for entry in fs::read_dir(out).map_err(io_err(out))? {
        entries.push(entry.map_err(io_err(out))?.path());
    }
    if entries.is_empty() {
        return Ok(());
    }
    let ours = |p: &Path| p.file_name().and_then(|n| n.to_str()).is_some_and(is_generated);
    if !config.force || !entries.iter().all(|p| ours(p)) {
        return Err(Error::NotEmpty { path: out.clone() });
    }
    for p in entries {
        let removed = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        removed.map_err(io_err(&p))?;
    }
    Ok(())
}
