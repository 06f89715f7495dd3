//! The merge itself: prepare the batch, place every change on its key's
//! timeline, check the invariants, write and commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use deltalake::arrow::compute::{cast, concat, interleave};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::kernel::Action;

use crate::hash::{self, Attrs, Col, Hash128, encode_key, hash128, surrogate_key};
use crate::io::{self, DataFile};
use crate::{
    Batch, ChangedInterval, Deletes, Error, Metrics, OPEN_END, Outcome, Result, Spec, Target, Tracked, columns,
    key_hash_hex,
};

/// Hashes an already uniformly distributed BLAKE3-derived key by taking
/// its low bits: no second hash over a million keys.
#[derive(Default, Clone, Copy)]
struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = v as u64;
    }
}

type Prehashed = std::hash::BuildHasherDefault<PrehashedHasher>;
type KeyMap<V> = HashMap<Hash128, V, Prehashed>;

/// The current row of each key: tables of bare row numbers into
/// [`Existing`], hashed by the key hash's low bits, so an entry takes 4
/// bytes rather than a copy of the 16-byte key (10 million keys: about
/// 90 MB instead of 550). The keys are sharded over one table per core by
/// a bit of their high half, so the tables are built at once.
struct CurrentIndex {
    shards: Vec<hashbrown::HashTable<u32>>,
    /// The rows indexed: the first `n` of `ex`.
    n: usize,
}

impl CurrentIndex {
    /// Indexes the first `n` rows of `ex`; two current rows of one key
    /// break the SCD2 invariant.
    fn of(ex: &Existing, n: usize) -> Result<Self> {
        let count = cores();
        let keys = &ex.key[..n];
        let shards = on_threads((0..count).collect(), |shard| {
            let mut table = hashbrown::HashTable::with_capacity(n / count + n / 64);
            for (i, &k) in keys.iter().enumerate().filter(|&(_, &k)| Self::shard_of(k, count) == shard) {
                match table.entry(k as u64, |&r: &u32| ex.key[r as usize] == k, |&r: &u32| ex.key[r as usize] as u64) {
                    hashbrown::hash_table::Entry::Occupied(_) => {
                        return Err(Error::Invariant {
                            key_hash: key_hash_hex(k),
                            reason: "two current rows in the table".into(),
                        });
                    }
                    hashbrown::hash_table::Entry::Vacant(v) => {
                        v.insert(i as u32);
                    }
                }
            }
            Ok(table)
        })?;
        Ok(Self { shards: shards.into_iter().collect::<Result<_>>()?, n })
    }

    /// The shard of key `k`: from bits the tables' hashing does not use.
    fn shard_of(k: Hash128, count: usize) -> usize {
        ((k >> 64) as u64 % count as u64) as usize
    }

    fn get(&self, ex: &Existing, k: Hash128) -> Option<u32> {
        let shard = &self.shards[Self::shard_of(k, self.shards.len())];
        shard.find(k as u64, |&r| ex.key[r as usize] == k).copied()
    }

    /// As [`get`](Self::get), trying row `guess` (if indexed) first, so
    /// that a source in the table's row order is matched by sequential
    /// reads rather than the table's random ones.
    fn get_near(&self, ex: &Existing, k: Hash128, guess: usize) -> Option<u32> {
        if guess < self.n && ex.key[guess] == k {
            return Some(guess as u32);
        }
        self.get(ex, k)
    }
}

const PROP_ENCODING: &str = "gold.scd2.encoding";
const PROP_KEY: &str = "gold.scd2.key";
const PROP_SK: &str = "gold.scd2.surrogate_key";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Where a version's business values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// An existing row, unchanged.
    Existing(u32),
    /// A source row of this batch.
    Incoming(u32),
    /// An existing row with its type-1 and new columns taken from a source row.
    Updated { base: u32, from: u32 },
}

/// One version on a key's timeline while the batch is applied.
#[derive(Clone, Copy, Debug)]
struct Ver {
    from: i64,
    to: i64,
    deleted: bool,
    /// A `new-record` tombstone.
    tomb: bool,
    inferred: bool,
    content: Content,
    /// The existing row this version was, if any.
    origin: Option<u32>,
    dirty: bool,
}

/// Existing rows of the table that the merge looked at.
#[derive(Default)]
struct Existing {
    key: Vec<Hash128>,
    from: Vec<i64>,
    to: Vec<i64>,
    cmp: Vec<Hash128>,
    /// Type-1 fingerprints ([`hash::Attrs::fingerprint`]); empty when the
    /// table has no type-1 columns (all 0).
    t1: Vec<Hash128>,
    /// The stored `attr_hash`; empty when `cmp` is that hash.
    attr: Vec<Hash128>,
    sk: Vec<i64>,
    deleted: Vec<bool>,
    inferred: Vec<bool>,
    file: Vec<u32>,
    row_in_file: Vec<u32>,
}

impl Existing {
    /// The `attr_hash` stored with row `r`.
    fn stored_attr(&self, r: usize) -> Hash128 {
        self.attr.get(r).copied().unwrap_or(self.cmp[r])
    }

    /// Room for rows in runs of `lens` at the end, each run's part to be
    /// filled by [`load_existing`], on any thread. A vector of no rows yet
    /// is allocated zeroed, so its pages are first touched by the threads
    /// that fill them.
    fn grow(&mut self, lens: &[usize], layout: &Layout) -> Vec<ExistingRows<'_>> {
        fn tail<'a, T: Clone + Default>(
            v: &'a mut Vec<T>,
            n: usize,
            runs: &[std::ops::Range<usize>],
        ) -> Vec<&'a mut [T]> {
            let start = v.len();
            match start {
                0 => *v = vec![T::default(); n],
                _ => v.resize(start + n, T::default()),
            }
            split_runs(&mut v[start..], runs)
        }
        let n: usize = lens.iter().sum();
        let mut runs = Vec::with_capacity(lens.len());
        for &len in lens {
            let start = runs.last().map_or(0, |r: &std::ops::Range<usize>| r.end);
            runs.push(start..start + len);
        }
        let (t1_n, attr_n) =
            (if layout.t1_cols.is_empty() { 0 } else { n }, if layout.stored_hash_comparable { 0 } else { n });
        let parts = tail(&mut self.key, n, &runs)
            .into_iter()
            .zip(tail(&mut self.from, n, &runs))
            .zip(tail(&mut self.to, n, &runs))
            .zip(tail(&mut self.cmp, n, &runs))
            .zip(tail(&mut self.t1, t1_n, &runs))
            .zip(tail(&mut self.attr, attr_n, &runs))
            .zip(tail(&mut self.sk, n, &runs))
            .zip(tail(&mut self.deleted, n, &runs))
            .zip(tail(&mut self.inferred, n, &runs))
            .zip(tail(&mut self.file, n, &runs))
            .zip(tail(&mut self.row_in_file, n, &runs));
        parts
            .map(|((((((((((key, from), to), cmp), t1), attr), sk), deleted), inferred), file), row_in_file)| {
                ExistingRows { key, from, to, cmp, t1, attr, sk, deleted, inferred, file, row_in_file }
            })
            .collect()
    }

    /// The type-1 fingerprint of row `r` (0 without type-1 columns).
    fn t1(&self, r: usize) -> Hash128 {
        self.t1.get(r).copied().unwrap_or(0)
    }
}

/// A run of [`Existing`]'s rows, to be filled in place (see
/// [`Existing::grow`]); `t1` and `attr` are empty where `Existing`'s are.
struct ExistingRows<'a> {
    key: &'a mut [Hash128],
    from: &'a mut [i64],
    to: &'a mut [i64],
    cmp: &'a mut [Hash128],
    t1: &'a mut [Hash128],
    attr: &'a mut [Hash128],
    sk: &'a mut [i64],
    deleted: &'a mut [bool],
    inferred: &'a mut [bool],
    file: &'a mut [u32],
    row_in_file: &'a mut [u32],
}

/// Per-row facts about the incoming batch.
struct Incoming {
    /// The rows in the table's business layout, in the pieces they were
    /// read in; row `i` of the batch is found by [`Incoming::at`].
    pieces: Vec<RecordBatch>,
    /// The batch's first row of each piece.
    starts: Vec<usize>,
    /// The pieces' schema: the business layout.
    schema: SchemaRef,
    key: Vec<Hash128>,
    cmp: Vec<Hash128>,
    /// Hashes of every tracked column the source has; empty when those
    /// are exactly the compared ones (`cmp`).
    full: Vec<Hash128>,
    /// Type-1 fingerprints; empty without type-1 columns (all 0).
    t1: Vec<Hash128>,
    eff: Vec<i64>,
    delete: Vec<bool>,
    /// The key hash of a row whose key is all NULL (inferring only).
    unknown_key: Option<Hash128>,
}

impl Incoming {
    /// The piece holding row `i` of the batch, and the row within it.
    fn at(&self, i: usize) -> (usize, usize) {
        locate(&self.starts, i)
    }

    /// Column `name` of every row, as one array: for the few columns read
    /// across the batch (ordering columns).
    fn column(&self, name: &str) -> Result<ArrayRef> {
        whole_column(&self.schema, &self.pieces, name)
    }

    fn full(&self, i: usize) -> Hash128 {
        self.full.get(i).copied().unwrap_or(self.cmp[i])
    }

    fn t1(&self, i: usize) -> Hash128 {
        self.t1.get(i).copied().unwrap_or(0)
    }
}

/// The piece of `starts` (each piece's first row) holding row `i`, and
/// the row within it.
fn locate(starts: &[usize], i: usize) -> (usize, usize) {
    let p = starts.partition_point(|&s| s <= i).saturating_sub(1);
    (p, i - starts.get(p).copied().unwrap_or(0))
}

/// The rows `rows` of the batch as (piece, row in it), `starts` being
/// each piece's first row.
fn located(starts: &[usize], rows: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut p = locate(starts, rows.start).0;
    rows.map(move |i| {
        while starts.get(p + 1).is_some_and(|&s| s <= i) {
            p += 1;
        }
        (p, i - starts[p])
    })
}

