//! The `gold` binary: parses the command line, sets up logging on stderr,
//! runs one command, prints its result on stdout and exits 0, 1 (a user or
//! data error) or 2 (an internal error).

mod cli;
mod commands;
mod config;
mod ops;
mod output;
mod render;
mod sql;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, OutputFormat};
use crate::output::Printer;

/// An error the user can fix: a bad flag, file or value. Exits 1.
#[derive(Debug)]
pub(crate) struct UserError(pub(crate) String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Sorts an error into exit code 1 (the user can fix it) or 2.
fn exit_code(err: &anyhow::Error) -> u8 {
    let user = err.chain().any(|e| {
        e.is::<UserError>()
            || e.downcast_ref::<synth::Error>().is_some_and(synth::Error::is_user_error)
            || e.downcast_ref::<storage::Error>().is_some_and(storage::Error::is_user_error)
            || e.downcast_ref::<ingest::Error>().is_some_and(ingest::Error::is_user_error)
            || e.downcast_ref::<merge::Error>().is_some_and(merge::Error::is_user_error)
            || e.downcast_ref::<silver::Error>().is_some_and(silver::Error::is_user_error)
            || e.downcast_ref::<dims::Error>().is_some_and(dims::Error::is_user_error)
            || e.downcast_ref::<facts::Error>().is_some_and(facts::Error::is_user_error)
            || e.downcast_ref::<scoring::Error>().is_some_and(scoring::Error::is_user_error)
            || e.downcast_ref::<query::Error>().is_some_and(query::Error::is_user_error)
            || e.downcast_ref::<aggregates::Error>().is_some_and(aggregates::Error::is_user_error)
            || e.downcast_ref::<report::Error>().is_some_and(report::Error::is_user_error)
            || e.downcast_ref::<pipeline::Error>().is_some_and(pipeline::Error::is_user_error)
    });
    if user { 1 } else { 2 }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn init_logging(cli: &Cli) {
    let ours = match (cli.quiet, cli.verbose) {
        (q, _) if q >= 2 => "error",
        (1, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    // delta-rs warns once per file that it keeps no statistics for binary
    // columns (key hashes); that is by design, not news for the user.
    let default = format!(
        "warn,deltalake_core::writer::stats=error,gold={ours},gold_cli={ours},synth={ours},storage={ours},ingest={ours},merge={ours},silver={ours},dims={ours},facts={ours},scoring={ours},aggregates={ours},report={ours},pipeline={ours}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// glibc's malloc gives each new thread its own arena, up to eight per core,
/// and a merge's or a stage's large buffers, freed on one thread and
/// allocated on another, then sit in many half-empty arenas: measured on 2
/// cores, a 1M-row `gold snapshot` day 2 peaked at 640-700 MB with glibc's
/// default and 510-540 MB with two arenas, in the same time, and each
/// `gold build` stage peaked 10-30% lower (at 10M rows the merge's write
/// took about a second more of its 23 s). gold forbids `unsafe` code, so it
/// does not call `mallopt`: before anything else runs, the process replaces
/// itself (same pid, arguments and open files) with the same binary under
/// `MALLOC_ARENA_MAX`, one arena per core. A value the caller set is kept,
/// and if the binary cannot be executed again gold carries on as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let arenas = parallel::threads().max(2);
    // `exec` returns only if it failed; then this process goes on unchanged.
    let _ = std::process::Command::new(&exe).arg0(arg0).args(args).env(VAR, arenas.to_string()).exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are not errors; a bad flag is a user error (1).
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli);
    let format = cli.output_format;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let mut printer = Printer::new(format);
    let result = runtime.block_on(run(cli, &mut printer));
    let (result, printer) = match result {
        Ok(()) => (printer.flush(), None),
        Err(err) => (Err(err), Some(printer)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            eprintln!("error: {err:#}");
            match printer {
                Some(printer) => printer.flush_error(code, &format!("{err:#}")),
                None if format == OutputFormat::Json => {
                    let doc = serde_json::json!({"status": "error", "exit_code": code, "error": format!("{err:#}")});
                    let _ = writeln!(std::io::stdout(), "{doc}");
                }
                None => {}
            }
            ExitCode::from(code)
        }
    }
}

/// The models a build reads, from the config's models folder.
fn models(config: &config::Config, dir: Option<&std::path::Path>) -> anyhow::Result<pipeline::Models> {
    Ok(pipeline::Models {
        sources: config::source_catalog(config, dir)?,
        silver: config::silver_catalog(config, dir)?,
        dims: config::dim_catalog(config, dir)?,
        scoring: config::scoring_config(config, dir)?,
        aggregates: config::aggregate_catalog(config, dir)?,
        retries: config.build.retries,
    })
}

async fn run(cli: Cli, printer: &mut Printer) -> anyhow::Result<()> {
    let (config, config_dir) = config::load(cli.config.as_deref())?;
    let warehouse = config::warehouse_location(cli.warehouse.as_deref(), &config, config_dir.as_deref())?;
    match cli.command {
        Command::Generate(args) => commands::generate(args, cli.quiet > 0, printer).await,
        Command::Init(args) => commands::init(args, printer),
        Command::Runs => commands::runs(&warehouse, printer).await,
        Command::Demo(args) => {
            let models = models(&config, config_dir.as_deref())?;
            commands::demo(args, &warehouse, &models, cli.quiet > 0, printer).await
        }
        Command::Build(args) => {
            let models = models(&config, config_dir.as_deref())?;
            commands::build(args, &warehouse, &models, printer).await
        }
        Command::Ingest(args) => {
            let sources = config::source_catalog(&config, config_dir.as_deref())?;
            commands::ingest(args, &warehouse, &sources, config.build.retries, printer).await
        }
        Command::Snapshot(args) => commands::snapshot(args, &warehouse.storage, printer).await,
        Command::Train(args) => {
            let scoring = config::scoring_config(&config, config_dir.as_deref())?;
            commands::train(args, &warehouse, &scoring, printer).await
        }
        Command::Score(args) => {
            let scoring = config::scoring_config(&config, config_dir.as_deref())?;
            commands::score(args, &warehouse, &scoring, printer).await
        }
        Command::Evaluate(args) => commands::evaluate(args, &warehouse, printer).await,
        Command::History(args) => ops::history(args, &warehouse, printer).await,
        Command::Rollback(args) => ops::rollback(args, &warehouse, printer).await,
        Command::Diff(args) => ops::diff(args, &warehouse, printer).await,
        Command::Sql(args) => {
            let masking = sql::masking(
                &config::source_catalog(&config, config_dir.as_deref())?,
                &config::silver_catalog(&config, config_dir.as_deref())?,
            );
            sql::sql(args, &warehouse, &config, masking, printer).await
        }
        Command::Report(args) => {
            let masking = sql::masking(
                &config::source_catalog(&config, config_dir.as_deref())?,
                &config::silver_catalog(&config, config_dir.as_deref())?,
            );
            let threshold = config::scoring_config(&config, config_dir.as_deref())?.scores.referral_threshold;
            sql::report(args, &warehouse, &config, masking, threshold, printer).await
        }
        Command::Maintain(args) => {
            let dims = config::dim_catalog(&config, config_dir.as_deref())?;
            ops::maintain(args, &warehouse, &dims, printer).await
        }
        Command::Rebuild(args) => {
            let models = models(&config, config_dir.as_deref())?;
            ops::rebuild(args, &warehouse, &models, printer).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        text.to_string()
    }

    fn stage(stage: pipeline::Stage, source: impl Into<pipeline::StageError>) -> anyhow::Error {
        pipeline::Error::Stage { stage, source: Box::new(source.into()) }.into()
    }

    /// What `gold` exits with for one error of each kind a library raises,
    /// raw and as the pipeline or a command wraps it: 1 for what the user
    /// can fix (a model, a flag, a file, a run id), 2 for everything else.
    #[test]
    fn every_library_error_kind_exits_with_its_intended_code() {
        use pipeline::Stage::*;
        let busy = || storage::Error::Busy(s("run 3"));
        let ledger = || storage::Error::Ledger(s("corrupt"));
        let cases: Vec<(&str, anyhow::Error, u8)> = vec![
            ("a flag", UserError(s("bad flag")).into(), 1),
            ("synth config", synth::Error::InvalidConfig(s("--members 0")).into(), 1),
            ("synth internal", synth::Error::Internal(s("bug")).into(), 2),
            ("storage busy", busy().into(), 1),
            ("storage no run", storage::Error::NoSuchRun(9).into(), 1),
            ("storage ledger", ledger().into(), 2),
            ("ingest model", stage(Ingest, ingest::Error::Model { origin: s("m"), reason: s("r") }), 1),
            ("ingest internal", stage(Ingest, ingest::Error::Internal(s("bug"))), 2),
            ("ingest busy", stage(Ingest, ingest::Error::Storage(busy())), 1),
            ("ingest ledger", stage(Ingest, ingest::Error::Storage(ledger())), 2),
            ("merge conflict", merge::Error::Conflict { table: s("t"), reason: s("r") }.into(), 1),
            ("merge invariant", merge::Error::Invariant { key_hash: s("00"), reason: s("r") }.into(), 2),
            ("merge internal", merge::Error::Internal { context: s("c"), reason: s("r") }.into(), 2),
            ("silver model", stage(Silver, silver::Error::Model { origin: s("m"), reason: s("r") }), 1),
            ("silver ledger", stage(Silver, silver::Error::Storage(ledger())), 2),
            ("dims model", stage(Dims, dims::Error::Model { origin: s("m"), reason: s("r") }), 1),
            ("dims ledger", stage(Dims, dims::Error::Storage(ledger())), 2),
            ("facts model", stage(Facts, facts::Error::Model(s("r"))), 1),
            ("facts ledger", stage(Facts, facts::Error::Storage(ledger())), 2),
            ("score input", stage(Score, scoring::Error::MissingInput(s("fact_claims"))), 1),
            ("score panic", stage(Score, scoring::Error::Panicked), 2),
            ("aggregate model", stage(Aggregates, aggregates::Error::Model { origin: s("m"), reason: s("r") }), 1),
            ("aggregate ledger", stage(Aggregates, aggregates::Error::Storage(ledger())), 2),
            ("between stages", stage(Facts, storage::Error::NoSuchRun(4)), 1),
            ("query write", query::Error::NotReadOnly(s("DELETE")).into(), 1),
            ("query ledger", query::Error::Storage(ledger()).into(), 2),
            (
                "report query",
                report::Error::Query { section: "s", source: Box::new(query::Error::NotReadOnly(s("x"))) }.into(),
                1,
            ),
            ("rebuild request", pipeline::Error::Request(s("no build before")).into(), 1),
            ("rollback", pipeline::Error::Rollback(ledger()).into(), 2),
        ];
        for (what, err, code) in cases {
            assert_eq!(exit_code(&err), code, "{what}: {err:#}");
            assert_eq!(exit_code(&err.context("while running gold build")), code, "{what} under context");
        }
    }
}
