//! The command line, as clap sees it. Doc comments are the `--help` text.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// gold: one binary that turns a health insurer's raw feeds into a governed,
/// versioned gold layer on Delta Lake.
///
/// Results go to stdout; logs and progress bars go to stderr. Exit codes:
/// 0 ok, 1 a user or data error, 2 an internal error.
#[derive(Debug, Parser)]
#[command(name = "gold", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    /// Configuration file [default: ./gold.toml when it exists].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Warehouse root: a local folder or a URI [default: the config's
    /// warehouse.root, else $GOLD_WAREHOUSE, else ./warehouse].
    #[arg(long, global = true, value_name = "URI")]
    pub(crate) warehouse: Option<String>,

    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Less log output on stderr (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub(crate) quiet: u8,

    /// How results are printed on stdout. With json, stdout holds exactly one
    /// JSON document, also on failure.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output_format: OutputFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Generate a small insurer and build it end to end: the quickest way to
    /// see gold work.
    Demo(DemoArgs),
    /// Write a gold.toml and a models/ folder to start from.
    Init(InitArgs),
    /// Generate a deterministic synthetic insurer: one landing folder per day,
    /// the legacy member database, and the truth about injected defects and
    /// fraud.
    Generate(GenerateArgs),
    /// List the run ledger: every run, its status and the table versions it
    /// left.
    Runs,
    /// Build the warehouse from what has landed, stage by stage: ingest
    /// (bronze), silver, dims, facts, score and aggregates.
    Build(BuildArgs),
    /// Ingest what has landed into bronze: the first stage of build, alone.
    /// Reads every day folder up to --date that has not been ingested yet.
    Ingest(IngestArgs),
    /// Make or extend an SCD Type 2 table from a full snapshot (CSV or
    /// Parquet), like `dbt snapshot` but with no project: NULL-safe change
    /// detection, stable surrogate keys, hard deletes, exactly-once by run
    /// date.
    Snapshot(SnapshotArgs),
    /// Train a fraud model on the facts of the training window before
    /// --date and store it in gold_fraud_models (a versioned artifact; the
    /// same facts and seed give the same model).
    Train(DateArgs),
    /// Score every claim and provider with the fraud model current at
    /// --date: gold_fraud_scores and gold_provider_risk.
    Score(DateArgs),
    /// Measure the stored fraud scores against labels of injected fraud:
    /// ROC-AUC, average precision and precision@k, overall and per
    /// pattern, for claims and providers.
    Evaluate(EvaluateArgs),
    /// The warehouse's history: every run and the table versions it left,
    /// or, for one table, every Delta version with its operation, run and
    /// row counts.
    History(HistoryArgs),
    /// Put the warehouse back as a past run left it (Delta RESTORE of every
    /// table, one new version each; nothing is deleted), or one table back
    /// to a version. Recorded as a run of kind rollback, which can itself
    /// be rolled back.
    Rollback(RollbackArgs),
    /// Recompute the warehouse as the build of a past date produced it,
    /// into another folder, from the bronze batches, dimension history and
    /// fraud models known then; print each table's content hash and
    /// whether it matches that build's.
    Rebuild(RebuildArgs),
    /// The rows added, removed and changed in a table between two versions.
    Diff(DiffArgs),
    /// Run one read-only SQL query (DataFusion) over the warehouse, at the
    /// table versions of the last successful run unless told otherwise.
    /// Roles that may not see PII (the default, analyst) see it masked.
    Sql(SqlArgs),
    /// Write one self-contained HTML report (inline SVG charts, no script,
    /// no network reference) of the data-quality scorecard, claim volume
    /// and denials, prompt-pay compliance, loss ratio by plan, the
    /// fraud-score distribution and the top 20 risky providers, as a run
    /// left the warehouse (by default the last successful one).
    Report(ReportArgs),
    /// Table upkeep: compact small files (Z-ordering the dimensions on
    /// their business key), and delete files no run of the retention window
    /// reads.
    Maintain(MaintainArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["optimize", "vacuum"])))]
pub(crate) struct MaintainArgs {
    /// Compact small files (Delta OPTIMIZE); dimensions are Z-ordered on
    /// their business key. The rows do not change.
    #[arg(long)]
    pub(crate) optimize: bool,