/// The column `name` of `pieces` (of `schema`) as one array.
fn whole_column(schema: &Schema, pieces: &[RecordBatch], name: &str) -> Result<ArrayRef> {
    let parts = pieces.iter().map(|p| column(p, name).map(|c| c.as_ref())).collect::<Result<Vec<&dyn Array>>>()?;
    match parts.as_slice() {
        [] => {
            let field = schema.field_with_name(name).map_err(|e| Error::data(name, e))?;
            Ok(deltalake::arrow::array::new_empty_array(field.data_type()))
        }
        [one] => Ok(one.slice(0, one.len())),
        _ => concat(&parts).map_err(|e| Error::data(name, e)),
    }
}

/// The columns of the table in their roles.
struct Layout {
    /// Business columns of the table after this batch, in table order.
    business: Vec<Field>,
    /// Business columns the table had before this batch.
    existed: HashSet<String>,
    /// Business columns this batch brings.
    in_source: HashSet<String>,
    tracked: Vec<String>,
    type1: Vec<String>,
    /// Tracked columns compared between the batch and the table (sorted).
    cmp_cols: Vec<String>,
    /// Type-1 columns compared between the batch and the table (sorted).
    t1_cols: Vec<String>,
    /// Whether the table's stored `attr_hash` covers exactly `cmp_cols`.
    stored_hash_comparable: bool,
    /// The table's hash encoding version.
    encoding: u8,
}

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

