//! End-to-end tests of the `gold` binary: they run it as a user would and
//! check its stdout, stderr, exit code and the files it leaves.

mod aggregates;
mod audit;
mod commands;
mod ingest;
mod interop;
mod object_store;
mod report;
mod snapshot;
mod sql;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `gold` with `args` in `cwd`, with no GOLD_* settings inherited.
pub(crate) fn gold(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gold"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GOLD_WAREHOUSE")
        .env_remove("GOLD_MEMBERS_DB")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gold")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `gold` and expects success.
#[track_caller]
pub(crate) fn gold_ok(cwd: &Path, args: &[&str]) -> String {
    let o = gold(cwd, args);
    assert!(o.status.success(), "gold {args:?} failed ({:?}):\n{}", o.status.code(), stderr(&o));
    stdout(&o)
}

/// Runs `gold --output-format json` and parses stdout as exactly one JSON
/// document.
#[track_caller]
pub(crate) fn gold_json(cwd: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["--output-format", "json"];
    all.extend_from_slice(args);
    let o = gold(cwd, &all);
    let text = stdout(&o);
    let doc = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("stdout of gold {args:?} is not one JSON document ({e}):\n{text}\nstderr:\n{}", stderr(&o))
    });
    (o.status.code(), doc)
}
