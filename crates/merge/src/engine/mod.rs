//! One merge, in phases that share a [`Merge`]; the time each takes is
//! reported in [`Outcome::timings_ms`] under the phase's name.
//!
//! 1. `prepare`: the batch's pieces in the table's business layout, every
//!    row hashed on every thread ([`incoming`]).
//! 2. `read_current`: the current partition's hashes and intervals
//!    ([`existing`]), indexed by key ([`index`]).
//! 3. `group`: a source row that is its key's only row and matches the
//!    key's current version exactly is settled by one hash lookup, without
//!    a timeline (in a snapshot, most rows); the others are sorted and
//!    grouped by key.
//! 4. `read_history`: of the history partition, the version identities
//!    (key hash, start, surrogate key: the collision check), and the hash
//!    columns of only the versions whose key's timeline reaches back (late
//!    changes, resurrections).
//! 5. `plan`: every change placed on its key's timeline ([`timeline`]), the
//!    keys shared out over the threads and the plans joined in key order
//!    ([`plan`]); the deletes of a full snapshot; no new surrogate key
//!    taken.
//! 6. `write`: the touched files rewritten, or kept with a deletion
//!    vector, each read ahead on its own task, and the new versions
//!    written ([`rewrite`], [`build`]).
//! 7. `commit`: the removes and adds in one Delta version, with the
//!    application transaction `(app_id, batch sequence)`.
//!
//! An SCD2 table is partitioned by `is_current`, so a merge reads the
//! current partition's few columns, and the history only where a key's
//! timeline reaches back: its cost follows the batch and the current rows,
//! not the table's history.

mod arrays;
mod build;
mod existing;
mod incoming;
mod index;
mod layout;
mod plan;
mod rewrite;
mod timeline;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, RecordBatch};
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::Action;

use self::arrays::binary_col;
use self::build::Builder;
use self::existing::{Existing, load_existing};
use self::incoming::{Incoming, group, prepare_incoming, sort_incoming};
use self::index::{CurrentIndex, KeyMap, Prehashed};
use self::layout::{
    Layout, PROP_ENCODING, PROP_KEY, PROP_SK, check_table, is_engine_column, layout, normalise, phase1_columns,
    table_arrow_schema, table_schema_for,
};
use self::plan::{Keys, Plan, check_stored_sks};
use self::rewrite::{Rewrite, matched_from_source};
use self::timeline::unchanged;
use crate::hash::{self, Hash128};
use crate::io::{self, DataFile};
use crate::{Batch, Deletes, Error, Metrics, Outcome, Result, Spec, Target, columns};

/// What the rows of a batch are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Changes (or a full snapshot) of the source.
    Changes,
    /// Keys that facts point at but the table does not hold: each key the
    /// table has never seen gets an inferred version from
    /// [`crate::INFERRED_FROM`], and an all-NULL key the unknown row
    /// [`crate::UNKNOWN_SK`].
    Infer,
}

/// Applies `batch` to the table at `target`, phase by phase.
pub(crate) async fn run(target: &Target, spec: &Spec, batch: Batch, mode: Mode) -> Result<Outcome> {
    let mut laps = Laps::start();
    let table = io::open(target).await?;
    let Some(encoding) = encoding_to_apply(target, spec, table.as_ref(), batch.sequence).await? else {
        return Ok(Outcome { already_applied: true, ..no_outcome() });
    };
    let mut m = Merge::prepare(target, spec, batch, mode, table, encoding)?;
    laps.lap("prepare");
    let current_of = m.read_current().await?;
    laps.lap("read_current");
    let (matches, partner, slow) = m.settle_unchanged(current_of)?;
    let (order, groups) = m.group(slow)?;
    laps.lap("group");
    let history = m.read_history(&order, &groups, &matches.at_current).await?;
    laps.lap("read_history");
    let mut plan = m.plan(order, groups, history, matches)?;
    laps.lap("plan");

    m.outcome.changed = std::mem::take(&mut plan.changed);
    if plan.is_empty() {
        m.outcome.current_rows = m.n_current as u64;
        m.outcome.timings_ms = laps.timings;
        return Ok(m.outcome);
    }
    let (schema, actions, current_rows) = m.write(plan, &partner).await?;
    laps.lap("write");
    let version = m.commit(&schema, actions).await?;
    laps.lap("commit");
    m.outcome.version = Some(version);
    m.outcome.current_rows = current_rows.max(0) as u64;
    m.outcome.timings_ms = laps.timings;
    Ok(m.outcome)
}

