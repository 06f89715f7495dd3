//! Running the silver stage: first every rule that can abort the run, over
//! every table's new rows, so that an abort commits nothing anywhere; then
//! table by table, parents first, plan ([`crate::plan`]) and write
//! ([`crate::write`]).
//!
//! Memory holds at most the table being written and the one being
//! planned: of a written table, only the keys later tables check against
//! are kept. A table is written on a task of its own while the next one is
//! planned (planning runs mostly on one core, writing on the other); the
//! next write starts only when it is done, so two writes never meet in
//! `dq_results`. No plan reads a table an earlier one writes: parent keys
//! come from the plans.

use std::collections::HashSet;
use std::sync::Arc;

use storage::{RunContext, Warehouse};

use crate::Result;
use crate::plan::{KeySets, Mode, key_set, plan_table};
use crate::report::SilverReport;
use crate::rounds::Round;
use crate::rules::{Rule, rules_of};
use crate::udf::DIAGNOSIS_REF_TABLE;
use crate::write::{Writing, write_table};

/// Runs the silver stage: every table of `catalog`, parents first, over
/// every bronze batch not yet processed. Nothing is written unless every
/// table planned without a failed `fail` rule.
pub async fn build_silver(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &crate::SilverCatalog,
) -> Result<SilverReport> {
    build_silver_round(warehouse, run, catalog, &Round::everything()).await
}

/// Runs the silver stage over the batches of `round` only (see
/// [`silver_rounds`](crate::silver_rounds)). Nothing is written unless
/// every table planned without a failed `fail` rule.
pub async fn build_silver_round(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &crate::SilverCatalog,
    round: &Round,
) -> Result<SilverReport> {
    // First every rule that can abort the run (`fail`, or a threshold), over
    // every table's new rows, so that an abort commits nothing anywhere.
    let mut keys = KeySets::default();
    for model in catalog.tables() {
        if rules_of(model).iter().any(Rule::can_abort) {
            plan_table(warehouse, run, model, &keys, Mode::CheckAborts, round, false).await?;
        }
    }
    // Then table by table, parents first: plan, write, and keep only the
    // keys later tables check against (see the module doc).
    let wanted: HashSet<(String, String)> = catalog
        .tables()
        .iter()
        .flat_map(|m| m.parents.iter().map(|p| (p.table.clone(), p.key.clone())))
        .chain([(DIAGNOSIS_REF_TABLE.to_string(), "code".to_string())])
        .collect();
    let mut report = SilverReport::default();
    let mut writing: Option<Writing> = None;
    for model in catalog.tables() {
        let started = std::time::Instant::now();
        // A table other tables check their keys against is read whole:
        // its keys are kept for them.
        let by_key = !wanted.iter().any(|(t, _)| *t == model.table);
        let planned = plan_table(warehouse, run, model, &keys, Mode::Build, round, by_key).await;
        if let Ok(Some(_)) = &planned {
            tracing::debug!(table = %model.table, seconds = started.elapsed().as_secs_f64(), "planned");
        }
        // The write in flight ends, well or not, before anything else.
        let written = match writing.take() {
            Some(w) => Some(w.finish(&mut report).await),
            None => None,
        };
        let planned = planned?;
        written.transpose()?;
        let Some(mut plan) = planned else { continue };
        if let Some(state) = &plan.state {
            for (table, key) in wanted.iter().filter(|(t, _)| *t == model.table) {
                keys.0.insert((table.clone(), key.clone()), Arc::new(key_set(table, state, key)?));
            }
        }
        let (w, r) = (warehouse.clone(), run.clone());
        writing = Some(Writing {
            table: model.table.clone(),
            task: tokio::spawn(async move {
                let started = std::time::Instant::now();
                let version = write_table(&w, &r, &mut plan).await;
                tracing::debug!(table = %plan.model.table, seconds = started.elapsed().as_secs_f64(), "written");
                version.map(|v| (plan.report, v))
            }),
        });
    }
    if let Some(w) = writing.take() {
        w.finish(&mut report).await?;
    }
    Ok(report)
}