    /// Delete the files that no table version still needs: none that the
    /// last successful run, or any run that ended inside the retention
    /// window, reads, and none that left its table inside the window.
    #[arg(long)]
    pub(crate) vacuum: bool,

    /// The retention window of --vacuum, in hours.
    #[arg(long, default_value_t = 168, value_name = "H", requires = "vacuum")]
    pub(crate) retain_hours: u32,

    /// Only these tables (comma-separated) [default: every table].
    #[arg(long, value_delimiter = ',', value_name = "TABLE[,TABLE..]")]
    pub(crate) table: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("as_of").args(["as_of_run", "as_of_timestamp"])))]
pub(crate) struct ReportArgs {
    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html")]
    pub(crate) out: PathBuf,

    /// Show the tables as this run left them.
    #[arg(long, value_name = "RUN")]
    pub(crate) as_of_run: Option<i64>,

    /// Show the tables as the last successful run that ended by then left
    /// them (RFC 3339, or a date).
    #[arg(long, value_name = "TS")]
    pub(crate) as_of_timestamp: Option<String>,

    /// The role whose view of PII applies (roles are in gold.toml).
    #[arg(long, default_value = "analyst", value_name = "ROLE")]
    pub(crate) role: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("as_of").args(["as_of_run", "as_of_version", "as_of_timestamp"])))]
pub(crate) struct SqlArgs {
    /// The query: SELECT, WITH, VALUES or EXPLAIN; every warehouse table is
    /// there by its name. DDL and DML are refused.
    #[arg(value_name = "QUERY")]
    pub(crate) query: String,

    /// Read the tables as this run left them.
    #[arg(long, value_name = "RUN")]
    pub(crate) as_of_run: Option<i64>,

    /// Read the one table the query names at this Delta version.
    #[arg(long, value_name = "N")]
    pub(crate) as_of_version: Option<i64>,

    /// Read the tables as the last successful run that ended by then left
    /// them (RFC 3339, e.g. 2025-01-03T12:00:00Z, or a date).
    #[arg(long, value_name = "TS")]
    pub(crate) as_of_timestamp: Option<String>,

    /// The role whose view of PII applies (roles are in gold.toml).
    #[arg(long, default_value = "analyst", value_name = "ROLE")]
    pub(crate) role: String,

    /// How rows are printed (with --output-format json, a JSON document).
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: SqlFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SqlFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// A table: list its Delta versions instead of the runs.
    #[arg(value_name = "TABLE")]
    pub(crate) table: Option<String>,

    /// Show at most this many entries, newest first.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<usize>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_run", "table"])))]
pub(crate) struct RollbackArgs {
    /// The run whose table versions to go back to (see gold runs).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["table", "to_version"])]
    pub(crate) to_run: Option<i64>,

    /// Roll back only this table (with --to-version).
    #[arg(long, value_name = "TABLE", requires = "to_version")]
    pub(crate) table: Option<String>,

    /// The version of --table to go back to.
    #[arg(long, value_name = "N", requires = "table")]
    pub(crate) to_version: Option<i64>,
}

#[derive(Debug, Args)]
pub(crate) struct RebuildArgs {
    /// Rebuild as the last successful build for this date (or the last one
    /// before it) left the warehouse.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub(crate) as_of: NaiveDate,

    /// Where the rebuilt warehouse goes: a folder, or a URI on the live
    /// warehouse's object store (s3://…, az://…); it must be empty or
    /// absent. The live warehouse is only read [default:
    /// ./rebuild-YYYY-MM-DD].
    #[arg(long, value_name = "URI")]
    pub(crate) out: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The table to compare.
    #[arg(long, value_name = "TABLE")]
    pub(crate) table: String,

    /// The older version.
    #[arg(long, value_name = "V")]
    pub(crate) from: i64,

    /// The newer version [default: the latest].
    #[arg(long, value_name = "V")]
    pub(crate) to: Option<i64>,

    /// Key column(s), comma-separated: a key both removed and added is a
    /// changed row [default: the table's first column].
    #[arg(long, value_delimiter = ',', value_name = "COL[,COL..]")]
    pub(crate) key: Vec<String>,