/// Milliseconds per phase.
struct Laps {
    timings: BTreeMap<&'static str, u64>,
    clock: Instant,
}

impl Laps {
    fn start() -> Self {
        Self { timings: BTreeMap::new(), clock: Instant::now() }
    }

    /// Records the time since the last lap under `name`.
    fn lap(&mut self, name: &'static str) {
        self.timings.insert(name, self.clock.elapsed().as_millis() as u64);
        self.clock = Instant::now();
    }
}

/// An outcome of nothing done yet.
fn no_outcome() -> Outcome {
    Outcome {
        version: None,
        already_applied: false,
        metrics: Metrics::default(),
        columns_added: Vec::new(),
        changed: Vec::new(),
        current_rows: 0,
        timings_ms: BTreeMap::new(),
    }
}

/// The hash encoding to merge in (the table's, or the newest for a new
/// table), or `None` when the table has already applied the batch's
/// sequence.
async fn encoding_to_apply(
    target: &Target,
    spec: &Spec,
    table: Option<&DeltaTable>,
    sequence: i64,
) -> Result<Option<u8>> {
    let mut encoding = hash::ENCODING_VERSION;
    if let Some(table) = table {
        encoding = check_table(target, spec, table)?;
        let snapshot = table.snapshot().map_err(io::delta_err(target))?;
        let applied = snapshot
            .transaction_version(table.log_store().as_ref(), &target.app_id)
            .await
            .map_err(io::delta_err(target))?;
        if applied.is_some_and(|v| v >= sequence) {
            return Ok(None);
        }
    }
    Ok(Some(encoding))
}

/// One merge under way: what its phases share.
struct Merge<'a> {
    target: &'a Target,
    spec: &'a Spec,
    mode: Mode,
    /// The batch, its rows taken out into `inc`.
    batch: Batch,
    /// The table, `None` until this merge creates it.
    table: Option<DeltaTable>,
    layout: Layout,
    inc: Incoming,
    /// The table's data files, current partition first.
    files: Vec<DataFile>,
    /// The table's rows loaded so far: the current ones first.
    ex: Existing,
    /// The current rows: the first `n_current` of `ex`.
    n_current: usize,
    outcome: Outcome,
}

/// Source rows matched to their key's current row.
struct Matches {
    /// The current row of each source row's key (`u32::MAX`: none). Kept
    /// for the plan: a key's current row is never looked up twice.
    at_current: Vec<u32>,
    /// The current rows some source row reached.
    seen_current: Vec<bool>,
}

/// The current row of source row `i`'s key, if any.
#[inline]
fn current_at(at_current: &[u32], i: u32) -> Option<u32> {
    Some(at_current[i as usize]).filter(|&c| c != u32::MAX)
}

/// What the merge read of the history partition.
struct History {
    /// The identity (key hash, start, surrogate key) of every version, one
    /// batch per file, for the collision check.
    ids: Vec<RecordBatch>,
    /// The loaded versions (rows of `ex`) of each key whose timeline
    /// reaches back.
    of: KeyMap<Vec<u32>>,
}

impl<'a> Merge<'a> {
    /// Phase 1: the batch's rows in the table's business layout, hashed.
    fn prepare(
        target: &'a Target,
        spec: &'a Spec,
        mut batch: Batch,
        mode: Mode,
        table: Option<DeltaTable>,
        encoding: u8,
    ) -> Result<Self> {
        let table_schema: Option<SchemaRef> = match &table {
            Some(t) => Some(table_arrow_schema(target, t)?),
            None => None,
        };
        // The rows stay in the pieces they were read in: joining them would
        // copy every value once more.
        let (source_schema, incoming) = normalise(std::mem::take(&mut batch.rows))?;
        let layout = layout(spec, table_schema.as_deref(), &source_schema, mode, encoding)?;
        let mut outcome = no_outcome();
        outcome.columns_added = match &table_schema {
            Some(_) => {
                layout.business.iter().map(|f| f.name().clone()).filter(|n| !layout.existed.contains(n)).collect()
            }
            None => Vec::new(),
        };
        let inc = prepare_incoming(spec, &layout, incoming, &batch, mode)?;
        outcome.metrics.rows_in = inc.key.len() as u64;
        let (files, ex) = (Vec::new(), Existing::default());
        Ok(Self { target, spec, mode, batch, table, layout, inc, files, ex, n_current: 0, outcome })
    }