pub(crate) async fn run(target: &Target, spec: &Spec, mut batch: Batch, mode: Mode) -> Result<Outcome> {
    let mut timings = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &'static str| {
        timings.insert(name, clock.elapsed().as_millis() as u64);
        clock = Instant::now();
    };
    let table = io::open(target).await?;
    let mut outcome = Outcome {
        version: None,
        already_applied: false,
        metrics: Metrics::default(),
        columns_added: Vec::new(),
        changed: Vec::new(),
        current_rows: 0,
        timings_ms: BTreeMap::new(),
    };
    let mut encoding = hash::ENCODING_VERSION;
    if let Some(table) = &table {
        encoding = check_table(target, spec, table)?;
        let snapshot = table.snapshot().map_err(io::delta_err(target))?;
        let applied = snapshot
            .transaction_version(table.log_store().as_ref(), &target.app_id)
            .await
            .map_err(io::delta_err(target))?;
        if applied.is_some_and(|v| v >= batch.sequence) {
            outcome.already_applied = true;
            return Ok(outcome);
        }
    }
    let table_schema: Option<SchemaRef> = match &table {
        Some(t) => Some(table_arrow_schema(target, t)?),
        None => None,
    };
    // The rows stay in the pieces they were read in: joining them would
    // copy every value once more.
    let (source_schema, incoming) = normalise(std::mem::take(&mut batch.rows))?;
    let layout = layout(spec, table_schema.as_deref(), &source_schema, mode, encoding)?;
    outcome.columns_added = match &table_schema {
        Some(_) => layout.business.iter().map(|f| f.name().clone()).filter(|n| !layout.existed.contains(n)).collect(),
        None => Vec::new(),
    };
    let inc = prepare_incoming(spec, &layout, incoming, &batch, mode)?;
    outcome.metrics.rows_in = inc.key.len() as u64;
    lap("prepare");

    // The existing current rows: hashes and intervals only.
    let files = match &table {
        Some(t) => io::data_files(t, target).await?,
        None => Vec::new(),
    };
    let current_files: Vec<DataFile> = files.iter().filter(|f| f.current).cloned().collect();
    let history_files: Vec<DataFile> = files.iter().filter(|f| !f.current).cloned().collect();
    let mut ex = Existing::default();
    if let Some(table) = &table {
        let projection = phase1_columns(spec, &layout);
        let batches = io::read_files(table, &current_files, Some(&projection)).await?;
        let lens: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        let parts = ex.grow(&lens, &layout);
        let loads = parts.into_iter().zip(batches.iter().enumerate()).collect();
        on_threads(loads, |(part, (file, b))| load_existing(part, spec, &layout, b, file as u32, true, None))?
            .into_iter()
            .collect::<Result<()>>()?;
    }
    let n_current = ex.key.len();
    let current_of = CurrentIndex::of(&ex, n_current)?;
    lap("read_current");

    // A source row that is its key's only row and matches the key's current
    // version is settled here: in a snapshot that is most of them, and they
    // are never sorted, grouped or placed on a timeline. The lookups and
    // comparisons run on every core; what they decide is recorded in one
    // pass.
    let mut seen_current = vec![false; n_current];
    // The source row that left each current row as it is.
    let mut partner = vec![u32::MAX; n_current];
    // Snapshots are often exported in key order, and a table keeps most of
    // its current rows in the order they came: each row's match is looked
    // for first just after the previous row's.
    // Kept for the plan: a key's current row is never looked up twice.
    let mut at_current: Vec<u32> = vec![u32::MAX; inc.key.len()];
    fill_on_every_core(&mut at_current, |start, out| {
        let mut next = 0;
        for (j, slot) in out.iter_mut().enumerate() {
            if let Some(c) = current_of.get_near(&ex, inc.key[start + j], next) {
                next = c as usize + 1;
                *slot = c;
            }
        }
    })?;
    drop(current_of);
    // The current row of source row `i`'s key.
    let current_at = |i: u32| Some(at_current[i as usize]).filter(|&c| c != u32::MAX);
    let mut hits = vec![0u8; n_current];
    for &c in at_current.iter().filter(|&&c| c != u32::MAX) {
        hits[c as usize] = hits[c as usize].saturating_add(1);
    }
    let settled: Vec<bool> = on_every_core(inc.key.len(), |rows| {
        rows.map(|i| {
            let c = at_current[i];
            mode == Mode::Changes && c != u32::MAX && hits[c as usize] == 1 && unchanged(&inc, &ex, i, c as usize)
        })
        .collect::<Vec<_>>()
    })?
    .concat();
    let mut slow: Vec<u32> = Vec::new();
    for (i, (&c, &done)) in at_current.iter().zip(&settled).enumerate() {
        if done {
            seen_current[c as usize] = true;
            partner[c as usize] = i as u32;
            outcome.metrics.unchanged += 1;
        } else {
            slow.push(i as u32);
        }
    }
    drop((hits, settled));

    // Group the other rows by key, in (effective time, order) sequence.
    let mut order = sort_incoming(spec, &inc, slow)?;
    let groups = group(&inc, &mut order, &mut outcome.metrics);
    let snapshot_deletes = mode == Mode::Changes && matches!(spec.deletes, Deletes::Invalidate | Deletes::NewRecord);
    if snapshot_deletes && inc.key.is_empty() && n_current > 0 {
        return Err(Error::Row {
            row: 0,
            reason: format!("the snapshot is empty, which would delete all {n_current} current keys; refusing it"),
        });
    }
    lap("group");

    // History: the identity (key, start, surrogate key) of every version,
    // for the collision check, and the versions of the keys whose timeline
    // reaches back (late changes, resurrections).
    let mut history_ids: Vec<RecordBatch> = Vec::new();
    let mut history_of: KeyMap<Vec<u32>> = KeyMap::default();
    if let (Some(table), false) = (&table, history_files.is_empty()) {
        let mut wanted: HashSet<Hash128, Prehashed> = HashSet::default();
        for g in &groups {
            let g = &order[g.clone()];
            let key = inc.key[g[0] as usize];
            match current_at(g[0]) {
                None => {
                    wanted.insert(key);
                }
                Some(c) if g.iter().any(|&i| inc.eff[i as usize] < ex.from[c as usize]) => {
                    wanted.insert(key);
                }
                Some(_) => {}
            }
        }
        let projection =
            vec![columns::KEY_HASH.to_string(), columns::VALID_FROM.to_string(), spec.surrogate_key.clone()];
        history_ids = io::read_files(table, &history_files, Some(&projection)).await?;
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
            false => on_threads(history_ids.iter().collect(), wanted_rows)?.into_iter().collect::<Result<Vec<_>>>()?,
        };
        let (needed_files, rows): (Vec<usize>, Vec<Vec<u32>>) =
            found.into_iter().enumerate().filter(|(_, rows)| !rows.is_empty()).unzip();
        // Only the wanted keys' versions are loaded, from the columns the
        // plan needs; a history file is read whole only if it is rewritten.
        let to_read: Vec<DataFile> = needed_files.iter().map(|&f| history_files[f].clone()).collect();
        let mut projection = phase1_columns(spec, &layout);
        projection.push(columns::VALID_TO.to_string());
        let slim = io::read_files(table, &to_read, Some(&projection)).await?;
        let start = ex.key.len();
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let parts = ex.grow(&lens, &layout);
        let loads = parts.into_iter().zip(needed_files.iter().zip(&slim).zip(&rows)).collect();
        on_threads(loads, |(part, ((&f, b), rows))| {
            let file_id = (current_files.len() + f) as u32;
            load_existing(part, spec, &layout, b, file_id, false, Some(rows))
        })?
        .into_iter()
        .collect::<Result<()>>()?;
        for row in start..ex.key.len() {
            history_of.entry(ex.key[row]).or_default().push(row as u32);
        }
    }
    lap("read_history");

    // Place every change. The keys are shared out over the cores: each
    // run of keys is planned on its own, and the plans are joined in key
    // order, so the result is the same as one pass.
    let parts = on_every_core(groups.len(), |run| -> Result<(Plan, Metrics, Vec<u32>)> {
        let mut plan = Plan { unknown_key: inc.unknown_key, ..Plan::default() };
        let mut metrics = Metrics::default();
        // The current rows these keys reach.
        let mut seen: Vec<u32> = Vec::new();
        let mut versions: Vec<Ver> = Vec::new();
        let mut initial: Vec<u32> = Vec::new();
        for g in &groups[run] {
            let g = &order[g.clone()];
            let key = inc.key[g[0] as usize];
            initial.clear();
            if let Some(rows) = history_of.get(&key) {
                initial.extend(rows);
            }
            if let Some(c) = current_at(g[0]) {
                seen.push(c);
                initial.push(c);
            }
            versions.clear();
            versions.extend(initial.iter().map(|&r| existing_ver(&ex, r)));
            versions.sort_by_key(|v| v.from);
            match mode {
                Mode::Changes => {
                    for &i in g {
                        apply(spec, &inc, &ex, &mut versions, i, &mut metrics);
                    }
                }
                Mode::Infer if versions.is_empty() => {
                    versions.push(Ver { inferred: true, ..new_ver(crate::INFERRED_FROM, OPEN_END, g[0]) });
                    metrics.inferred += 1;
                }
                Mode::Infer => metrics.unchanged += 1,
            }
            plan.settle(key, &versions, &initial, &ex)?;
        }
        Ok((plan, metrics, seen))
    })?;
    let mut plan = Plan { unknown_key: inc.unknown_key, ..Plan::default() };
    for part in parts {
        let (part, metrics, seen) = part?;
        outcome.metrics.add(&metrics);
        for c in seen {
            seen_current[c as usize] = true;
        }
        plan.absorb(part)?;
    }
    let mut versions: Vec<Ver> = Vec::new();
    if snapshot_deletes {
        let t = batch_at(&batch);
        for (c, seen) in seen_current.iter().enumerate() {
            // Inferred rows (and the unknown row) stand for keys the source
            // has not sent yet: their absence from a snapshot is no delete.
            if *seen || ex.deleted[c] || ex.inferred[c] {
                continue;
            }
            versions.clear();
            versions.push(existing_ver(&ex, c as u32));
            delete_at(spec, &mut versions, t, &mut outcome.metrics);
            plan.settle(ex.key[c], &versions, &[c as u32], &ex)?;
        }
    }
    // No new surrogate key may belong to another version already stored.
    // Every stored version is looked at, on every core.
    if !plan.new_sks.is_empty() {
        let new_sks = &plan.new_sks;
        let current =
            on_every_core(n_current, |rows| check_new_sks(new_sks, rows.map(|r| (ex.sk[r], ex.key[r], ex.from[r]))))?;
        let history = on_every_core(history_ids.len(), |files| -> Result<()> {
            for b in &history_ids[files] {
                let (keys, from, sks) = (
                    binary_col(b, columns::KEY_HASH)?,
                    ts_col(b, columns::VALID_FROM)?,
                    int_col(b, &spec.surrogate_key)?,
                );
                let rows = (0..b.num_rows()).map(|r| (sks.value(r), hash::from_stored(keys.value(r)), from.value(r)));
                check_new_sks(new_sks, rows)?;
            }
            Ok(())
        })?;
        current.into_iter().chain(history).collect::<Result<()>>()?;
    }
    drop(history_ids);
    drop(std::mem::take(&mut plan.new_sks));
    lap("plan");

    outcome.changed = std::mem::take(&mut plan.changed);
    if plan.is_empty() {
        outcome.current_rows = n_current as u64;
        outcome.timings_ms = timings;
        return Ok(outcome);
    }
    // What only the plan needed goes before the files are read.
    drop((at_current, seen_current, history_of, order, groups, versions));

    // Rewrite the touched files, write the new versions, commit.
    let schema = table_schema_for(spec, &layout);
    // No rows: the key alone is written without a dictionary.
    let plain = inc.pieces.first().map_or_else(|| spec.key.clone(), |p| io::plain_columns(p, &spec.key));
    let mut writer = io::ParallelWriter::new(target, Arc::clone(&schema), &plain)?;
    let mut actions: Vec<Action> = Vec::new();
    let touched: Vec<u32> = plan.touched_files(&ex);
    // Per file of the table, by its index in `files`.
    let mut by_file: Vec<Vec<OutRow>> = vec![Vec::new(); files.len()];
    // The plan's own list is freed once its rows are sorted out.
    let planned = std::mem::take(&mut plan.rows);
    let mut fresh: Vec<OutRow> = Vec::with_capacity(planned.iter().filter(|r| r.file(&ex).is_none()).count());
    for row in planned {
        match row.file(&ex) {
            Some(f) => by_file[f as usize].push(row),
            None => fresh.push(row),
        }
    }
    // A history file to rewrite (a late change splits one of its versions)
    // is read whole now, and its rows that the plan did not load are loaded,
    // so that they are copied like the rest.
    let mut held: HashMap<u32, RecordBatch> = HashMap::new();
    if let Some(table) = &table {
        let rewritten: Vec<u32> = touched.iter().copied().filter(|&f| !files[f as usize].current).collect();
        let to_read: Vec<DataFile> = rewritten.iter().map(|&f| files[f as usize].clone()).collect();
        let full = io::read_files(table, &to_read, None).await?;
        for (f, b) in rewritten.into_iter().zip(full) {
            let loaded: HashSet<u32> =
                (0..ex.key.len()).filter(|&r| ex.file[r] == f).map(|r| ex.row_in_file[r]).collect();
            let rows: Vec<u32> = (0..b.num_rows() as u32).filter(|row| !loaded.contains(row)).collect();
            for part in ex.grow(&[rows.len()], &layout) {
                load_existing(part, spec, &layout, &b, f, false, Some(&rows))?;
            }
            held.insert(f, b);
        }
    }
    let mut current_rows = n_current as i64;
    let matched = matched_from_source(spec, &layout);
    let builder = Builder {
        layout: &layout,
        inc: &inc,
        ex: &ex,
        schema: &schema,
        batch: &batch,
        partner: &partner,
        matched: &matched,
    };
    let mut replaced = vec![false; ex.key.len()];
    for &r in &plan.replaced {
        replaced[r as usize] = true;
    }
    let mut is_touched = vec![false; files.len()];
    for &f in &touched {
        is_touched[f as usize] = true;
    }
    let mut rows_of_file: Vec<Vec<u32>> = vec![Vec::new(); files.len()];
    for (r, &f) in ex.file.iter().enumerate() {
        if is_touched[f as usize] {
            rows_of_file[f as usize].push(r as u32);
        }
    }
    // Each touched file's rows to write, and what to read of it. A current
    // file whose rows mostly matched a source row unchanged is read slim:
    // those rows take their business values from the source row, so only
    // the engine's kept columns and the columns a source row cannot supply
    // are decoded for every row, and the rest for the other rows only.
    // A file's rows are listed only when its turn to be read comes, so
    // the copies of its untouched rows exist for a few files at a time.
    let mut jobs: Vec<(u32, Vec<OutRow>, Option<RecordBatch>)> = Vec::with_capacity(touched.len());
    for &f in &touched {
        jobs.push((f, std::mem::take(&mut by_file[f as usize]), held.remove(&f)));
    }
    if by_file.iter().any(|rows| !rows.is_empty()) {
        return Err(Error::data("merge", "planned rows for a file that is not rewritten"));
    }
    // A current file keeps its untouched rows where they are, and a
    // deletion vector hides the rows the merge replaced, unless that would
    // leave more than half of the file hidden: then it is rewritten, and
    // its hidden rows are dropped for good.
    let deletion_vectors = table.as_ref().is_some_and(io::takes_deletion_vectors);
    let plan_file = |f: u32, mut rows: Vec<OutRow>, held: Option<RecordBatch>| {
        let file = &files[f as usize];
        if deletion_vectors && file.current && held.is_none() {
            let kept = &rows_of_file[f as usize];
            // In file order, as a file's rows are loaded.
            let gone: Vec<u32> =
                kept.iter().filter(|&&r| replaced[r as usize]).map(|&r| ex.row_in_file[r as usize]).collect();
            if (file.deleted.len() + gone.len()) * 2 <= file.deleted.len() + kept.len() {
                // Only the rows that the planned rows take values from are read.
                let read = FileRead::Rows(rows_read(rows.iter(), &ex));
                return (rows, read, Some(gone));
            }
        }
        // Rows of this file that the merge did not touch are copied.
        for &r in &rows_of_file[f as usize] {
            if !replaced[r as usize] {
                rows.push(OutRow::copy(&ex, r));
            }
        }
        let read = match held {
            Some(b) => FileRead::Held(b),
            None => {
                let matched_rows = rows.iter().filter(|o| o.matched(&partner).is_some()).count();
                if files[f as usize].current && !matched.is_empty() && matched_rows * 2 >= rows.len() {
                    FileRead::Slim(rows_read(rows.iter().filter(|o| o.matched(&partner).is_none()), &ex))
                } else {
                    FileRead::Whole
                }
            }
        };
        (rows, read, None)
    };
    let slim_cols: Vec<String> = [columns::RECORDED_AT, columns::BATCH_ID]
        .into_iter()
        .map(String::from)
        .chain(layout.business.iter().map(|f| f.name().clone()).filter(|n| !matched.contains(n)))
        .collect();
    let wide_cols: Vec<String> = matched.iter().cloned().collect();
    // Each touched file is read on its own task, started before the file
    // ahead of it is rebuilt: decoding overlaps building and encoding, and
    // the first two files are decoded on two cores at once.
    let store = table.as_ref().map(|t| t.object_store());
    let start_read = |f: u32, read: FileRead| {
        let (store, file) = (store.clone(), files[f as usize].clone());
        let (slim_cols, wide_cols) = (slim_cols.clone(), wide_cols.clone());
        tokio::spawn(async move {
            let store = || store.ok_or_else(|| Error::data("merge", "a file without a table"));
            Ok::<_, Error>(match read {
                FileRead::Held(b) => FileData::whole(b),
                FileRead::Whole => FileData::whole(io::read_file(store()?, &file, None).await?),
                FileRead::Slim(wide_rows) => {
                    let (slim, wide) =
                        io::read_split(store()?, &file, &slim_cols, &wide_cols, wide_rows.clone()).await?;
                    FileData { slim, wide, slim_rows: None, wide_rows: Some(wide_rows) }
                }
                FileRead::Rows(rows) => {
                    let read = io::read_rows(store()?, &file, None, Some(rows.clone())).await?;
                    FileData { slim: read.clone(), wide: read, slim_rows: Some(rows.clone()), wide_rows: Some(rows) }
                }
            })
        })
    };
    let mut jobs = jobs.into_iter().map(|(f, rows, held)| {
        let (rows, read, gone) = plan_file(f, rows, held);
        (f, rows, gone, start_read(f, read))
    });
    let mut ahead: std::collections::VecDeque<_> = jobs.by_ref().take(1).collect();
    // Per file kept in place: the rows its new deletion vector hides.
    let mut hidden: Vec<(&DataFile, Vec<u32>)> = Vec::new();
    while let Some((f, rows, gone, reading)) = ahead.pop_front() {
        ahead.extend(jobs.by_ref().take(READ_AHEAD_FILES));
        let data = reading.await.map_err(|e| Error::data("reading table files", e))??;
        let file = &files[f as usize];
        match gone {
            // Kept in place (a current file): its replaced rows leave.
            Some(gone) => {
                current_rows -= gone.len() as i64;
                if !gone.is_empty() {
                    hidden.push((file, gone));
                }
            }
            None => {
                actions.push(Action::Remove(file.remove.clone()));
                if file.current {
                    current_rows -= data.slim.num_rows() as i64;
                }
            }
        }
        let rows = current_first(rows);
        current_rows += rows.iter().filter(|r| r.to == OPEN_END).count() as i64;
        for chunk in rows.chunks(BUILD_ROWS) {
            let out = builder.build(chunk, Some(&data))?;
            writer.write(out).await?;
        }
    }
    // New versions in the order of their source rows, not of their key
    // hashes: the table then keeps the order its sources come in, and the
    // next snapshot in that order finds most of its rows' current versions
    // by sequential reads (CurrentIndex::get_near).
    fresh.sort_unstable_by_key(|r| match r.content {
        Content::Incoming(i) => i,
        Content::Existing(_) | Content::Updated { .. } => u32::MAX,
    });
    let fresh = current_first(fresh);
    current_rows += fresh.iter().filter(|r| r.to == OPEN_END).count() as i64;
    for chunk in fresh.chunks(BUILD_ROWS) {
        let out = builder.build(chunk, None)?;
        writer.write(out).await?;
    }
    actions.extend(writer.finish().await?);
    if let Some(table) = &table {
        actions.extend(io::delete_rows(table, hidden).await?);
    }
    lap("write");

    let mut configuration = HashMap::new();
    configuration.insert(PROP_ENCODING.to_string(), layout.encoding.to_string());
    configuration.insert(PROP_KEY.to_string(), spec.key.join(","));
    configuration.insert(PROP_SK.to_string(), spec.surrogate_key.clone());
    if target.deletion_vectors {
        configuration.insert("delta.enableDeletionVectors".to_string(), "true".to_string());
    }
    let info = vec![
        ("gold.batch_id".to_string(), serde_json::json!(batch.id)),
        ("gold.batch_sequence".to_string(), serde_json::json!(batch.sequence)),
        ("gold.scd2_metrics".to_string(), serde_json::to_value(&outcome.metrics).unwrap_or_default()),
    ];
    let version = io::commit(target, table.as_ref(), &schema, configuration, actions, batch.sequence, info).await?;
    lap("commit");
    outcome.version = Some(version);
    outcome.current_rows = current_rows.max(0) as u64;
    outcome.timings_ms = timings;
    Ok(outcome)
}

