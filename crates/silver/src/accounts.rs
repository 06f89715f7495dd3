//! Where each new row goes, counted per bronze batch: kept, dropped or
//! quarantined by the rules (step 5 of a table's plan, see
//! [`crate::plan`]), then accepted, a duplicate or a conflict by the
//! de-duplication (step 6).
//!
//! Rows are counted by their (bronze table, batch): each batch gets a
//! dense index once, so the per-row counting allocates nothing. The
//! de-duplication reads one batch, `combined`: silver's current rows,
//! then every new row once, then the released orphans; the sources then
//! read their rows back as slices of it, so the typed values are held
//! once.

use std::collections::HashMap;

use deltalake::arrow::array::{AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{concat_batches, take_record_batch};

use crate::bronze::SourceRows;
use crate::dedup::{Dedup, Fate, dedup};
use crate::error::arrow_err;
use crate::model::Action;
use crate::plan::{Mode, Plan};
use crate::quarantine::Orphans;
use crate::report::BatchAccount;
use crate::rules::{CONFLICT, rule_action};
use crate::schema::{Typed, project};
use crate::{Error, Result};

/// What the rules did to the new rows, per batch and per row.
pub(crate) struct Dispositions {
    /// Per batch index: how its rows were accounted for.
    pub(crate) accounts: Vec<BatchAccount>,
    /// Per batch index and rule: rows evaluated, rows failed.
    pub(crate) rule_stats: Vec<Vec<(u64, u64)>>,
    /// Per source and row: its batch index.
    pub(crate) batch_of: Vec<Vec<usize>>,
    /// Per source and row: whether it is kept.
    pub(crate) kept: Vec<Vec<bool>>,
    /// Quarantined rows: source, row and failed rules.
    pub(crate) quarantined: Vec<(usize, usize, Vec<u16>)>,
    /// The batch indices in (bronze table, batch) order, as every report
    /// lists them.
    pub(crate) by_batch: Vec<usize>,
}

impl Dispositions {
    /// Step 5: each row of `sources` quarantined, dropped or kept
    /// (quarantine beats drop beats keep), and the rules counted per batch.
    pub(crate) fn of(plan: &Plan<'_>, sources: &[SourceRows]) -> Self {
        let mut out = Self {
            accounts: Vec::new(),
            rule_stats: Vec::new(),
            batch_of: Vec::new(),
            kept: Vec::new(),
            quarantined: Vec::new(),
            by_batch: Vec::new(),
        };
        let mut every_batch: HashMap<(String, String), usize> = HashMap::new();
        for (s, src) in sources.iter().enumerate() {
            out.add_source(plan, s, src, &mut every_batch);
        }
        let accounts = &out.accounts;
        let mut by_batch: Vec<usize> = (0..accounts.len()).collect();
        by_batch.sort_by(|&a, &b| {
            (&accounts[a].bronze_table, &accounts[a].batch_id).cmp(&(&accounts[b].bronze_table, &accounts[b].batch_id))
        });
        out.by_batch = by_batch;
        out
    }

    /// Counts the rows of source `s`.
    fn add_source(
        &mut self,
        plan: &Plan<'_>,
        s: usize,
        src: &SourceRows,
        every_batch: &mut HashMap<(String, String), usize>,
    ) {
        let rules = &plan.rules;
        let batch_ids = src.typed.column_by_name("_batch_id").map(|c| c.as_string::<i32>().clone());
        let active: Vec<usize> = (0..rules.len())
            .filter(|&r| {
                r != CONFLICT as usize
                    && rules[r].applies_to(&src.bronze)
                    && (plan.mode != Mode::CheckAborts || rules[r].can_abort())
            })
            .collect();
        let mut index: HashMap<String, usize> = HashMap::new();
        let (mut batches, mut keep) = (Vec::with_capacity(src.failed.len()), vec![false; src.failed.len()]);
        for (row, failed) in src.failed.iter().enumerate() {
            let batch = batch_ids.as_ref().map_or("", |b| b.value(row));
            let b = match index.get(batch) {
                Some(&b) => b,
                None => {
                    // Two sources may read one bronze table: their batches are one.
                    let b = *every_batch.entry((src.bronze.clone(), batch.to_string())).or_insert_with(|| {
                        self.accounts.push(BatchAccount {
                            bronze_table: src.bronze.clone(),
                            batch_id: batch.to_string(),
                            ..BatchAccount::default()
                        });
                        self.rule_stats.push(vec![(0, 0); rules.len()]);
                        self.accounts.len() - 1
                    });
                    index.insert(batch.to_string(), b);
                    b
                }
            };
            batches.push(b);
            let acct = &mut self.accounts[b];
            acct.bronze_rows += 1;
            for &r in &active {
                let e = &mut self.rule_stats[b][r];
                e.0 += 1;
                if failed.contains(&(r as u16)) {
                    e.1 += 1;
                }
            }
            if failed.iter().any(|&r| plan.action_of(r) == Action::Quarantine) {
                acct.quarantined += 1;
                self.quarantined.push((s, row, failed.clone()));
            } else if failed.iter().any(|&r| plan.action_of(r) == Action::Drop) {
                acct.dropped += 1;
            } else {
                keep[row] = true;
            }
        }
        self.batch_of.push(batches);
        self.kept.push(keep);
    }

    /// The first rule, by batch, that failed with action `fail` or over
    /// its threshold, as the error that aborts the run.
    pub(crate) fn check_aborts(&self, plan: &Plan<'_>) -> Result<()> {
        for &b in &self.by_batch {
            for (r, &(evaluated, failed)) in self.rule_stats[b].iter().enumerate() {
                let rule = &plan.rules[r];
                let over = match (rule.action, rule.fail_above) {
                    (_, Some(limit)) => evaluated > 0 && (failed as f64) / (evaluated as f64) > limit,
                    (Action::Fail, None) => failed > 0,
                    _ => false,
                };
                if over {
                    return Err(Error::ExpectationFailed {
                        table: plan.table().to_string(),
                        rule: rule.name.clone(),
                        batch_id: self.accounts[b].batch_id.clone(),
                        failed,
                        evaluated,
                        threshold: rule.fail_above,
                    });
                }
            }
        }
        Ok(())
    }

    /// Step 6, counting: each kept row's fate added to its batch's
    /// account (a conflict is quarantined), and the released orphans
    /// listed.
    pub(crate) fn count_fates(
        &mut self,
        incoming: &Incoming,
        d: &Dedup,
        sources: &[SourceRows],
        orphans: &Orphans,
    ) -> Fates {
        // Per batch index: rows evaluated, duplicates and conflicts.
        let mut dup_stats: Vec<(u64, u64, u64)> = vec![(0, 0, 0); self.accounts.len()];
        let mut released_rows: Vec<usize> = orphans.already_released.clone();
        let mut released = 0;
        for (i, fate) in d.fate.iter().enumerate() {
            if !incoming.is_kept[i] {
                continue;
            }
            let (s, row) = incoming.origin[i];
            if s == usize::MAX {
                if *fate == Fate::Accepted {
                    released_rows.push(row);
                    released += 1;
                }
                continue;
            }
            let b = self.batch_of[s][row];
            let (acct, e) = (&mut self.accounts[b], &mut dup_stats[b]);
            e.0 += 1;
            match fate {
                Fate::Accepted => acct.accepted += 1,
                Fate::Duplicate => {
                    acct.duplicates += 1;
                    e.1 += 1;
                }
                Fate::Conflict => {
                    acct.quarantined += 1;
                    e.2 += 1;
                    let mut failed = sources[s].failed[row].clone();
                    failed.push(CONFLICT);
                    failed.sort_unstable();
                    self.quarantined.push((s, row, failed));
                }
            }
        }
        Fates { dup_stats, released_rows, released }
    }
}

/// What the de-duplication did, by batch.
pub(crate) struct Fates {
    /// Per batch index: rows evaluated, duplicates and conflicts.
    pub(crate) dup_stats: Vec<(u64, u64, u64)>,
    /// Quarantine rows now in silver: released by this run, or by one
    /// that stopped before marking them.
    pub(crate) released_rows: Vec<usize>,
    /// Orphans this run released.
    pub(crate) released: u64,
}

/// The rows the de-duplication reads, in one batch.
pub(crate) struct Incoming {
    /// Silver's current rows, then every new row, then the released
    /// orphans, in the typed schema.
    pub(crate) combined: RecordBatch,
    /// How many of `combined`'s rows are silver's current ones.
    pub(crate) n_state: usize,
    /// Per incoming row: the warnings it carries (none for a row not kept).
    pub(crate) warnings: Vec<Vec<String>>,
    /// Per incoming row: its source and row, or `usize::MAX` and its
    /// quarantine row for a released orphan.
    pub(crate) origin: Vec<(usize, usize)>,
    /// Per incoming row: whether it takes part in the de-duplication.
    pub(crate) is_kept: Vec<bool>,
}

impl Incoming {
    /// Step 6, gathering: silver's `state`, every new row of `sources`
    /// (which then read their rows back from it) and the held orphans.
    pub(crate) fn gather(
        plan: &Plan<'_>,
        typed: &Typed,
        state: Option<&RecordBatch>,
        sources: &mut [SourceRows],
        kept: &[Vec<bool>],
        orphans: &Orphans,
    ) -> Result<Self> {
        let t = plan.table();
        let warn_names = |failed: &[u16]| -> Vec<String> {
            failed
                .iter()
                .filter(|&&r| plan.action_of(r) == Action::Warn)
                .map(|&r| plan.rules[r as usize].name.clone())
                .collect()
        };
        let n_state = state.map_or(0, RecordBatch::num_rows);
        let mut parts: Vec<RecordBatch> = Vec::new();
        if let Some(state) = state {
            parts.push(project(t, state, &typed.schema)?);
        }
        let mut warnings: Vec<Vec<String>> = Vec::new();
        let mut origin: Vec<(usize, usize)> = Vec::new();
        let mut is_kept: Vec<bool> = Vec::new();
        let mut offsets = Vec::new();
        for (s, (src, kept)) in sources.iter().zip(kept).enumerate() {
            offsets.push(n_state + origin.len());
            parts.push(src.typed.clone());
            for (row, &keep) in kept.iter().enumerate() {
                is_kept.push(keep);
                warnings.push(if keep { warn_names(&src.failed[row]) } else { Vec::new() });
                origin.push((s, row));
            }
        }
        if let Some(q) = &orphans.quarantine
            && !orphans.held.is_empty()
        {
            let idx = UInt32Array::from(orphans.held.iter().map(|&h| h as u32).collect::<Vec<_>>());
            parts.push(take_record_batch(&project(t, q, &typed.schema)?, &idx).map_err(arrow_err(t))?);
            let failed = q.column_by_name("_failed_rules").map(|c| c.as_list::<i32>().clone());
            for &h in &orphans.held {
                let names: Vec<String> = failed.as_ref().map_or_else(Vec::new, |f| {
                    f.value(h).as_string::<i32>().iter().flatten().map(str::to_string).collect()
                });
                warnings
                    .push(names.into_iter().filter(|n| rule_action(&plan.rules, n) == Some(Action::Warn)).collect());
                origin.push((usize::MAX, h));
                is_kept.push(true);
            }
        }
        let combined = concat_batches(&typed.schema, &parts).map_err(arrow_err(t))?;
        drop(parts);
        for (src, &offset) in sources.iter_mut().zip(&offsets) {
            src.typed = combined.slice(offset, src.typed.num_rows());
        }
        Ok(Self { combined, n_state, warnings, origin, is_kept })
    }

    /// Step 6, de-duplication: latest wins per key, by the model's order
    /// and tie-break, exact duplicates and conflicts found.
    pub(crate) fn dedup(&self, plan: &Plan<'_>, typed: &Typed) -> Result<Dedup> {
        let (t, model) = (plan.table(), plan.model);
        let index_of = |c: &str| typed.schema.index_of(c).map_err(arrow_err(t));
        let key: Vec<usize> = model.key.iter().map(|c| index_of(c)).collect::<Result<_>>()?;
        let content: Vec<usize> = (0..typed.fields.len()).collect();
        let order: Vec<usize> = model.order.iter().map(|c| index_of(c)).collect::<Result<_>>()?;
        let tie: Vec<usize> = model.tie_break.iter().map(|c| index_of(c)).collect::<Result<_>>()?;
        dedup(&self.combined, self.n_state, &self.is_kept, &key, &content, &order, &tie).map_err(arrow_err(t))
    }
}