    /// Whether the batch is a full snapshot, whose missing keys are deletes.
    fn snapshot_deletes(&self) -> bool {
        self.mode == Mode::Changes && matches!(self.spec.deletes, Deletes::Invalidate | Deletes::NewRecord)
    }

    /// Phase 2: the current rows' hashes and intervals, indexed by key.
    async fn read_current(&mut self) -> Result<CurrentIndex> {
        self.files = match &self.table {
            Some(t) => io::data_files(t, self.target).await?,
            None => Vec::new(),
        };
        let current_files: Vec<DataFile> = self.files.iter().filter(|f| f.current).cloned().collect();
        if let Some(table) = &self.table {
            let (spec, layout) = (self.spec, &self.layout);
            let projection = phase1_columns(spec, layout);
            let batches = io::read_files(table, &current_files, Some(&projection)).await?;
            let lens: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
            let parts = self.ex.grow(&lens, layout);
            let loads = parts.into_iter().zip(batches.iter().enumerate()).collect();
            parallel::on_threads(loads, |(part, (file, b))| {
                load_existing(part, spec, layout, b, file as u32, true, None)
            })?
            .into_iter()
            .collect::<Result<()>>()?;
        }
        self.n_current = self.ex.key.len();
        CurrentIndex::of(&self.ex, self.n_current)
    }

    /// Phase 3a: settles each source row that is its key's only row and
    /// matches the key's current version: in a snapshot that is most of
    /// them, and they are never sorted, grouped or placed on a timeline.
    /// The lookups and comparisons run on every thread; what they decide is
    /// recorded in one pass. Returns the matches, the source row that left
    /// each current row as it is (`u32::MAX`: none), and the rows left.
    fn settle_unchanged(&mut self, current_of: CurrentIndex) -> Result<(Matches, Vec<u32>, Vec<u32>)> {
        let (inc, ex, n_current, mode) = (&self.inc, &self.ex, self.n_current, self.mode);
        let mut seen_current = vec![false; n_current];
        // The source row that left each current row as it is.
        let mut partner = vec![u32::MAX; n_current];
        // Snapshots are often exported in key order, and a table keeps most of
        // its current rows in the order they came: each row's match is looked
        // for first just after the previous row's.
        let mut at_current: Vec<u32> = vec![u32::MAX; inc.key.len()];
        parallel::fill_on_every_core(&mut at_current, |start, out| {
            let mut next = 0;
            for (j, slot) in out.iter_mut().enumerate() {
                if let Some(c) = current_of.get_near(ex, inc.key[start + j], next) {
                    next = c as usize + 1;
                    *slot = c;
                }
            }
        })?;
        drop(current_of);
        let mut hits = vec![0u8; n_current];
        for &c in at_current.iter().filter(|&&c| c != u32::MAX) {
            hits[c as usize] = hits[c as usize].saturating_add(1);
        }
        let settled: Vec<bool> = parallel::on_every_core(inc.key.len(), |rows| {
            rows.map(|i| {
                let c = at_current[i];
                mode == Mode::Changes && c != u32::MAX && hits[c as usize] == 1 && unchanged(inc, ex, i, c as usize)
            })
            .collect::<Vec<_>>()
        })?
        .concat();
        let mut slow: Vec<u32> = Vec::new();
        for (i, (&c, &done)) in at_current.iter().zip(&settled).enumerate() {
            if done {
                seen_current[c as usize] = true;
                partner[c as usize] = i as u32;
                self.outcome.metrics.unchanged += 1;
            } else {
                slow.push(i as u32);
            }
        }
        drop((hits, settled));
        Ok((Matches { at_current, seen_current }, partner, slow))
    }