/// `f` over `0..n`, cut into one run of consecutive rows per core, each
/// run on its own thread; the runs' results in row order.
fn on_every_core<T: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Result<Vec<T>> {
    on_threads(core_runs(n), f)
}

/// The threads a merge shares its work over: one per core, at most 8.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |p| p.get()).clamp(1, 8)
}

/// `0..n` cut into one run of consecutive rows per core.
fn core_runs(n: usize) -> Vec<std::ops::Range<usize>> {
    let chunk = n.div_ceil(cores()).max(1);
    (0..n).step_by(chunk).map(|start| start..(start + chunk).min(n)).collect()
}

/// `f` on each item, the items shared out over the cores in consecutive
/// runs, each run on its own thread; the results in item order.
fn on_threads<I: Send, T: Send>(items: Vec<I>, f: impl Fn(I) -> T + Sync) -> Result<Vec<T>> {
    let threads = cores();
    let per_run = items.len().div_ceil(threads).max(1);
    let mut items = items.into_iter().peekable();
    let mut runs: Vec<Vec<I>> = Vec::with_capacity(threads);
    while items.peek().is_some() {
        runs.push(items.by_ref().take(per_run).collect());
    }
    let parts: Vec<Option<Vec<T>>> = std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> =
            runs.into_iter().map(|run| s.spawn(move || run.into_iter().map(f).collect::<Vec<T>>())).collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let mut out = Vec::new();
    for part in parts {
        out.extend(part.ok_or_else(|| Error::data("merge", "a worker thread panicked"))?);
    }
    Ok(out)
}

/// `out` cut at `runs` (consecutive, from 0): one part per run. An empty
/// `out` (a column of results not needed) gives an empty part for each.
fn split_runs<'a, T>(mut out: &'a mut [T], runs: &[std::ops::Range<usize>]) -> Vec<&'a mut [T]> {
    runs.iter()
        .map(|run| match out.is_empty() {
            true => &mut [][..],
            false => {
                let (part, rest) = std::mem::take(&mut out).split_at_mut(run.len());
                out = rest;
                part
            }
        })
        .collect()
}

/// `out` filled on every core, each run of rows in place: `f` gets the
/// first row of its run and the run's part of `out`.
fn fill_on_every_core<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) -> Result<()> {
    let runs = core_runs(out.len());
    let parts = runs.iter().map(|r| r.start).zip(split_runs(out, &runs)).collect();
    on_threads(parts, |(start, part)| f(start, part)).map(drop)
}

pub(crate) async fn business_schema(target: &Target, spec: &Spec) -> Result<Option<Schema>> {
    let Some(table) = io::open(target).await? else { return Ok(None) };
    let schema = table_arrow_schema(target, &table)?;
    let fields: Vec<Field> =
        schema.fields().iter().filter(|f| !is_engine_column(spec, f.name())).map(|f| f.as_ref().clone()).collect();
    Ok(Some(Schema::new(fields)))
}

fn batch_at(batch: &Batch) -> i64 {
    batch.clock.timestamp_micros()
}

/// Checks that the table was written by gold under `spec`, and returns
/// the hash encoding it records (the table keeps it).
fn check_table(target: &Target, spec: &Spec, table: &deltalake::DeltaTable) -> Result<u8> {
    let snapshot = table.snapshot().map_err(io::delta_err(target))?;
    let config = snapshot.metadata().configuration();
    let mismatch = |reason: String| Err(Error::SpecMismatch { table: target.url.to_string(), reason });
    let encoding = match config.get(PROP_ENCODING).map(String::as_str) {
        Some(v) => match hash::ENCODINGS.into_iter().find(|e| e.to_string() == v) {
            Some(e) => e,
            None => {
                let known = hash::ENCODINGS.map(|e| e.to_string()).join(", ");
                return mismatch(format!("hash encoding {v}, which this build does not merge into (it knows {known})"));
            }
        },
        None => return mismatch("not an SCD2 table written by gold (no gold.scd2.encoding property)".into()),
    };
    let key = spec.key.join(",");
    if config.get(PROP_KEY) != Some(&key) {
        return mismatch(format!("keyed on {:?}, not {key:?}", config.get(PROP_KEY).cloned().unwrap_or_default()));
    }
    if config.get(PROP_SK) != Some(&spec.surrogate_key) {
        return mismatch(format!(
            "surrogate key column is {:?}, not {:?}",
            config.get(PROP_SK).cloned().unwrap_or_default(),
            spec.surrogate_key
        ));
    }
    Ok(encoding)
}

fn table_arrow_schema(target: &Target, table: &deltalake::DeltaTable) -> Result<SchemaRef> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let snapshot = table.snapshot().map_err(io::delta_err(target))?;
    let schema: Schema = snapshot.schema().as_ref().try_into_arrow().map_err(|e| Error::data("table schema", e))?;
    Ok(Arc::new(schema))
}

/// The source's pieces with one schema, views and large strings made
/// plain, empty pieces dropped.
fn normalise(rows: Vec<RecordBatch>) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let Some(first) = rows.first() else {
        return Ok((Arc::new(Schema::empty()), Vec::new()));
    };
    let fields: Vec<Field> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(crate::source::plain(f.data_type())))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    // Piece by piece, on every core; a column already of its plain type is
    // passed on as it is.
    let pieces: Vec<RecordBatch> = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
    let pieces = on_threads(pieces, |piece| {
        let cols = piece
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(Arc::clone(c)),
                false => cast(c, f.data_type()).map_err(|e| Error::data(&format!("column {:?}", f.name()), e)),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|e| Error::data("batch", e))
    })?;
    Ok((schema, pieces.into_iter().collect::<Result<_>>()?))
}

fn is_engine_column(spec: &Spec, name: &str) -> bool {
    name == spec.surrogate_key || columns::ALL.contains(&name)
}

fn layout(spec: &Spec, table: Option<&Schema>, source: &Schema, mode: Mode, encoding: u8) -> Result<Layout> {
    let missing = |column: &str, reason: &str| Error::Column { column: column.to_string(), reason: reason.to_string() };
    for name in source.fields().iter().map(|f| f.name()) {
        if is_engine_column(spec, name) {
            return Err(missing(name, "is written by the SCD2 engine and cannot come from the source"));
        }
    }
    let in_source: HashSet<String> = source.fields().iter().map(|f| f.name().clone()).collect();
    let mut business: Vec<Field> = Vec::new();
    let mut existed = HashSet::new();
    if let Some(table) = table {
        for f in table.fields() {
            if !is_engine_column(spec, f.name()) {
                existed.insert(f.name().clone());
                business.push(f.as_ref().clone().with_nullable(true));
            }
        }
    }
    for f in source.fields() {
        if !existed.contains(f.name()) {
            business.push(f.as_ref().clone().with_nullable(true));
        }
    }
    let needed: Vec<&String> = match mode {
        Mode::Infer => spec.key.iter().collect(),
        Mode::Changes => spec
            .key
            .iter()
            .chain(&spec.order_by)
            .chain(spec.effective_from.iter())
            .chain(match &spec.deletes {
                Deletes::Events { column, .. } => Some(column),
                _ => None,
            })
            .collect(),
    };
    for column in needed {
        if !in_source.contains(column) {
            return Err(missing(column, "is named by the SCD2 spec but is not in the source"));
        }
    }
    let names: Vec<String> = business.iter().map(|f| f.name().clone()).collect();
    // Inferred keys may open a table before its source has sent a row.
    for column in spec.type1.iter().filter(|_| mode == Mode::Changes) {
        if !names.contains(column) {
            return Err(missing(column, "is declared type-1 but is in neither the source nor the table"));
        }
    }
    let tracked_over = |cols: &[String]| -> Result<Vec<String>> {
        let mut out: Vec<String> = match &spec.tracked {
            Tracked::Columns(list) => {
                for c in list.iter().filter(|_| mode == Mode::Changes) {
                    if !names.contains(c) {
                        return Err(missing(c, "is declared tracked but is in neither the source nor the table"));
                    }
                }
                cols.iter().filter(|c| list.contains(c)).cloned().collect()
            }
            Tracked::AllExcept(except) => cols
                .iter()
                .filter(|c| !spec.key.contains(c) && !spec.type1.contains(c) && !except.contains(c))
                .cloned()
                .collect(),
        };
        out.sort();
        Ok(out)
    };
    let tracked = tracked_over(&names)?;
    for c in &tracked {
        if spec.key.contains(c) || spec.type1.contains(c) {
            return Err(missing(c, "cannot be both tracked and a key or type-1 column"));
        }
    }
    let cmp_cols: Vec<String> = tracked
        .iter()
        .filter(|c| in_source.contains(*c) && (table.is_none() || existed.contains(*c)))
        .cloned()
        .collect();
    let table_tracked: Vec<String> = match table {
        Some(_) => tracked.iter().filter(|c| existed.contains(*c)).cloned().collect(),
        None => cmp_cols.clone(),
    };
    let mut t1_cols: Vec<String> = spec
        .type1
        .iter()
        .filter(|c| in_source.contains(*c) && (table.is_none() || existed.contains(*c)))
        .cloned()
        .collect();
    t1_cols.sort();
    Ok(Layout {
        stored_hash_comparable: table_tracked == cmp_cols,
        business,
        existed,
        in_source,
        tracked,
        type1: spec.type1.clone(),
        cmp_cols,
        t1_cols,
        encoding,
    })
}

