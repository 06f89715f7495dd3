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

fn main() -> ExitCode {
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