    /// Phase 3b: the rows `slow` grouped by key, in (effective time, order)
    /// sequence: the rows in `order`, one range of it per key.
    fn group(&mut self, slow: Vec<u32>) -> Result<(Vec<u32>, Vec<Range<usize>>)> {
        let mut order = sort_incoming(self.spec, &self.inc, slow)?;
        let groups = group(&self.inc, &mut order, &mut self.outcome.metrics);
        if self.snapshot_deletes() && self.inc.key.is_empty() && self.n_current > 0 {
            return Err(Error::Row {
                row: 0,
                reason: format!(
                    "the snapshot is empty, which would delete all {} current keys; refusing it",
                    self.n_current
                ),
            });
        }
        Ok((order, groups))
    }

    /// The keys whose timeline reaches back into the history: new keys
    /// (they may come back after a delete) and changes older than the
    /// current version.
    fn wanted_keys(&self, order: &[u32], groups: &[Range<usize>], at_current: &[u32]) -> HashSet<Hash128, Prehashed> {
        let (inc, ex) = (&self.inc, &self.ex);
        let mut wanted: HashSet<Hash128, Prehashed> = HashSet::default();
        for g in groups {
            let g = &order[g.clone()];
            let key = inc.key[g[0] as usize];
            match current_at(at_current, g[0]) {
                None => {
                    wanted.insert(key);
                }
                Some(c) if g.iter().any(|&i| inc.eff[i as usize] < ex.from[c as usize]) => {
                    wanted.insert(key);
                }
                Some(_) => {}
            }
        }
        wanted
    }

    /// Phase 4: the identity (key, start, surrogate key) of every history
    /// version, for the collision check, and the versions of the keys whose
    /// timeline reaches back (late changes, resurrections).
    async fn read_history(&mut self, order: &[u32], groups: &[Range<usize>], at_current: &[u32]) -> Result<History> {
        let mut history = History { ids: Vec::new(), of: KeyMap::default() };
        let n_current_files = self.files.iter().filter(|f| f.current).count();
        let history_files: Vec<DataFile> = self.files.iter().filter(|f| !f.current).cloned().collect();
        let (Some(table), false) = (&self.table, history_files.is_empty()) else { return Ok(history) };
        let (spec, layout) = (self.spec, &self.layout);
        let wanted = self.wanted_keys(order, groups, at_current);
        let projection =
            vec![columns::KEY_HASH.to_string(), columns::VALID_FROM.to_string(), spec.surrogate_key.clone()];
        history.ids = io::read_files(table, &history_files, Some(&projection)).await?;
        // The positions of the wanted keys' versions in each history file,
        // looked for on every core.
        let wanted_rows = |b: &RecordBatch| -> Result<Vec<u32>> {
            let keys = binary_col(b, columns::KEY_HASH)?;
            Ok((0..b.num_rows())
                .filter(|&r| keys.is_valid(r) && wanted.contains(&hash::from_stored(keys.value(r))))
                .map(|r| r as u32)
                .collect())
        };
        let found = match wanted.is_empty() {
            true => Vec::new(),
            false => parallel::on_threads(history.ids.iter().collect(), wanted_rows)?
                .into_iter()
                .collect::<Result<Vec<_>>>()?,
        };
        let (needed_files, rows): (Vec<usize>, Vec<Vec<u32>>) =
            found.into_iter().enumerate().filter(|(_, rows)| !rows.is_empty()).unzip();
        // Only the wanted keys' versions are loaded, from the columns the
        // plan needs; a history file is read whole only if it is rewritten.
        let to_read: Vec<DataFile> = needed_files.iter().map(|&f| history_files[f].clone()).collect();
        let mut projection = phase1_columns(spec, layout);
        projection.push(columns::VALID_TO.to_string());
        let slim = io::read_files(table, &to_read, Some(&projection)).await?;
        let start = self.ex.key.len();
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let parts = self.ex.grow(&lens, layout);
        let loads = parts.into_iter().zip(needed_files.iter().zip(&slim).zip(&rows)).collect();
        parallel::on_threads(loads, |(part, ((&f, b), rows))| {
            let file_id = (n_current_files + f) as u32;
            load_existing(part, spec, layout, b, file_id, false, Some(rows))
        })?
        .into_iter()
        .collect::<Result<()>>()?;
        for row in start..self.ex.key.len() {
            history.of.entry(self.ex.key[row]).or_default().push(row as u32);
        }
        Ok(history)
    }