fn table_schema_for(spec: &Spec, layout: &Layout) -> SchemaRef {
    let mut fields = vec![Field::new(&spec.surrogate_key, DataType::Int64, false)];
    fields.extend(layout.business.iter().cloned());
    fields.extend([
        Field::new(columns::KEY_HASH, DataType::Binary, false),
        Field::new(columns::ATTR_HASH, DataType::Binary, false),
        Field::new(columns::VALID_FROM, ts_type(), false),
        Field::new(columns::VALID_TO, ts_type(), false),
        Field::new(columns::IS_DELETED, DataType::Boolean, false),
        Field::new(columns::IS_INFERRED, DataType::Boolean, false),
        Field::new(columns::RECORDED_AT, ts_type(), false),
        Field::new(columns::BATCH_ID, DataType::Utf8, false),
        Field::new(columns::IS_CURRENT, DataType::Boolean, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The columns read from current files before deciding anything.
fn phase1_columns(spec: &Spec, layout: &Layout) -> Vec<String> {
    let mut cols: Vec<String> = [
        columns::KEY_HASH,
        columns::ATTR_HASH,
        columns::VALID_FROM,
        columns::VALID_TO,
        columns::IS_DELETED,
        columns::IS_INFERRED,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cols.push(spec.surrogate_key.clone());
    cols.extend(layout.t1_cols.iter().cloned());
    if !layout.stored_hash_comparable {
        cols.extend(layout.cmp_cols.iter().cloned());
    }
    cols
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is missing from a table file".into() })
}

fn binary_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BinaryArray> {
    column(b, name)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not binary in the table".into() })
}

fn int_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(b, name)?
        .as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not a 64-bit integer".into() })
}

fn ts_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a TimestampMicrosecondArray> {
    column(b, name)?
        .as_primitive_opt::<deltalake::arrow::datatypes::TimestampMicrosecondType>()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not a microsecond timestamp".into() })
}

fn bool_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray> {
    column(b, name)?
        .as_boolean_opt()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not boolean".into() })
}

/// Attribute columns of `b` named in `names` (absent ones are skipped: an
/// absent column hashes as NULL).
fn attr_cols<'a>(b: &'a RecordBatch, names: &'a [String], encoding: u8) -> Result<Attrs<'a>> {
    let cols = names
        .iter()
        .filter_map(|n| b.column_by_name(n).map(|c| (n.as_str(), c)))
        .map(|(n, c)| Ok((n, Col::new(n, c)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Attrs::new(cols, encoding))
}

/// Loads the rows `rows` of `b` (ascending positions; all: `None`), read
/// from table file `file`, into `part`, which has room for exactly them.
fn load_existing(
    part: ExistingRows<'_>,
    spec: &Spec,
    layout: &Layout,
    b: &RecordBatch,
    file: u32,
    current: bool,
    rows: Option<&[u32]>,
) -> Result<()> {
    let keys = binary_col(b, columns::KEY_HASH)?;
    let attrs = binary_col(b, columns::ATTR_HASH)?;
    let from = ts_col(b, columns::VALID_FROM)?;
    let to = ts_col(b, columns::VALID_TO)?;
    let deleted = bool_col(b, columns::IS_DELETED)?;
    let inferred = bool_col(b, columns::IS_INFERRED)?;
    let sks = int_col(b, &spec.surrogate_key)?;
    let t1 = attr_cols(b, &layout.t1_cols, layout.encoding)?;
    let cmp = if layout.stored_hash_comparable { None } else { Some(attr_cols(b, &layout.cmp_cols, layout.encoding)?) };
    let n = rows.map_or(b.num_rows(), <[u32]>::len);
    if part.key.len() != n {
        return Err(Error::data("merge", format!("room for {} rows loaded from a file, not {n}", part.key.len())));
    }
    let mut buf = Vec::new();
    for j in 0..n {
        let r = rows.map_or(j, |rows| rows[j] as usize);
        part.key[j] = hash::from_stored(keys.value(r));
        let stored = hash::from_stored(attrs.value(r));
        part.cmp[j] = match &cmp {
            None => stored,
            Some(cols) => {
                part.attr[j] = stored;
                cols.hash(r, &mut buf)
            }
        };
        // Decided by the layout, not the file: a file written before a
        // type-1 column was added lacks it, and its rows hash to 0.
        if let Some(slot) = part.t1.get_mut(j) {
            *slot = if t1.is_empty() { 0 } else { t1.fingerprint(r, &mut buf) };
        }
        part.from[j] = from.value(r);
        part.to[j] = if current { OPEN_END } else { to.value(r) };
        part.deleted[j] = deleted.value(r);
        part.inferred[j] = inferred.value(r);
        part.sk[j] = sks.value(r);
        part.file[j] = file;
        part.row_in_file[j] = r as u32;
    }
    Ok(())
}

fn prepare_incoming(
    spec: &Spec,
    layout: &Layout,
    source: Vec<RecordBatch>,
    batch: &Batch,
    mode: Mode,
) -> Result<Incoming> {
    // Each piece in the table's business layout: table types, NULL for
    // columns the source lacks.
    let schema = Arc::new(Schema::new(layout.business.clone()));
    let to_layout = |piece: RecordBatch| -> Result<RecordBatch> {
        let mut cols = Vec::with_capacity(layout.business.len());
        for f in &layout.business {
            let col = match piece.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => Arc::clone(c),
                Some(c) => {
                    let cast_options = deltalake::arrow::compute::CastOptions { safe: false, ..Default::default() };
                    deltalake::arrow::compute::cast_with_options(c, f.data_type(), &cast_options).map_err(|e| {
                        Error::Column {
                            column: f.name().clone(),
                            reason: format!("does not convert to the table's type {}: {e}", f.data_type()),
                        }
                    })?
                }
                None => new_null_array(f.data_type(), piece.num_rows()),
            };
            cols.push(col);
        }
        RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|e| Error::data("batch", e))
    };
    let pieces: Vec<RecordBatch> = on_threads(source, to_layout)?.into_iter().collect::<Result<_>>()?;
    let mut starts = Vec::with_capacity(pieces.len());
    let mut n = 0;
    for piece in &pieces {
        starts.push(n);
        n += piece.num_rows();
    }

    let tracked_in_source: Vec<String> =
        layout.tracked.iter().filter(|c| layout.in_source.contains(*c)).cloned().collect();
    // Each piece's columns as the hashes read them.
    struct Views<'a> {
        key: Vec<Col<'a>>,
        cmp: Attrs<'a>,
        full: Attrs<'a>,
        t1: Attrs<'a>,
    }
    let views = pieces
        .iter()
        .map(|p| {
            Ok(Views {
                key: spec.key.iter().map(|k| Col::new(k, column(p, k)?)).collect::<Result<Vec<_>>>()?,
                cmp: attr_cols(p, &layout.cmp_cols, layout.encoding)?,
                full: attr_cols(p, &tracked_in_source, layout.encoding)?,
                t1: attr_cols(p, &layout.t1_cols, layout.encoding)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Every row of the batch as (piece, row in it).
    let every_row = || located(&starts, 0..n).map(|(p, r)| (&views[p], r));
    if mode == Mode::Changes {
        for (j, k) in spec.key.iter().enumerate() {
            if let Some(row) = every_row().position(|(v, r)| v.key[j].is_null(r)) {
                return Err(Error::Row { row: row + 1, reason: format!("key column {k:?} is empty") });
            }
        }
    } else if let Some(row) = every_row().position(|(v, r)| {
        let nulls = v.key.iter().filter(|c| c.is_null(r)).count();
        nulls > 0 && nulls < v.key.len()
    }) {
        return Err(Error::Row {
            row: row + 1,
            reason: "a key is partly empty; only the unknown row's is all NULL".into(),
        });
    }
    let eff = match mode {
        Mode::Changes => effective_times(spec, &schema, &pieces, n, batch)?,
        Mode::Infer => vec![crate::INFERRED_FROM; n],
    };
    let delete = match &spec.deletes {
        Deletes::Events { column: c, values } => {
            let text = cast(&whole_column(&schema, &pieces, c)?, &DataType::Utf8).map_err(|e| Error::data(c, e))?;
            let text = text.as_string::<i32>();
            (0..n).map(|r| text.is_valid(r) && values.iter().any(|v| v == text.value(r))).collect()
        }
        _ => vec![false; n],
    };

    // Hash on every core, each run into its own part of the vectors.
    let (full_n, t1_n) = match views.first() {
        Some(v) => (if v.full.len() != v.cmp.len() { n } else { 0 }, if v.t1.is_empty() { 0 } else { n }),
        None => (0, 0),
    };
    let (mut key, mut cmp, mut full_hash, mut t1) = (vec![0; n], vec![0; n], vec![0; full_n], vec![0; t1_n]);
    let runs = core_runs(n);
    let parts = runs
        .iter()
        .cloned()
        .zip(split_runs(&mut key, &runs))
        .zip(split_runs(&mut cmp, &runs))
        .zip(split_runs(&mut full_hash, &runs))
        .zip(split_runs(&mut t1, &runs))
        .collect();
    on_threads(parts, |((((rows, key), cmp), full), t1)| {
        let mut buf = Vec::with_capacity(256);
        for (j, (p, r)) in located(&starts, rows).enumerate() {
            let v = &views[p];
            encode_key(&v.key, r, &mut buf);
            key[j] = hash128(&buf);
            cmp[j] = v.cmp.hash(r, &mut buf);
            if let Some(slot) = full.get_mut(j) {
                *slot = v.full.hash(r, &mut buf);
            }
            if let Some(slot) = t1.get_mut(j) {
                *slot = v.t1.fingerprint(r, &mut buf);
            }
        }
    })?;
    let unknown_row = (mode == Mode::Infer).then(|| every_row().position(|(v, r)| v.key.iter().all(|c| c.is_null(r))));
    drop(views);
    Ok(Incoming {
        unknown_key: unknown_row.flatten().map(|r| key[r]),
        pieces,
        starts,
        schema,
        key,
        cmp,
        full: full_hash,
        t1,
        eff,
        delete,
    })
}

/// Each row's effective time in UTC microseconds.
fn effective_times(spec: &Spec, schema: &Schema, pieces: &[RecordBatch], n: usize, batch: &Batch) -> Result<Vec<i64>> {
    let Some(name) = &spec.effective_from else { return Ok(vec![batch_at(batch); n]) };
    let col = &whole_column(schema, pieces, name)?;
    let bad = |row: usize, reason: String| Error::Row { row: row + 1, reason: format!("column {name:?}: {reason}") };
    let micros: ArrayRef = match col.data_type() {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => {
            cast(col, &ts_type()).map_err(|e| bad(0, e.to_string()))?
        }
        DataType::Utf8 => {
            let text = col.as_string::<i32>();
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                if text.is_null(r) {
                    return Err(bad(r, "the effective date is empty".into()));
                }
                out.push(
                    parse_time(text.value(r))
                        .ok_or_else(|| bad(r, format!("{:?} is not a date or an RFC 3339 timestamp", text.value(r))))?,
                );
            }
            Arc::new(TimestampMicrosecondArray::from(out))
        }
        other => return Err(bad(0, format!("type {other} is not a date or timestamp"))),
    };
    let micros = micros.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    if let Some(r) = (0..n).find(|&r| micros.is_null(r)) {
        return Err(bad(r, "the effective date is empty".into()));
    }
    Ok(micros.values().to_vec())
}

fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros());
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc).timestamp_micros())
}

/// The rows of `subset` sorted by (key, effective time, ordering columns,
/// position).
fn sort_incoming(spec: &Spec, inc: &Incoming, subset: Vec<u32>) -> Result<Vec<u32>> {
    let rows = if spec.order_by.is_empty() {
        None
    } else {
        let cols: Vec<ArrayRef> = spec.order_by.iter().map(|c| inc.column(c)).collect::<Result<Vec<_>>>()?;
        let fields = cols.iter().map(|c| SortField::new(c.data_type().clone())).collect();
        let converter = RowConverter::new(fields).map_err(|e| Error::data("ordering columns", e))?;
        Some(converter.convert_columns(&cols).map_err(|e| Error::data("ordering columns", e))?)
    };
    // Sorted as (key, time, row) in place rather than through the row
    // index: a million rows sort without a cache miss per comparison.
    let mut keyed: Vec<(Hash128, i64, u32)> =
        subset.into_iter().map(|i| (inc.key[i as usize], inc.eff[i as usize], i)).collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| match &rows {
                Some(rows) => rows.row(a.2 as usize).cmp(&rows.row(b.2 as usize)),
                None => std::cmp::Ordering::Equal,
            })
            .then(a.2.cmp(&b.2))
    });
    let order: Vec<u32> = keyed.into_iter().map(|k| k.2).collect();
    // Rows of one key that tie on time and order must be exact duplicates.
    let tie = |a: usize, b: usize| {
        inc.key[a] == inc.key[b]
            && inc.eff[a] == inc.eff[b]
            && rows.as_ref().is_none_or(|rows| rows.row(a) == rows.row(b))
    };
    for w in order.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if tie(a, b) && (inc.full(a) != inc.full(b) || inc.t1(a) != inc.t1(b) || inc.delete[a] != inc.delete[b]) {
            return Err(Error::Row {
                row: b + 1,
                reason: format!(
                    "conflicts with row {} for the same key at the same effective time and order{}; \
                     declare an ordering or tie-break column that tells them apart",
                    a + 1,
                    if spec.order_by.is_empty() { String::new() } else { format!(" ({})", spec.order_by.join(", ")) }
                ),
            });
        }
    }
    Ok(order)
}