    /// Show at most this many rows of each kind.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct DateArgs {
    /// The run's logical date [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub(crate) date: Option<NaiveDate>,
}

#[derive(Debug, Args)]
pub(crate) struct EvaluateArgs {
    /// The labels: a CSV with claim_id, provider_id and pattern columns,
    /// such as DIR/_truth/fraud_labels.csv from gold generate.
    #[arg(long, value_name = "FILE")]
    pub(crate) labels: PathBuf,

    /// Also write claims.csv and providers.csv (ids, labels, gold's score
    /// and every feature) into this folder, for a side-by-side baseline.
    #[arg(long, value_name = "DIR")]
    pub(crate) export_features: Option<PathBuf>,

    /// The date the exported features are computed for [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub(crate) date: Option<NaiveDate>,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// The snapshot: a CSV file with a header, or a .parquet file.
    #[arg(long, value_name = "FILE")]
    pub(crate) source: PathBuf,

    /// The SCD2 Delta table: a folder, or a URI (file://, s3://, az://,
    /// abfss://) with the config's storage options (created on first use).
    #[arg(long, value_name = "URI")]
    pub(crate) target: String,

    /// Business key column(s).
    #[arg(long, value_name = "COL[,COL..]", value_delimiter = ',', required = true)]
    pub(crate) key: Vec<String>,

    /// Track exactly these columns: a change to one opens a new version.
    #[arg(long, value_name = "COLS", value_delimiter = ',', conflicts_with = "track_all_except")]
    pub(crate) track: Option<Vec<String>>,

    /// Track every column except the key, the type-1 columns and these.
    #[arg(long, value_name = "COLS", value_delimiter = ',')]
    pub(crate) track_all_except: Option<Vec<String>>,

    /// Type-1 columns: a change updates the current version in place.
    #[arg(long, value_name = "COLS", value_delimiter = ',')]
    pub(crate) type1: Vec<String>,

    /// Column holding each row's effective date; versions start there
    /// instead of at the run date.
    #[arg(long, value_name = "COL")]
    pub(crate) updated_at: Option<String>,

    /// What happens to a key missing from the snapshot.
    #[arg(long, value_enum, default_value_t = HardDeletes::Invalidate)]
    pub(crate) hard_deletes: HardDeletes,

    /// The run's logical date: new versions start at midnight UTC of it, and
    /// a snapshot for a date already applied is skipped [default: now].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub(crate) date: Option<NaiveDate>,

    /// Name of the surrogate key column.
    #[arg(long, value_name = "NAME", default_value = "surrogate_key")]
    pub(crate) surrogate_key: String,