    /// Phase 5: every change placed. The keys are shared out over the
    /// threads: each run of keys is planned on its own, and the plans are
    /// joined in key order, so the result is the same as one pass. Then
    /// the deletes of a full snapshot, and the check that no new surrogate
    /// key belongs to another version already stored.
    fn plan(&mut self, order: Vec<u32>, groups: Vec<Range<usize>>, history: History, matches: Matches) -> Result<Plan> {
        let Matches { at_current, mut seen_current } = matches;
        let keys = Keys {
            spec: self.spec,
            mode: self.mode,
            inc: &self.inc,
            ex: &self.ex,
            order: &order,
            groups: &groups,
            history_of: &history.of,
            at_current: &at_current,
        };
        let parts = parallel::on_every_core(groups.len(), |run| keys.plan(run))?;
        let mut plan = Plan { unknown_key: self.inc.unknown_key, ..Plan::default() };
        for part in parts {
            let (part, metrics, seen) = part?;
            self.outcome.metrics.add(&metrics);
            for c in seen {
                seen_current[c as usize] = true;
            }
            plan.absorb(part)?;
        }
        if self.snapshot_deletes() {
            let t = batch_at(&self.batch);
            plan.delete_unseen(self.spec, &self.ex, &seen_current, t, &mut self.outcome.metrics)?;
        }
        if !plan.new_sks.is_empty() {
            check_stored_sks(&plan.new_sks, &self.ex, self.n_current, &history.ids, self.spec)?;
        }
        drop(history);
        drop(std::mem::take(&mut plan.new_sks));
        Ok(plan)
    }

    /// Phase 6: the touched files rewritten (or kept with a deletion
    /// vector), and the new versions written. Returns the table's schema,
    /// the actions to commit and the rows in the current partition.
    async fn write(&mut self, mut plan: Plan, partner: &[u32]) -> Result<(SchemaRef, Vec<Action>, i64)> {
        let schema = table_schema_for(self.spec, &self.layout);
        // No rows: the key alone is written without a dictionary.
        let plain =
            self.inc.pieces.first().map_or_else(|| self.spec.key.clone(), |p| io::plain_columns(p, &self.spec.key));
        let mut writer = io::ParallelWriter::new(self.target, Arc::clone(&schema), &plain)?;
        let mut actions: Vec<Action> = Vec::new();
        let touched: Vec<u32> = plan.touched_files(&self.ex);
        // The plan's own list is freed once its rows are sorted out.
        let (mut by_file, fresh) = rewrite::rows_by_file(std::mem::take(&mut plan.rows), &self.ex, self.files.len());
        let mut held = self.read_rewritten_history(&touched).await?;
        let mut current_rows = self.n_current as i64;
        let matched = matched_from_source(self.spec, &self.layout);
        let builder = Builder {
            layout: &self.layout,
            inc: &self.inc,
            ex: &self.ex,
            schema: &schema,
            batch: &self.batch,
            partner,
            matched: &matched,
        };
        let rewrite = Rewrite::new(self, partner, &matched, &plan.replaced, &touched);
        // Each touched file's rows to write, and what to read of it.
        let mut jobs: Vec<rewrite::Job> = Vec::with_capacity(touched.len());
        for &f in &touched {
            jobs.push((f, std::mem::take(&mut by_file[f as usize]), held.remove(&f)));
        }
        if by_file.iter().any(|rows| !rows.is_empty()) {
            return Err(Error::internal("merge", "planned rows for a file that is not rewritten"));
        }
        let hidden = rewrite.write_files(jobs, &builder, &mut writer, &mut actions, &mut current_rows).await?;
        rewrite::write_fresh(fresh, &builder, &mut writer, &mut current_rows).await?;
        actions.extend(writer.finish().await?);
        if let Some(table) = &self.table {
            actions.extend(io::delete_rows(table, hidden).await?);
        }
        Ok((schema, actions, current_rows))
    }