/// Splits the sorted rows into one run per key, dropping exact duplicates:
/// `order` keeps the rows that count and each range indexes into it.
fn group(inc: &Incoming, order: &mut Vec<u32>, metrics: &mut Metrics) -> Vec<std::ops::Range<usize>> {
    let mut kept: Vec<u32> = Vec::with_capacity(order.len());
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for &i in order.iter() {
        let r = i as usize;
        match kept.last().map(|&p| p as usize) {
            Some(p) if inc.key[p] == inc.key[r] => {
                if inc.eff[p] == inc.eff[r]
                    && inc.full(p) == inc.full(r)
                    && inc.t1(p) == inc.t1(r)
                    && inc.delete[p] == inc.delete[r]
                {
                    metrics.duplicates += 1;
                    continue;
                }
                kept.push(i);
                if let Some(g) = groups.last_mut() {
                    g.end = kept.len();
                }
            }
            _ => {
                kept.push(i);
                groups.push(kept.len() - 1..kept.len());
            }
        }
    }
    *order = kept;
    groups
}

fn existing_ver(ex: &Existing, r: u32) -> Ver {
    let i = r as usize;
    Ver {
        from: ex.from[i],
        to: ex.to[i],
        deleted: ex.deleted[i],
        tomb: ex.deleted[i] && ex.to[i] == OPEN_END,
        inferred: ex.inferred[i],
        content: Content::Existing(r),
        origin: Some(r),
        dirty: false,
    }
}

fn ver_cmp(v: &Ver, ex: &Existing, inc: &Incoming) -> Hash128 {
    match v.content {
        Content::Existing(r) | Content::Updated { base: r, .. } => ex.cmp[r as usize],
        Content::Incoming(i) => inc.cmp[i as usize],
    }
}

fn ver_t1(v: &Ver, ex: &Existing, inc: &Incoming) -> Hash128 {
    match v.content {
        Content::Existing(r) => ex.t1(r as usize),
        Content::Updated { from: i, .. } | Content::Incoming(i) => inc.t1(i as usize),
    }
}

enum Pos {
    Empty,
    Inside(usize),
    Before,
    /// After version `q`, in a gap left by a delete or at the end.
    Gap(usize),
}

fn find(versions: &[Ver], t: i64) -> Pos {
    if versions.is_empty() {
        return Pos::Empty;
    }
    if t < versions[0].from {
        return Pos::Before;
    }
    let q = versions.partition_point(|v| v.from <= t) - 1;
    if t < versions[q].to { Pos::Inside(q) } else { Pos::Gap(q) }
}

fn new_ver(from: i64, to: i64, i: u32) -> Ver {
    Ver {
        from,
        to,
        deleted: false,
        tomb: false,
        inferred: false,
        content: Content::Incoming(i),
        origin: None,
        dirty: true,
    }
}

/// Applies source row `i` to one key's timeline.
fn apply(spec: &Spec, inc: &Incoming, ex: &Existing, versions: &mut Vec<Ver>, i: u32, m: &mut Metrics) {
    let r = i as usize;
    let t = inc.eff[r];
    if inc.delete[r] {
        delete_at(spec, versions, t, m);
        return;
    }
    match find(versions, t) {
        Pos::Empty => {
            versions.push(new_ver(spec.history_from.map_or(t, |h| h.min(t)), OPEN_END, i));
            m.inserted += 1;
        }
        Pos::Before => {
            let to = versions[0].from;
            versions.insert(0, new_ver(t, to, i));
            m.inserted += 1;
            m.late_split += 1;
        }
        Pos::Gap(q) => {
            let to = versions.get(q + 1).map_or(OPEN_END, |v| v.from);
            if versions[q].deleted {
                m.resurrected += 1;
            }
            versions.insert(q + 1, new_ver(t, to, i));
            m.inserted += 1;
        }
        Pos::Inside(p) => {
            let v = versions[p];
            if !v.tomb && !v.inferred && ver_cmp(&v, ex, inc) == inc.cmp[r] {
                let fills_new = inc.full(r) != inc.cmp[r];
                if ver_t1(&v, ex, inc) != inc.t1(r) || fills_new {
                    versions[p].content = match v.content {
                        Content::Incoming(_) => Content::Incoming(i),
                        Content::Existing(base) | Content::Updated { base, .. } => Content::Updated { base, from: i },
                    };
                    versions[p].dirty = true;
                    m.type1_updated += 1;
                } else {
                    m.unchanged += 1;
                }
            } else if t == v.from || v.inferred {
                // A correction at the version's own start, a tombstone
                // revived at its instant, or the real row of an inferred member.
                if v.tomb {
                    m.resurrected += 1;
                } else {
                    m.type1_updated += 1;
                }
                let deleted = v.deleted && !v.tomb;
                versions[p] =
                    Ver { content: Content::Incoming(i), deleted, tomb: false, inferred: false, dirty: true, ..v };
            } else {
                // The new version ends where the split one ended, delete included.
                versions[p].to = t;
                versions[p].deleted = false;
                versions[p].dirty = true;
                versions.insert(p + 1, Ver { deleted: v.deleted && !v.tomb, ..new_ver(t, v.to, i) });
                m.inserted += 1;
                if v.tomb {
                    m.resurrected += 1;
                } else if v.to == OPEN_END {
                    m.closed += 1;
                } else {
                    m.late_split += 1;
                }
            }
        }
    }
}

