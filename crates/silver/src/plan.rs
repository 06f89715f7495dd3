//! Planning one silver table: everything to write for it, computed before
//! anything is written ([`Planned`]). [`plan_table`] runs these steps,
//! each a function sharing the table's [`Plan`]:
//!
//! 1. Read: the new bronze rows of every source, typed by the source's
//!    `select` ([`bronze::read_new`]).
//! 2. Orphans: quarantined rows whose parents have come
//!    ([`quarantine::orphans`]).
//! 3. Types and rules: one type per column across sources
//!    ([`bronze::column_types`]), then every rule, row by row
//!    ([`bronze::check_rows`]).
//! 4. Orphans already released: a candidate already in silver's lineage
//!    was released by a run that stopped before marking it; only the mark
//!    is left to do ([`quarantine::Orphans::split`]).
//! 5. Dispositions: quarantine beats drop beats keep, counted per batch;
//!    a `fail` rule, or one over its threshold, aborts the run here
//!    ([`Dispositions`]).
//! 6. De-duplication of the kept rows (and the released orphans) against
//!    the current rows ([`Incoming`], [`Dispositions::count_fates`]).
//! 7. The new silver rows, with their lineage, and the keys missing from
//!    a full extract marked deleted ([`state::build_state`],
//!    [`state::mark_deleted`]).
//! 8. Quarantine rows, and the released ones to mark
//!    ([`quarantine::new_rows`]).
//! 9. `dq_results` rows ([`dq::dq_rows`]).
//! 10. Derived tables ([`derived_tables`]).
//!
//! In [`Mode::CheckAborts`] the plan stops after step 5, having checked
//! only the rules that can abort the run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use storage::{RunContext, TableName, Warehouse};

use crate::accounts::{Dispositions, Incoming};
use crate::bronze::{self, session};
use crate::error::{arrow_err, sql_err};
use crate::model::{Action, TableModel};
use crate::quarantine::{self, RowId};
use crate::report::TableReport;
use crate::rounds::Round;
use crate::rules::{Rule, rules_of};
use crate::schema::{Typed, concat_plain, project, state_schema};
use crate::udf::{self, DIAGNOSIS_REF_TABLE};
use crate::{Error, Result, dq, keyed, state};

/// Whether `plan_table` builds the table or only checks the rules that can
/// abort the run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    CheckAborts,
    Build,
}

/// Keys of parent tables rebuilt by this run, by `(table, key column)`.
#[derive(Default)]
pub(crate) struct KeySets(pub(crate) HashMap<(String, String), Arc<HashSet<String>>>);

