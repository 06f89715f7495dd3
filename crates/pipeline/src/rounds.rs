//! Silver, then the dimensions, in rounds: one per landing day when a
//! build catches up several days.
//!
//! A nightly run has one landing day to process and runs each stage once.
//! A run that catches up several day folders (a first build of a landing
//! with history, or a build after missed nights) replays them one day at
//! a time, as the nightly runs would have: silver takes that day's
//! batches, with the day as its logical date (its rules' "today", its DQ
//! results' date), and the dimensions merge the result with the day's
//! midnight as the clock of their deletes. So a member's every daily
//! extract becomes its own SCD2 version instead of only the last one. The
//! last round is the run's own day and clock. `rebuild` replays the same
//! rounds, because a batch's day comes from its rows.

use chrono::NaiveDate;
use serde_json::json;
use storage::{RunClock, RunContext, Warehouse};

use crate::stages::{SilverRound, StageDone, StageReport, dims_tables};
use crate::{Error, Models, Stage, with_retries};

/// A silver failure as the stage's error.
fn silver_failed(e: silver::Error) -> Error {
    Error::Stage { stage: Stage::Silver, source: Box::new(e.into()) }
}

fn dims_failed(e: dims::Error) -> Error {
    Error::Stage { stage: Stage::Dims, source: Box::new(e.into()) }
}

/// The run contexts of a round of `day`: silver's clock stays the run's
/// (its `_updated_at` is the facts' watermark, which must not go back),
/// the dimensions' is the day's midnight, as a nightly build of that day
/// reads.
fn on_day(run: &RunContext, day: NaiveDate) -> (RunContext, RunContext) {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let at = |now| RunContext { id: run.id, kind: run.kind, clock: RunClock::replaying(day, now) };
    (at(run.clock.now()), at(midnight.min(run.clock.now())))
}

/// What the rounds gathered, stage by stage.
#[derive(Default)]
struct Rounds {
    silver: silver::SilverReport,
    silver_docs: Vec<serde_json::Value>,
    silver_seconds: f64,
    dims: Vec<dims::DimReport>,
    dims_docs: Vec<serde_json::Value>,
    dims_seconds: f64,
}

impl Rounds {
    /// A dims round's reports, folded into one per dimension.
    fn absorb_dims(&mut self, reports: Vec<dims::DimReport>) {
        for r in reports {
            match self.dims.iter_mut().find(|d| d.table == r.table) {
                Some(d) => d.absorb(&r),
                None => self.dims.push(r),
            }
        }
    }
}

/// A silver version of an earlier day that an earlier run left unmerged
/// (it stopped between a round's silver and dims, or ran silver alone) is
/// merged first, at its own day, so that day's versions are not folded
/// into the next.
async fn merge_unmerged_day(
    warehouse: &Warehouse,
    run: &RunContext,
    models: &Models,
) -> Result<Vec<dims::DimReport>, Error> {
    let Some(day) = dims::unmerged_day(warehouse, &models.dims).await.map_err(dims_failed)? else {
        return Ok(Vec::new());
    };
    if day >= run.clock.logical_date() {
        return Ok(Vec::new());
    }
    let dims_run = on_day(run, day).1;
    with_retries(models.retries, "dims", || async {
        dims::build_dims(warehouse, &dims_run, &models.dims).await.map_err(dims_failed)
    })
    .await
}

/// The silver stage, then (when `with_dims`) the dims stage, in rounds.
pub(crate) async fn silver_and_dims(
    warehouse: &Warehouse,
    run: &RunContext,
    models: &Models,
    with_dims: bool,
) -> Result<Vec<StageDone>, Error> {
    let started = std::time::Instant::now();
    let rounds = with_retries(models.retries, "silver", || async {
        silver::silver_rounds(warehouse, &models.silver).await.map_err(silver_failed)
    })
    .await?;
    let rounds = if rounds.len() > 1 { rounds } else { vec![silver::Round::everything()] };
    let mut done = Rounds::default();
    if with_dims {
        let at = std::time::Instant::now();
        let reports = merge_unmerged_day(warehouse, run, models).await?;
        if !reports.is_empty() {
            done.dims_seconds += at.elapsed().as_secs_f64();
            done.dims.extend(reports);
        }
    }
    let last = rounds.len() - 1;
    for (i, round) in rounds.iter().enumerate() {
        let (silver_run, dims_run) = match round.day {
            Some(day) if i < last => on_day(run, day),
            _ => (run.clone(), run.clone()),
        };
        let day = round.day.map(|d| d.to_string());
        let at = std::time::Instant::now();
        let report = with_retries(models.retries, "silver", || async {
            silver::build_silver_round(warehouse, &silver_run, &models.silver, round).await.map_err(silver_failed)
        })
        .await?;
        let seconds = at.elapsed().as_secs_f64();
        done.silver_seconds += seconds;
        let totals = report.totals();
        done.silver_docs.push(json!({"day": day, "seconds": seconds, "bronze_rows": totals.bronze_rows, "accepted": totals.accepted, "quarantined": totals.quarantined}));
        done.silver.absorb(report);
        storage::failpoint("silver-round");
        if !with_dims {
            continue;
        }
        let at = std::time::Instant::now();
        let reports = with_retries(models.retries, "dims", || async {
            dims::build_dims(warehouse, &dims_run, &models.dims).await.map_err(dims_failed)
        })
        .await?;
        let seconds = at.elapsed().as_secs_f64();
        done.dims_seconds += seconds;
        done.dims_docs.push(json!({"day": day, "seconds": seconds, "dims": reports.iter().map(|r| json!({"table": r.table, "version": r.version, "metrics": r.metrics})).collect::<Vec<_>>()}));
        done.absorb_dims(reports);
    }
    tracing::debug!(rounds = rounds.len(), seconds = started.elapsed().as_secs_f64(), "silver and dims");
    let rounds: Vec<SilverRound> = rounds.iter().map(|r| SilverRound { day: r.day }).collect();
    Ok(stage_reports(done, rounds, with_dims))
}

/// The silver stage's document and report, and the dims stage's when it ran.
fn stage_reports(done: Rounds, rounds: Vec<SilverRound>, with_dims: bool) -> Vec<StageDone> {
    let several = rounds.len() > 1;
    let totals = done.silver.totals();
    let mut doc = json!({
        "stage": "silver",
        "seconds": done.silver_seconds,
        "bronze_rows": totals.bronze_rows,
        "accepted": totals.accepted,
        "duplicates": totals.duplicates,
        "quarantined": totals.quarantined,
        "dropped": totals.dropped,
        "tables": done.silver.tables,
    });
    if several {
        doc["rounds"] = json!(done.silver_docs);
    }
    let tables = done.silver.table_versions().into_iter().map(|(t, v, r)| crate::TableWritten::new(t, v, r)).collect();
    let mut out = vec![StageDone {
        stage: Stage::Silver,
        doc,
        tables,
        report: StageReport::Silver { report: done.silver, rounds },
    }];
    if with_dims {
        let mut doc = json!({"stage": "dims", "seconds": done.dims_seconds, "dims": done.dims});
        if several {
            doc["rounds"] = json!(done.dims_docs);
        }
        let tables = dims_tables(&done.dims);
        out.push(StageDone { stage: Stage::Dims, doc, tables, report: StageReport::Dims(done.dims) });
    }
    out
}
