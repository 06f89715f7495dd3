//! The `gold` binary: parses the command line, sets up logging on stderr,
//! runs one command, prints its result on stdout and exits 0, 1 (a user or
//! data error) or 2 (an internal error).

mod cli;
mod commands;
mod config;
mod ops;
mod output;
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
            || e.downcast_ref::<quality::Error>().is_some_and(quality::Error::is_user_error)
            || e.downcast_ref::<dims::Error>().is_some_and(dims::Error::is_user_error)
            || e.downcast_ref::<facts::Error>().is_some_and(facts::Error::is_user_error)
            || e.downcast_ref::<scoring::Error>().is_some_and(scoring::Error::is_user_error)
            || e.downcast_ref::<query::Error>().is_some_and(query::Error::is_user_error)
            || e.downcast_ref::<aggregates::Error>().is_some_and(aggregates::Error::is_user_error)
            || e.downcast_ref::<report::Error>().is_some_and(report::Error::is_user_error)
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
        "warn,deltalake_core::writer::stats=error,gold={ours},gold_cli={ours},synth={ours},storage={ours},ingest={ours},merge={ours},quality={ours},dims={ours},facts={ours},scoring={ours},aggregates={ours},report={ours}"
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
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
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

/// The models the stages after ingest read, from the config's models folder.
fn models(config: &config::Config, dir: Option<&std::path::Path>) -> anyhow::Result<commands::Models> {
    Ok(commands::Models {
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
            let catalog = config::source_catalog(&config, config_dir.as_deref())?;
            let models = models(&config, config_dir.as_deref())?;
            commands::demo(args, &warehouse, &catalog, &models, cli.quiet > 0, printer).await
        }
        Command::Build(args) => {
            let catalog = config::source_catalog(&config, config_dir.as_deref())?;
            let models = models(&config, config_dir.as_deref())?;
            commands::build(args, &warehouse, &catalog, &models, printer).await
        }
        Command::Ingest(args) => {
            let catalog = config::source_catalog(&config, config_dir.as_deref())?;
            commands::ingest(args, &warehouse, &catalog, config.build.retries, printer).await
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
            let catalog = config::source_catalog(&config, config_dir.as_deref())?;
            let models = models(&config, config_dir.as_deref())?;
            ops::rebuild(args, &warehouse, &catalog, &models, printer).await
        }
    }
}