    /// A history file to rewrite (a late change splits one of its versions)
    /// is read whole now, and its rows that the plan did not load are
    /// loaded, so that they are copied like the rest.
    async fn read_rewritten_history(&mut self, touched: &[u32]) -> Result<HashMap<u32, RecordBatch>> {
        let mut held: HashMap<u32, RecordBatch> = HashMap::new();
        let Some(table) = &self.table else { return Ok(held) };
        let (spec, layout, files) = (self.spec, &self.layout, &self.files);
        let rewritten: Vec<u32> = touched.iter().copied().filter(|&f| !files[f as usize].current).collect();
        let to_read: Vec<DataFile> = rewritten.iter().map(|&f| files[f as usize].clone()).collect();
        let full = io::read_files(table, &to_read, None).await?;
        for (f, b) in rewritten.into_iter().zip(full) {
            let ex = &mut self.ex;
            let loaded: HashSet<u32> =
                (0..ex.key.len()).filter(|&r| ex.file[r] == f).map(|r| ex.row_in_file[r]).collect();
            let rows: Vec<u32> = (0..b.num_rows() as u32).filter(|row| !loaded.contains(row)).collect();
            for part in ex.grow(&[rows.len()], layout) {
                load_existing(part, spec, layout, &b, f, false, Some(&rows))?;
            }
            held.insert(f, b);
        }
        Ok(held)
    }

    /// Phase 7: commits `actions` as one Delta version with the batch's
    /// transaction, creating the table if need be.
    async fn commit(&self, schema: &Schema, actions: Vec<Action>) -> Result<u64> {
        let (target, spec, batch) = (self.target, self.spec, &self.batch);
        let mut configuration: HashMap<String, String> = target.table_properties.iter().cloned().collect();
        configuration.insert(PROP_ENCODING.to_string(), self.layout.encoding.to_string());
        configuration.insert(PROP_KEY.to_string(), spec.key.join(","));
        configuration.insert(PROP_SK.to_string(), spec.surrogate_key.clone());
        if target.deletion_vectors {
            configuration.insert("delta.enableDeletionVectors".to_string(), "true".to_string());
        }
        let info = vec![
            ("gold.batch_id".to_string(), serde_json::json!(batch.id)),
            ("gold.batch_sequence".to_string(), serde_json::json!(batch.sequence)),
            ("gold.scd2_metrics".to_string(), serde_json::to_value(&self.outcome.metrics).unwrap_or_default()),
        ];
        io::commit(target, self.table.as_ref(), schema, configuration, actions, batch.sequence, info).await
    }
}

/// The business columns (no engine columns) of the table at `target`, or
/// `None` when there is no table yet.
pub(crate) async fn business_schema(target: &Target, spec: &Spec) -> Result<Option<Schema>> {
    let Some(table) = io::open(target).await? else { return Ok(None) };
    let schema = table_arrow_schema(target, &table)?;
    let fields: Vec<Field> =
        schema.fields().iter().filter(|f| !is_engine_column(spec, f.name())).map(|f| f.as_ref().clone()).collect();
    Ok(Some(Schema::new(fields)))
}

/// The batch's clock in UTC microseconds.
fn batch_at(batch: &Batch) -> i64 {
    batch.clock.timestamp_micros()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_of_rows_fill_their_own_parts_in_order_and_a_vector_not_needed_gives_empty_parts() {
        use parallel::{fill_on_every_core, on_threads, split_runs};
        let runs = vec![0..3, 3..3, 3..7];
        let mut v: Vec<u32> = vec![0; 7];
        let lens: Vec<usize> = split_runs(&mut v, &runs).iter().map(|p| p.len()).collect();
        assert_eq!(lens, vec![3, 0, 4]);
        let mut unused: Vec<u32> = Vec::new();
        let parts = split_runs(&mut unused, &runs);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.is_empty()));

        let mut out = vec![0usize; 1001];
        fill_on_every_core(&mut out, |start, part| {
            for (j, slot) in part.iter_mut().enumerate() {
                *slot = (start + j) * 2;
            }
        })
        .unwrap();
        assert!(out.iter().enumerate().all(|(i, &x)| x == i * 2));
        let doubled = on_threads((0..10).collect(), |i: i32| i * 2).unwrap();
        assert_eq!(doubled, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert!(on_threads(Vec::<i32>::new(), |i| i).unwrap().is_empty());
    }
}