/// Deletes the key at `t`: closes (or tombstones) the version holding `t`.
fn delete_at(spec: &Spec, versions: &mut Vec<Ver>, t: i64, m: &mut Metrics) {
    let Pos::Inside(p) = find(versions, t) else {
        m.unchanged += 1;
        return;
    };
    let v = versions[p];
    if v.tomb || v.deleted {
        m.unchanged += 1;
        return;
    }
    m.deleted += 1;
    if spec.deletes == Deletes::NewRecord {
        if t == v.from {
            versions[p] = Ver { deleted: true, tomb: true, dirty: true, ..v };
        } else {
            versions[p].to = t;
            versions[p].dirty = true;
            let tomb = Ver { from: t, deleted: true, tomb: true, inferred: false, origin: None, dirty: true, ..v };
            versions.insert(p + 1, tomb);
            m.inserted += 1;
        }
    } else if t == v.from {
        // A version that would last no time at all is dropped.
        versions.remove(p);
    } else {
        versions[p].to = t;
        versions[p].deleted = true;
        versions[p].dirty = true;
    }
}

/// Touched files read (on their own tasks) while the one before them is
/// rewritten.
const READ_AHEAD_FILES: usize = 1;

/// Output rows built into one batch for the writers.
const BUILD_ROWS: usize = 64 * 1024;

/// What to read of a touched file.
enum FileRead {
    /// Already read whole (a history file the plan loaded).
    Held(RecordBatch),
    Whole,
    /// The slim columns of every row, the others of these rows only.
    Slim(Vec<u32>),
    /// Every column of these rows only (a file kept in place).
    Rows(Vec<u32>),
}

/// A touched file as read for its rewrite.
struct FileData {
    /// The rows `slim_rows` of the file (`None`: every row): their
    /// `recorded_at`, `batch_id` and the business columns a matched source
    /// row cannot supply (or every column).
    slim: RecordBatch,
    slim_rows: Option<Vec<u32>>,
    /// The other business columns, of the rows `wide_rows` of the file
    /// (`None`: of every row).
    wide: RecordBatch,
    wide_rows: Option<Vec<u32>>,
}

impl FileData {
    fn whole(batch: RecordBatch) -> Self {
        FileData { slim: batch.clone(), wide: batch, slim_rows: None, wide_rows: None }
    }
}

/// Business columns whose value in a current row equals that of the source
/// row that matched it unchanged: the key and the compared tracked and
/// type-1 columns, whose hashes matched, where the hash encoding is exact
/// for the type. Floats are normalised and nanoseconds truncated before
/// hashing, so those columns are always read from the file.
fn matched_from_source(spec: &Spec, layout: &Layout) -> HashSet<String> {
    let exact = |t: &DataType| match t {
        DataType::Timestamp(unit, _) => *unit != TimeUnit::Nanosecond,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => false,
        other => Col::new("", &new_null_array(other, 0)).is_ok(),
    };
    layout
        .business
        .iter()
        .filter(|f| layout.existed.contains(f.name()) && exact(f.data_type()))
        .map(|f| f.name())
        .filter(|n| spec.key.contains(n) || layout.cmp_cols.contains(n) || layout.t1_cols.contains(n))
        .cloned()
        .collect()
}

/// The rows of their file that `rows` take values from, ascending, each once.
fn rows_read<'a>(rows: impl Iterator<Item = &'a OutRow>, ex: &Existing) -> Vec<u32> {
    let mut read: Vec<u32> = rows
        .filter_map(|o| match o.content {
            Content::Existing(r) | Content::Updated { base: r, .. } => Some(ex.row_in_file[r as usize]),
            Content::Incoming(_) => None,
        })
        .collect();
    read.sort_unstable();
    read.dedup();
    read
}

/// The rows in the order the writers take them: the current partition's
/// first, then the history's, each in the order given.
fn current_first(rows: Vec<OutRow>) -> Vec<OutRow> {
    let (mut current, closed): (Vec<OutRow>, Vec<OutRow>) = rows.into_iter().partition(|r| r.to == OPEN_END);
    current.extend(closed);
    current
}

/// One row to write.
#[derive(Clone, Copy, Debug)]
struct OutRow {
    key: Hash128,
    sk: i64,
    from: i64,
    to: i64,
    deleted: bool,
    inferred: bool,
    content: Content,
}

impl OutRow {
    fn copy(ex: &Existing, r: u32) -> Self {
        let i = r as usize;
        OutRow {
            key: ex.key[i],
            sk: ex.sk[i],
            from: ex.from[i],
            to: ex.to[i],
            deleted: ex.deleted[i],
            inferred: ex.inferred[i],
            content: Content::Existing(r),
        }
    }

    /// The source row that left this existing row unchanged, if any.
    fn matched(&self, partner: &[u32]) -> Option<usize> {
        match self.content {
            Content::Existing(r) => partner.get(r as usize).filter(|&&i| i != u32::MAX).map(|&i| i as usize),
            _ => None,
        }
    }

    /// The file whose rows this row's values come from.
    fn file(&self, ex: &Existing) -> Option<u32> {
        match self.content {
            Content::Existing(r) | Content::Updated { base: r, .. } => Some(ex.file[r as usize]),
            Content::Incoming(_) => None,
        }
    }
}

/// Everything a merge will write.
#[derive(Default)]
struct Plan {
    rows: Vec<OutRow>,
    /// Existing rows that are rewritten or dropped.
    replaced: Vec<u32>,
    changed: Vec<ChangedInterval>,
    /// The key hash of the all-NULL key, whose one version is the unknown
    /// row (inferring only).
    unknown_key: Option<Hash128>,
    /// The surrogate keys this merge gives out, with the version (key hash,
    /// start) each identifies.
    new_sks: HashMap<i64, (Hash128, i64), Prehashed>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.replaced.is_empty()
    }

    /// Appends `later`, the plan of keys after these: a surrogate key both
    /// give out to different versions is a collision.
    fn absorb(&mut self, later: Plan) -> Result<()> {
        if self.is_empty() && self.new_sks.is_empty() {
            *self = later;
            return Ok(());
        }
        for (sk, version) in later.new_sks {
            self.give_sk(sk, version)?;
        }
        self.rows.extend(later.rows);
        self.replaced.extend(later.replaced);
        self.changed.extend(later.changed);
        Ok(())
    }

    /// Records that surrogate key `sk` identifies `version` (key hash,
    /// start); one already given to another version is a collision.
    fn give_sk(&mut self, sk: i64, version: (Hash128, i64)) -> Result<()> {
        match self.new_sks.insert(sk, version) {
            Some(other) if other != version => Err(collision(sk, version.0, version.1)),
            _ => Ok(()),
        }
    }

    fn touched_files(&self, ex: &Existing) -> Vec<u32> {
        let mut files: Vec<u32> = self.replaced.iter().map(|&r| ex.file[r as usize]).collect();
        files.extend(self.rows.iter().filter_map(|r| r.file(ex)));
        files.sort_unstable();
        files.dedup();
        files
    }

    /// Records one key's final timeline, after checking the invariants.
    /// `initial` are the existing rows the timeline started from.
    fn settle(&mut self, key: Hash128, versions: &[Ver], initial: &[u32], ex: &Existing) -> Result<()> {
        check_timeline(key, versions)?;
        // Existing rows that changed, or that no version holds any more.
        for &o in initial {
            if !versions.iter().any(|v| v.origin == Some(o) && !v.dirty) {
                self.replaced.push(o);
            }
        }
        for v in versions.iter().filter(|v| v.dirty) {
            let sk = match v.origin {
                Some(o) => ex.sk[o as usize],
                None => {
                    let sk = if self.unknown_key == Some(key) { crate::UNKNOWN_SK } else { surrogate_key(key, v.from) };
                    self.give_sk(sk, (key, v.from))?;
                    sk
                }
            };
            self.rows.push(OutRow {
                key,
                sk,
                from: v.from,
                to: v.to,
                deleted: v.deleted,
                inferred: v.inferred,
                content: v.content,
            });
            // A version updated in place over the same interval (type-1
            // columns, new columns) re-keys no fact; completing an inferred
            // version does change what facts point at.
            let same = v.origin.is_some_and(|o| {
                let o = o as usize;
                ex.from[o] == v.from && ex.to[o] == v.to && ex.inferred[o] == v.inferred
            });
            if same {
                continue;
            }
            self.changed.push(ChangedInterval {
                key_hash: key,
                surrogate_key: sk,
                valid_from: micros_to_utc(v.from),
                valid_to: micros_to_utc(v.to),
            });
        }
        Ok(())
    }
}

fn collision(sk: i64, key: Hash128, from: i64) -> Error {
    Error::SurrogateKeyCollision {
        surrogate_key: sk,
        key_hash: key_hash_hex(key),
        valid_from: micros_to_utc(from).to_rfc3339(),
    }
}

/// Checks the surrogate keys a merge gives out against the stored versions
/// `(surrogate key, key hash, start)`: a stored version may hold one only
/// when it is the same version (same key and start), as when a dropped
/// version comes back; any other holder is a collision.
fn check_new_sks(
    new_sks: &HashMap<i64, (Hash128, i64), Prehashed>,
    stored: impl Iterator<Item = (i64, Hash128, i64)>,
) -> Result<()> {
    for (sk, key, from) in stored {
        if let Some(&(new_key, new_from)) = new_sks.get(&sk)
            && (new_key, new_from) != (key, from)
        {
            return Err(collision(sk, new_key, new_from));
        }
    }
    Ok(())
}

/// Whether source row `i` leaves current row `c` exactly as it is: same
/// tracked and type-1 values, nothing new to fill in, a start at or after
/// the version's, and a plain live version (no tombstone, nothing inferred).
fn unchanged(inc: &Incoming, ex: &Existing, i: usize, c: usize) -> bool {
    !inc.delete[i]
        && inc.eff[i] >= ex.from[c]
        && !ex.deleted[c]
        && !ex.inferred[c]
        && inc.cmp[i] == ex.cmp[c]
        && inc.full(i) == inc.cmp[i]
        && inc.t1(i) == ex.t1(c)
}