/// Every value of column `key` in `batches`, as text.
pub(crate) fn key_set(table: &str, batches: &[RecordBatch], key: &str) -> Result<HashSet<String>> {
    let mut keys = HashSet::new();
    for b in batches {
        let Some(c) = b.column_by_name(key) else {
            return Err(Error::Schema {
                table: table.to_string(),
                reason: format!("has no column {key} for a parent check"),
            });
        };
        let c = cast(c, &DataType::Utf8).map_err(arrow_err(table))?;
        keys.extend(c.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(keys)
}

/// The keys of `key` in silver table `table`: as this run rebuilt it, or
/// as the warehouse holds it (that one column read).
async fn parent_keys(warehouse: &Warehouse, keys: &KeySets, table: &str, key: &str) -> Result<Arc<HashSet<String>>> {
    if let Some(set) = keys.0.get(&(table.to_string(), key.to_string())) {
        return Ok(set.clone());
    }
    let name = TableName::new(table)?;
    if warehouse.load(&name).await?.is_none() {
        return Ok(Arc::new(HashSet::new()));
    }
    let batches = warehouse.scan_columns(&name, None, &[key]).await?;
    Ok(Arc::new(key_set(table, &batches, key)?))
}

/// Everything to write for one table, computed before any write.
pub(crate) struct Planned {
    pub(crate) model: TableModel,
    pub(crate) report: TableReport,
    /// The new table, in parts (kept rows, then new and changed ones).
    pub(crate) state: Option<Vec<RecordBatch>>,
    pub(crate) quarantine_new: Option<RecordBatch>,
    /// Quarantine rows, by `(batch, file, row)`, now in silver.
    pub(crate) released: HashSet<RowId>,
    pub(crate) dq: Vec<RecordBatch>,
    /// The txns marking the bronze batches read as processed.
    pub(crate) txns: Vec<(String, i64)>,
    pub(crate) derived: Vec<(String, RecordBatch)>,
    /// Whether the silver table changed (and so is rewritten).
    pub(crate) state_changed: bool,
    /// When the table is updated by key: its key and the files the new
    /// rows replace (see [`crate::keyed`]); else the whole table is.
    pub(crate) touched: Option<(String, storage::Touched)>,
}

/// What every step of one table's plan reads: the run, the table's model
/// and rules, and the session its SQL runs in.
pub(crate) struct Plan<'a> {
    pub(crate) warehouse: &'a Warehouse,
    pub(crate) run: &'a RunContext,
    pub(crate) model: &'a TableModel,
    /// The silver table's name.
    pub(crate) name: TableName,
    pub(crate) mode: Mode,
    pub(crate) rules: Vec<Rule>,
    /// The session, with silver's functions and a `__parent_<i>` check per
    /// parent registered.
    pub(crate) ctx: SessionContext,
    /// Per parent of the model: its column, and the parent's keys (none
    /// when only checking for aborts).
    pub(crate) parents: Vec<(String, Arc<HashSet<String>>)>,
    /// The run's clock, in microseconds: every row's timestamp.
    pub(crate) now: i64,
}

impl<'a> Plan<'a> {
    /// The plan of `model`'s table: its rules, and a session with the
    /// functions its SQL may call.
    async fn new(
        warehouse: &'a Warehouse,
        run: &'a RunContext,
        model: &'a TableModel,
        keys: &KeySets,
        mode: Mode,
    ) -> Result<Self> {
        let name = TableName::new(&model.table)?;
        let rules = rules_of(model);
        let ctx = session();
        let diagnosis_ref = if model.expectations.iter().any(|e| e.rule.contains("all_in_diagnosis_ref")) {
            parent_keys(warehouse, keys, DIAGNOSIS_REF_TABLE, "code").await?
        } else {
            Arc::new(HashSet::new())
        };
        udf::register(&ctx, run.clock.logical_date(), diagnosis_ref);
        let mut parents = Vec::new();
        for p in &model.parents {
            let set = if mode == Mode::Build {
                parent_keys(warehouse, keys, &p.table, &p.key).await?
            } else {
                Arc::default()
            };
            ctx.register_udf(udf::exists_in(&format!("__parent_{}", parents.len()), set.clone()));
            parents.push((p.column.clone(), set));
        }
        let now = run.clock.now().timestamp_micros();
        Ok(Self { warehouse, run, model, name, mode, rules, ctx, parents, now })
    }

    /// The silver table.
    pub(crate) fn table(&self) -> &str {
        &self.model.table
    }

    /// What a failure of rule `r` does.
    pub(crate) fn action_of(&self, r: u16) -> Action {
        self.rules[r as usize].action
    }

    /// Every row of table `name` when building and it exists.
    pub(crate) async fn read_whole(&self, name: &TableName) -> Result<Option<RecordBatch>> {
        match (self.mode, self.warehouse.load(name).await?) {
            (Mode::Build, Some(_)) => concat_plain(self.table(), &self.warehouse.scan(name, None).await?),
            _ => Ok(None),
        }
    }
}

/// Plans `model`'s table over the new bronze batches of `round` (see the
/// steps above); `None` when there is nothing to do, or in
/// [`Mode::CheckAborts`].
pub(crate) async fn plan_table(
    warehouse: &Warehouse,
    run: &RunContext,
    model: &TableModel,
    keys: &KeySets,
    mode: Mode,
    round: &Round,
    by_key: bool,
) -> Result<Option<Planned>> {
    let plan = Plan::new(warehouse, run, model, keys, mode).await?;
    let t = plan.table();
    // 1. The new bronze rows of every source, typed.
    let (frames, txns) = bronze::read_new(&plan, round).await?;
    // 2. Quarantined orphans whose parents have come.
    let mut orphans = quarantine::orphans(&plan).await?;
    if frames.is_empty() && orphans.candidates.is_empty() {
        return Ok(None);
    }
    // 3. One type per column across sources, else as the table has it;
    // then the rules, row by row.
    let keyed = keyed::keyed(&plan, by_key).await?;
    let held = match &keyed {
        Some(k) => Some(k.types()),
        None => plan.read_whole(&plan.name).await?,
    };
    let typed = Typed::new(bronze::column_types(model, &frames, [&held, &orphans.quarantine]));
    let mut sources = bronze::check_rows(&plan, frames, &typed).await?;
    // 4. The current rows (of the touched keys' files, or all), and the
    // candidates already released by a run that stopped halfway.
    let state_schema = state_schema(&typed.fields);
    let (state, touched) = current_rows(&plan, keyed, held, &state_schema, &sources, &orphans).await?;
    orphans.split(state.as_ref());
    // 5. Dispositions; a failed `fail` rule aborts here.
    let mut counts = Dispositions::of(&plan, &sources);
    counts.check_aborts(&plan)?;
    if mode == Mode::CheckAborts {
        return Ok(None);
    }
    // 6. De-duplicate the kept rows (and the released ones) against the
    // current rows.
    let incoming = Incoming::gather(&plan, &typed, state.as_ref(), &mut sources, &counts.kept, &orphans)?;
    let d = incoming.dedup(&plan, &typed)?;
    let fates = counts.count_fates(&incoming, &d, &sources, &orphans);
    // 7. The new rows.
    let new_state = state::build_state(&plan, &state_schema, state.as_ref(), &incoming, &d, &typed)?;
    let (new_state, deleted) = state::mark_deleted(&plan, new_state, &sources)?;
    let state_changed = !sources.is_empty() || d.groups.iter().any(|g| g.changed()) || deleted > 0;
    // 8. Quarantine rows, and released ones marked.
    let quarantine_new = quarantine::new_rows(&plan, &typed, &sources, &counts.quarantined).await?;
    let released = orphans.released(&fates.released_rows);
    // 9. dq_results rows.
    let dq_rows = dq::dq_rows(&plan, &counts, &fates);
    let dq = if dq_rows.is_empty() { Vec::new() } else { vec![dq::dq_batch(&plan, &dq_rows)?] };
    // 10. Derived tables.
    let derived = if state_changed { derived_tables(&plan, &state_schema, &new_state).await? } else { Vec::new() };

    // Rows in files the night leaves alone, by the table's statistics.
    let untouched = touched.as_ref().map_or(0, |(_, f)| f.table_rows().saturating_sub(f.touched_rows()));
    let report = TableReport {
        table: t.to_string(),
        batches: counts.by_batch.iter().map(|&b| counts.accounts[b].clone()).collect(),
        rules: dq::rule_counts(&dq_rows),
        released: fates.released,
        rows: untouched + new_state.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
        deleted,
        ..TableReport::default()
    };
    Ok(Some(Planned {
        model: model.clone(),
        report,
        state: Some(new_state),
        quarantine_new,
        released,
        dq,
        txns,
        derived,
        state_changed,
        touched,
    }))
}

/// Step 4's current rows, brought to `state_schema`: of the files holding
/// the touched keys when the table is updated by key and the night's rows
/// fit it, else the whole table (`held`, read already, or read now).
async fn current_rows(
    plan: &Plan<'_>,
    keyed: Option<keyed::Keyed>,
    held: Option<RecordBatch>,
    state_schema: &SchemaRef,
    sources: &[bronze::SourceRows],
    orphans: &quarantine::Orphans,
) -> Result<(Option<RecordBatch>, Option<(String, storage::Touched)>)> {
    let t = plan.table();
    let whole = match keyed {
        None => held,
        Some(k) => {
            if k.fits(state_schema)
                && let Some(keys) = k.touched_keys(t, sources, orphans)?
            {
                let (rows, touched) = k.read(plan, &keys, state_schema).await?;
                return Ok((rows, Some((k.key, touched))));
            }
            plan.read_whole(&plan.name).await?
        }
    };
    Ok((whole.map(|s| project(t, &s, state_schema)).transpose()?, None))
}

/// Step 10: each derived table, by its SQL over the new silver rows (as
/// table `parent`).
async fn derived_tables(
    plan: &Plan<'_>,
    state_schema: &SchemaRef,
    new_state: &[RecordBatch],
) -> Result<Vec<(String, RecordBatch)>> {
    let mut derived = Vec::new();
    for d in &plan.model.derived {
        let ctx = session();
        let mem = MemTable::try_new(state_schema.clone(), vec![new_state.to_vec()])
            .map_err(sql_err(&d.table, "parent rows"))?;
        ctx.register_table("parent", Arc::new(mem)).map_err(sql_err(&d.table, "parent rows"))?;
        let frame = ctx.sql(&d.sql).await.map_err(sql_err(&d.table, "sql"))?;
        let empty = Schema::new(
            frame
                .schema()
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), storage::plain_type(f.data_type()), true))
                .collect::<Vec<_>>(),
        );
        let out = frame.collect().await.map_err(sql_err(&d.table, "sql"))?;
        let batch = match concat_plain(&d.table, &out)? {
            Some(b) => b,
            None => RecordBatch::new_empty(Arc::new(empty)),
        };
        derived.push((d.table.clone(), batch));
    }
    Ok(derived)
}