    /// Create the table without deletion vectors. Each merge then rewrites
    /// every current file it touches, and readers that do not know deletion
    /// vectors (Delta reader version 1, such as pyarrow datasets) can read
    /// the table. A table that exists keeps what it was created with.
    #[arg(long)]
    pub(crate) no_deletion_vectors: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HardDeletes {
    /// Keys missing from the snapshot are left alone.
    Ignore,
    /// Close the current version of a missing key and flag it is_deleted.
    Invalidate,
    /// Add a current tombstone version flagged is_deleted.
    NewRecord,
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Landing root holding YYYY-MM-DD/ day folders.
    #[arg(long, value_name = "DIR")]
    pub(crate) landing: PathBuf,

    /// The run's logical date: day folders after it are left for later, and
    /// the run clock reads midnight UTC of it [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub(crate) date: Option<NaiveDate>,
}

/// The stages of `gold build`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Stage {
    /// Bronze: every source's new files and rows, exactly once.
    Ingest,
    /// Upkeep, after an ingest that brought something new: sets the table
    /// properties that keep history (checkpoints every 10 commits, no
    /// expired-log clean-up) and compacts a table partition that has
    /// gathered 16 small files.
    Compact,
    /// Silver: typing, data-quality rules, quarantine, de-duplication.
    Silver,
    /// The SCD2 dimensions: dim_members, dim_patients, dim_providers.
    Dims,
    /// The star schema: fact_claims, fact_medical_events, their bridges,
    /// dim_date and dim_diagnosis.
    Facts,
    /// Fraud scores: gold_fraud_scores and gold_provider_risk, with the
    /// model current at the run's date (trained first when none is, when
    /// it is older than scoring.toml's retrain_after_days or was fitted to
    /// an older revision of the features, or when the training window
    /// holds retrain_growth times its claims).
    Score,
    /// Regulatory aggregates: every models/gold/*.sql whose query or input
    /// tables changed, materialised as its gold_ table.
    Aggregates,
}

impl Stage {
    /// The pipeline's stage.
    pub(crate) fn stage(self) -> pipeline::Stage {
        match self {
            Self::Ingest => pipeline::Stage::Ingest,
            Self::Silver => pipeline::Stage::Silver,
            Self::Dims => pipeline::Stage::Dims,
            Self::Facts => pipeline::Stage::Facts,
            Self::Score => pipeline::Stage::Score,
            Self::Aggregates => pipeline::Stage::Aggregates,
            Self::Compact => pipeline::Stage::Compact,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Landing root holding YYYY-MM-DD/ day folders.
    #[arg(long, value_name = "DIR")]
    pub(crate) landing: PathBuf,

    /// The run's logical date: day folders after it are left for later, and
    /// the run clock reads midnight UTC of it [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub(crate) date: Option<NaiveDate>,

    /// Run only these stages (comma-separated), e.g. --only silver
    /// [default: every stage: ingest, silver, dims, facts, score,
    /// aggregates].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "STAGE[,STAGE..]")]
    pub(crate) only: Vec<Stage>,

    /// Rebuild every fact rather than only the changed ones (same result).
    #[arg(long)]
    pub(crate) full_refresh: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Folder for the demo's landing data (DIR/landing). The warehouse is the
    /// usual one: --warehouse, the config, $GOLD_WAREHOUSE or ./warehouse.
    #[arg(long, value_name = "DIR", default_value = "gold-demo")]
    pub(crate) out: PathBuf,

    /// Members of the demo insurer.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) members: u64,

    /// Random seed of the demo insurer.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Folder to write gold.toml and models/ into.
    #[arg(value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,

    /// Overwrite files that already exist.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Landing root to write; day folders go directly below it.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,

    /// Distinct members over the whole history.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub(crate) members: u64,

    /// Number of daily landing folders.
    #[arg(long, default_value_t = synth::DEFAULT_DAYS, value_name = "D")]
    pub(crate) days: u32,

    /// The first day. The defaults span 2025-01-01.
    #[arg(long, value_name = "YYYY-MM-DD", default_value = "2024-12-29")]
    pub(crate) start_date: NaiveDate,

    /// Random seed; the same seed and settings give byte-identical files.
    #[arg(long, default_value_t = 42, value_name = "S")]
    pub(crate) seed: u64,

    /// Probability that a row carries an injected defect (0 to 0.5).
    #[arg(long, default_value_t = 0.02, value_name = "R")]
    pub(crate) defect_rate: f64,

    /// Share of enrollment-system claims that are fraudulent (0 to 0.5).
    #[arg(long, default_value_t = 0.02, value_name = "R")]
    pub(crate) fraud_rate: f64,

    /// Write a steady flow, as an insurer sees it night after night: this
    /// many claims per member-year over both source systems (commercial
    /// plans see about 8 to 15), arriving every day in proportion to the
    /// members enrolled, with yearly rates of member changes and a real
    /// plan's costs. Without it, each member has a fixed number of claims
    /// over the whole history, which suits a short demo.
    #[arg(long, value_name = "R")]
    pub(crate) claims_per_member_year: Option<f64>,

    /// Also write the member table as of the last day into this database:
    /// postgres://…, mysql://… or sqlite://…. Prefer the environment
    /// variable, so a password never shows in the process list.
    #[arg(long, value_name = "URL", env = "GOLD_MEMBERS_DB", hide_env_values = true)]
    pub(crate) members_db: Option<String>,

    /// Table name for --members-db.
    #[arg(long, default_value = "members", value_name = "NAME")]
    pub(crate) members_table: String,

    /// Replace an earlier generation in --out. Files that generate did not
    /// write are never removed.
    #[arg(long)]
    pub(crate) force: bool,
}