/// The SCD2 invariants on one key: every interval is non-empty, none
/// overlap, and at most one is open.
fn check_timeline(key: Hash128, versions: &[Ver]) -> Result<()> {
    let broken = |reason: String| Err(Error::Invariant { key_hash: key_hash_hex(key), reason });
    let mut current = 0;
    for (i, v) in versions.iter().enumerate() {
        if v.from >= v.to {
            return broken(format!(
                "valid_from {} is not before valid_to {}",
                micros_to_utc(v.from),
                micros_to_utc(v.to)
            ));
        }
        if let Some(next) = versions.get(i + 1)
            && v.to > next.from
        {
            return broken(format!(
                "versions starting {} and {} overlap",
                micros_to_utc(v.from),
                micros_to_utc(next.from)
            ));
        }
        if v.to == OPEN_END {
            current += 1;
        }
    }
    if current > 1 {
        return broken(format!("{current} current versions"));
    }
    Ok(())
}

pub(crate) fn micros_to_utc(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Builds output batches from planned rows.
struct Builder<'a> {
    layout: &'a Layout,
    inc: &'a Incoming,
    ex: &'a Existing,
    schema: &'a SchemaRef,
    batch: &'a Batch,
    /// The source row that left each current row unchanged (`u32::MAX`: none).
    partner: &'a [u32],
    /// Columns a matched row takes from its source row.
    matched: &'a HashSet<String>,
}

impl Builder<'_> {
    fn build(&self, rows: &[OutRow], file: Option<&FileData>) -> Result<RecordBatch> {
        let n = rows.len();
        let ex_row = |r: u32| self.ex.row_in_file[r as usize] as usize;
        // Where row `r` of the file is in a batch read of the rows `read`.
        let at = |read: Option<&[u32]>, r: u32| -> Result<usize> {
            let row = ex_row(r);
            match read {
                None => Ok(row),
                Some(w) => w
                    .binary_search(&(row as u32))
                    .map_err(|_| Error::data("merge", format!("row {row} of a rewritten file was not read"))),
            }
        };
        let (slim_rows, wide_rows) =
            (file.and_then(|d| d.slim_rows.as_deref()), file.and_then(|d| d.wide_rows.as_deref()));
        let slim_row = |r: u32| at(slim_rows, r);
        let wide_row = |r: u32| at(wide_rows, r);
        // (array, row) per output row: the batch's pieces come first, then
        // the file's slim columns, then its wide ones. `fresh`: the column takes an
        // updated row's source value (type-1 and new columns); `wide`: the
        // column is one a matched row takes from its source row.
        // A loop into a vector of the right size: collecting the results
        // through an iterator of `Result`s grew the vector a row at a time.
        let (slim_at, wide_at) = (self.inc.pieces.len(), self.inc.pieces.len() + 1);
        let refs = |fresh: bool, wide: bool| -> Result<Vec<(usize, usize)>> {
            let mut out = Vec::with_capacity(rows.len());
            for o in rows {
                out.push(match o.content {
                    Content::Incoming(i) => self.inc.at(i as usize),
                    Content::Updated { from: i, .. } if fresh => self.inc.at(i as usize),
                    Content::Existing(r) | Content::Updated { base: r, .. } if !wide => (slim_at, slim_row(r)?),
                    Content::Existing(r) | Content::Updated { base: r, .. } => match o.matched(self.partner) {
                        Some(i) if wide_rows.is_some() => self.inc.at(i),
                        _ => (wide_at, wide_row(r)?),
                    },
                });
            }
            Ok(out)
        };
        let mut memo: [Option<Vec<(usize, usize)>>; 4] = Default::default();
        let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let (slim, wide) = file.map_or((&empty, &empty), |d| (&d.slim, &d.wide));
        let from_file = |b: &RecordBatch, name: &str, data_type: &DataType| -> Result<ArrayRef> {
            match b.column_by_name(name) {
                Some(c) if c.data_type() == data_type => Ok(Arc::clone(c)),
                Some(c) => cast(c, data_type).map_err(|e| Error::data(name, e)),
                None => Ok(new_null_array(data_type, b.num_rows())),
            }
        };
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        cols.push(Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.sk))));
        for f in &self.layout.business {
            let (name, data_type) = (f.name(), f.data_type());
            let fresh = self.layout.type1.contains(name) || !self.layout.existed.contains(name);
            let is_wide = self.matched.contains(name);
            let slot = &mut memo[usize::from(fresh) * 2 + usize::from(is_wide)];
            if slot.is_none() {
                *slot = Some(refs(fresh, is_wide)?);
            }
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(wide_at + 1);
            for piece in &self.inc.pieces {
                arrays.push(Arc::clone(column(piece, name)?));
            }
            arrays.extend([from_file(slim, name, data_type)?, from_file(wide, name, data_type)?]);
            let arrays: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            cols.push(interleave(&arrays, slot.as_deref().unwrap_or_default()).map_err(|e| Error::data(name, e))?);
        }
        let business = RecordBatch::try_new(Arc::new(Schema::new(self.layout.business.clone())), cols[1..].to_vec())
            .map_err(|e| Error::data("business columns", e))?;
        let mut key_hash = BinaryBuilder::with_capacity(n, n * 16);
        let mut attr_hash = BinaryBuilder::with_capacity(n, n * 16);
        let tracked = attr_cols(&business, &self.layout.tracked, self.layout.encoding)?;
        let mut buf = Vec::new();
        for (row, o) in rows.iter().enumerate() {
            key_hash.append_value(o.key.to_le_bytes());
            // An updated row mixes two sources: its hash comes from what is written.
            let attr = match o.content {
                Content::Existing(r) => self.ex.stored_attr(r as usize),
                Content::Incoming(i) => self.inc.full(i as usize),
                Content::Updated { .. } => tracked.hash(row, &mut buf),
            };
            attr_hash.append_value(attr.to_le_bytes());
        }
        cols.push(Arc::new(key_hash.finish()));
        cols.push(Arc::new(attr_hash.finish()));
        let ts = |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) };
        cols.push(ts(rows.iter().map(|o| o.from).collect()));
        cols.push(ts(rows.iter().map(|o| o.to).collect()));
        cols.push(Arc::new(BooleanArray::from(rows.iter().map(|o| o.deleted).collect::<Vec<_>>())));
        cols.push(Arc::new(BooleanArray::from(rows.iter().map(|o| o.inferred).collect::<Vec<_>>())));
        // recorded_at and batch_id: kept for existing rows, this batch's for new ones.
        let mut meta_refs: Vec<(usize, usize)> = Vec::with_capacity(n);
        for o in rows {
            meta_refs.push(match o.content {
                Content::Existing(r) | Content::Updated { base: r, .. } => (1, slim_row(r)?),
                Content::Incoming(_) => (0, 0),
            });
        }
        let now: ArrayRef = ts(vec![batch_at(self.batch)]);
        let id: ArrayRef = Arc::new(StringArray::from(vec![self.batch.id.clone()]));
        for (name, own) in [(columns::RECORDED_AT, now), (columns::BATCH_ID, id)] {
            let kept = from_file(slim, name, own.data_type())?;
            cols.push(interleave(&[own.as_ref(), kept.as_ref()], &meta_refs).map_err(|e| Error::data(name, e))?);
        }
        cols.push(Arc::new(BooleanArray::from(rows.iter().map(|o| o.to == OPEN_END).collect::<Vec<_>>())));
        RecordBatch::try_new(Arc::clone(self.schema), cols).map_err(|e| Error::data("output rows", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `result` is a collision of surrogate key `sk`, reported for `key`.
    fn expect_collision(result: Result<()>, sk: i64, key: Hash128) {
        match result {
            Err(Error::SurrogateKeyCollision { surrogate_key, key_hash, .. }) => {
                assert_eq!(surrogate_key, sk);
                assert_eq!(key_hash, key_hash_hex(key));
            }
            other => panic!("expected a collision, got {other:?}"),
        }
    }

    #[test]
    fn a_new_surrogate_key_held_by_another_stored_version_is_a_collision() {
        let mut new_sks: HashMap<i64, (Hash128, i64), Prehashed> = HashMap::default();
        new_sks.insert(42, (1, 10));
        // The same version (same key and start), as when a dropped version
        // comes back, and unrelated keys are fine.
        assert!(check_new_sks(&new_sks, [(42, 1, 10), (7, 2, 10)].into_iter()).is_ok());
        for other in [(42, 2, 10), (42, 1, 11)] {
            expect_collision(check_new_sks(&new_sks, [other].into_iter()), 42, 1);
        }
    }

    #[test]
    fn plans_of_later_keys_join_in_order_and_a_surrogate_key_given_to_two_versions_is_a_collision() {
        let row = |key: Hash128, sk: i64| OutRow {
            key,
            sk,
            from: 0,
            to: OPEN_END,
            deleted: false,
            inferred: false,
            content: Content::Incoming(key as u32),
        };
        let plan = |key: Hash128, sk: i64| {
            let mut p = Plan::default();
            p.rows.push(row(key, sk));
            p.replaced.push(key as u32);
            p.new_sks.insert(sk, (key, 0));
            p
        };
        let mut joined = Plan::default();
        for part in [plan(1, 10), plan(2, 20), plan(3, 30)] {
            joined.absorb(part).expect("no collision");
        }
        assert_eq!(joined.rows.iter().map(|r| r.key).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(joined.replaced, [1, 2, 3]);
        assert_eq!(joined.new_sks.len(), 3);
        // Surrogate key 20 again, for another key's version.
        expect_collision(joined.absorb(plan(4, 20)), 20, 4);
    }

    #[test]
    fn a_row_of_a_batch_read_in_pieces_is_found_in_its_piece() {
        // Pieces of 3, 4 and 2 rows.
        let starts = [0, 3, 7];
        assert_eq!(locate(&starts, 0), (0, 0));
        assert_eq!(locate(&starts, 2), (0, 2));
        assert_eq!(locate(&starts, 3), (1, 0));
        assert_eq!(locate(&starts, 6), (1, 3));
        assert_eq!(locate(&starts, 8), (2, 1));
        let every: Vec<(usize, usize)> = (0..9).map(|i| locate(&starts, i)).collect();
        assert_eq!(located(&starts, 0..9).collect::<Vec<_>>(), every);
        assert_eq!(located(&starts, 2..8).collect::<Vec<_>>(), every[2..8]);
        assert_eq!(located(&[], 0..0).count(), 0);
    }

    #[test]
    fn runs_of_rows_fill_their_own_parts_in_order_and_a_vector_not_needed_gives_empty_parts() {
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
