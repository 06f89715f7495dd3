//! Point-in-time keys: a sort-merge interval join of facts `(key, date)`
//! against dimension versions `(key, valid_from, valid_to)`.
//!
//! Both sides are sorted by key (the versions also by `valid_from`, the
//! facts by date) and walked once together: each fact meets only the
//! versions of its own key. There are no per-row hash lookups and no nested
//! loops over the tables.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::Hasher;

use deltalake::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use merge::UNKNOWN_SK;
use merge::hash::Hash128;
use storage::{TableName, Warehouse};

use crate::{Error, Result};

/// The hash that orders keys in the join ([`ranked`]).
fn key_hash(key: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(key.as_bytes());
    h.finish()
}

/// The rows of `keys` that are not NULL, with their key hashes, sorted by
/// key rank (the hash, then the key) and then by `then`. Only the grouping
/// by key matters to the join; both of its sides are sorted this way.
fn ranked(keys: &StringArray, hash: fn(&str) -> u64, then: impl Fn(usize, usize) -> Ordering) -> Vec<(u64, u32)> {
    let mut rows: Vec<(u64, u32)> =
        (0..keys.len()).filter(|&i| keys.is_valid(i)).map(|i| (hash(keys.value(i)), i as u32)).collect();
    // Sorted by the hash alone, rows of one key come together without a
    // string comparison; two keys sharing a hash would interleave, and are
    // then put in order by the keys themselves.
    rows.sort_unstable_by(|&(ha, a), &(hb, b)| ha.cmp(&hb).then_with(|| then(a as usize, b as usize)));
    let shared =
        rows.windows(2).any(|w| w[0].0 == w[1].0 && keys.value(w[0].1 as usize) != keys.value(w[1].1 as usize));
    if shared {
        rows.sort_unstable_by(|&(ha, a), &(hb, b)| {
            let (a, b) = (a as usize, b as usize);
            ha.cmp(&hb).then_with(|| keys.value(a).cmp(keys.value(b))).then_with(|| then(a, b))
        });
    }
    rows
}

/// Facts `(key, date)` in the join's order: the rows of `keys` that are
/// not NULL, by key rank and date ([`ranked`]). Sorting is most of a join's
/// cost, and one order serves every dimension the same keys resolve
/// against, before and after an inference.
pub(crate) struct FactOrder {
    rows: Vec<(u64, u32)>,
    hasher: fn(&str) -> u64,
}

impl FactOrder {
    pub(crate) fn new(keys: &StringArray, dates: &[Option<i64>]) -> Self {
        Self::hashed_by(keys, dates, key_hash)
    }

    fn hashed_by(keys: &StringArray, dates: &[Option<i64>], hasher: fn(&str) -> u64) -> Self {
        Self { rows: ranked(keys, hasher, |a, b| dates[a].cmp(&dates[b])), hasher }
    }
}

/// Intervals of keys, sorted by key rank ([`ranked`]) and `from`.
pub(crate) struct Intervals {
    keys: StringArray,
    pub(crate) from: Vec<i64>,
    pub(crate) to: Vec<i64>,
    /// Rows with a non-NULL key, in key rank and `from` order.
    order: Vec<u32>,
    /// The key hash of each row of `order`.
    hash: Vec<u64>,
    hasher: fn(&str) -> u64,
}

impl Intervals {
    pub(crate) fn new(keys: StringArray, from: Vec<i64>, to: Vec<i64>) -> Self {
        Self::hashed_by(keys, from, to, key_hash)
    }

    fn hashed_by(keys: StringArray, from: Vec<i64>, to: Vec<i64>, hasher: fn(&str) -> u64) -> Self {
        let (hash, order) = ranked(&keys, hasher, |a, b| from[a].cmp(&from[b])).into_iter().unzip();
        Self { keys, from, to, order, hash, hasher }
    }

    /// Calls `f(fact, versions)` for every fact row whose key is not NULL,
    /// with the rows of the intervals of its key in `from` order (empty when
    /// the key has none). Facts are visited in key rank and date order.
    pub(crate) fn sweep(&self, keys: &StringArray, dates: &[Option<i64>], f: impl FnMut(usize, &[u32])) {
        self.sweep_in(keys, &FactOrder::hashed_by(keys, dates, self.hasher), f);
    }

    /// [`Self::sweep`] over facts already in the join's order.
    fn sweep_in(&self, keys: &StringArray, facts: &FactOrder, mut f: impl FnMut(usize, &[u32])) {
        let facts = &facts.rows;
        let at = |p: usize| (self.hash[p], self.keys.value(self.order[p] as usize));
        let rows = &self.order;
        let mut start = 0;
        let mut end = 0;
        let mut block: Option<(u64, &str)> = None;
        for &(h, i) in facts {
            let key = (h, keys.value(i as usize));
            if block != Some(key) {
                // Advance to the first interval whose key is not below this one.
                start = end.max(start);
                while start < rows.len() && at(start) < key {
                    start += 1;
                }
                end = start;
                while end < rows.len() && at(end) == key {
                    end += 1;
                }
                block = Some(key);
            }
            f(i as usize, &rows[start..end]);
        }
    }
}

/// Where a fact's key and date land in a dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// The version valid on the date.
    Version { sk: i64, inferred: bool },
    /// The key is known, but no version covers the date.
    Outside,
    /// The dimension has never held the key.
    Absent,
    /// The fact has no key.
    Null,
}

impl Resolved {
    /// The surrogate key to store: the version's, else the unknown row's.
    pub(crate) fn sk(self) -> i64 {
        match self {
            Self::Version { sk, .. } => sk,
            _ => UNKNOWN_SK,
        }
    }

    /// Resolved to a real (not inferred, not unknown) version.
    pub(crate) fn is_real(self) -> bool {
        matches!(self, Self::Version { inferred: false, .. })
    }
}

/// The versions of one SCD2 dimension, as the point-in-time join needs
/// them.
pub(crate) struct DimIndex {
    /// The dimension's Delta version read.
    pub(crate) version: i64,
    intervals: Intervals,
    key_hash: Vec<Hash128>,
    sk: Vec<i64>,
    inferred: Vec<bool>,
    pub(crate) has_unknown_row: bool,
}

fn micros(table: &str, b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let col = b.column_by_name(name).ok_or_else(|| Error::column(table, name, "is missing"))?;
    let col = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(|e| Error::arrow(table, e))?;
    let col = col.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    Ok(col.values().to_vec())
}

impl DimIndex {
    /// Reads the key, surrogate key, interval and inferred flag of every
    /// version of `table`, or `None` when the table does not exist.
    pub(crate) async fn load(warehouse: &Warehouse, table: &str, key: &str, sk: &str) -> Result<Option<Self>> {
        let name = TableName::new(table)?;
        let Some(delta) = warehouse.load(&name).await? else { return Ok(None) };
        let version = delta.version().and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
        let cols = [key, sk, "key_hash", "valid_from", "valid_to", "is_inferred"];
        let batches = warehouse.scan_columns(&name, Some(version), &cols).await?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Ok(Some(Self::empty(version))),
        };
        let one = deltalake::arrow::compute::concat_batches(&schema, &batches).map_err(|e| Error::arrow(table, e))?;
        let keys = cast(one.column(0), &DataType::Utf8).map_err(|e| Error::arrow(table, e))?.as_string::<i32>().clone();
        let sks = cast(one.column(1), &DataType::Int64).map_err(|e| Error::arrow(table, e))?;
        let sks: Vec<i64> = sks.as_primitive::<deltalake::arrow::datatypes::Int64Type>().values().to_vec();
        let hashes =
            one.column(2).as_binary_opt::<i32>().ok_or_else(|| Error::column(table, "key_hash", "is not binary"))?;
        let key_hash: Vec<Hash128> = (0..hashes.len()).map(|i| merge::hash::from_stored(hashes.value(i))).collect();
        let from = micros(table, &one, "valid_from")?;
        let to = micros(table, &one, "valid_to")?;
        let inferred_col =
            one.column(5).as_boolean_opt().ok_or_else(|| Error::column(table, "is_inferred", "is not boolean"))?;
        let inferred: Vec<bool> = (0..inferred_col.len()).map(|i| inferred_col.value(i)).collect();
        let has_unknown_row = sks.contains(&UNKNOWN_SK);
        Ok(Some(Self {
            version,
            intervals: Intervals::new(keys, from, to),
            key_hash,
            sk: sks,
            inferred,
            has_unknown_row,
        }))
    }

    fn empty(version: i64) -> Self {
        Self {
            version,
            intervals: Intervals::new(StringArray::from(Vec::<Option<&str>>::new()), Vec::new(), Vec::new()),
            key_hash: Vec::new(),
            sk: Vec::new(),
            inferred: Vec::new(),
            has_unknown_row: false,
        }
    }

    /// The version of each fact's key valid on its date (UTC microseconds
    /// of the day's start): `valid_from <= date < valid_to`.
    pub(crate) fn resolve(&self, keys: &StringArray, dates: &[Option<i64>]) -> Vec<Resolved> {
        self.resolve_in(keys, dates, &FactOrder::hashed_by(keys, dates, self.intervals.hasher))
    }

    /// [`Self::resolve`], with the facts' order already computed from the
    /// same `keys` and `dates` (an order hashed otherwise than this index
    /// is not used: the facts are ordered again).
    pub(crate) fn resolve_in(&self, keys: &StringArray, dates: &[Option<i64>], order: &FactOrder) -> Vec<Resolved> {
        if !std::ptr::fn_addr_eq(order.hasher, self.intervals.hasher) {
            return self.resolve(keys, dates);
        }
        let mut out = vec![Resolved::Null; keys.len()];
        let iv = &self.intervals;
        self.intervals.sweep_in(keys, order, |fact, versions| {
            out[fact] = if versions.is_empty() {
                Resolved::Absent
            } else {
                match dates[fact] {
                    None => Resolved::Outside,
                    Some(t) => {
                        // The last version starting at or before t.
                        let p = versions.partition_point(|&v| iv.from[v as usize] <= t);
                        match p.checked_sub(1).map(|q| versions[q] as usize) {
                            Some(v) if t < iv.to[v] => Resolved::Version { sk: self.sk[v], inferred: self.inferred[v] },
                            _ => Resolved::Outside,
                        }
                    }
                }
            };
        });
        out
    }

    /// Which facts have their key and date inside one of `changes`
    /// (key hash, valid_from, valid_to): the facts a merge's changed
    /// intervals re-key. Key hashes map to keys through this index.
    pub(crate) fn touched_by(
        &self,
        changes: &[(Hash128, i64, i64)],
        keys: &StringArray,
        dates: &[Option<i64>],
    ) -> Vec<bool> {
        let mut touched = vec![false; keys.len()];
        if changes.is_empty() {
            return touched;
        }
        let mut key_of: HashMap<Hash128, usize> = HashMap::with_capacity(self.key_hash.len());
        for (row, h) in self.key_hash.iter().enumerate() {
            key_of.insert(*h, row);
        }
        let mut ckeys: Vec<Option<&str>> = Vec::with_capacity(changes.len());
        for (h, _, _) in changes {
            ckeys.push(key_of.get(h).map(|&r| self.intervals.keys.value(r)));
        }
        let ckeys = StringArray::from(ckeys);
        let changed =
            Intervals::new(ckeys, changes.iter().map(|c| c.1).collect(), changes.iter().map(|c| c.2).collect());
        changed.sweep(keys, dates, |fact, intervals| {
            // A fact without a date points at the unknown row whatever changes.
            touched[fact] = match dates[fact] {
                None => false,
                Some(t) => intervals.iter().any(|&c| changed.from[c as usize] <= t && t < changed.to[c as usize]),
            };
        });
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fact_meets_the_version_valid_on_its_date() {
        let dim = Intervals::new(
            StringArray::from(vec![Some("B"), Some("A"), Some("A"), None]),
            vec![0, 10, 0, 0],
            vec![merge::OPEN_END, merge::OPEN_END, 10, merge::OPEN_END],
        );
        let index = DimIndex {
            version: 0,
            intervals: dim,
            key_hash: vec![1, 2, 3, 4],
            sk: vec![100, 201, 200, UNKNOWN_SK],
            inferred: vec![false, false, false, true],
            has_unknown_row: true,
        };
        let keys = StringArray::from(vec![Some("A"), Some("A"), Some("C"), None, Some("B"), Some("A")]);
        let dates = vec![Some(10), Some(9), Some(5), Some(5), Some(-1), None];
        let got = index.resolve(&keys, &dates);
        assert_eq!(
            got,
            vec![
                Resolved::Version { sk: 201, inferred: false },
                Resolved::Version { sk: 200, inferred: false },
                Resolved::Absent,
                Resolved::Null,
                Resolved::Outside,
                Resolved::Outside,
            ]
        );
        // A change of A's second version (key hash 2) touches only the
        // fact dated inside it.
        let touched = index.touched_by(&[(2, 10, merge::OPEN_END)], &keys, &dates);
        assert_eq!(touched, vec![true, false, false, false, false, false]);
    }

    #[test]
    fn keys_that_share_a_hash_still_meet_only_their_own_versions() {
        // Every key hashes alike: only the keys themselves keep A and B apart.
        let dim = Intervals::hashed_by(
            StringArray::from(vec![Some("B"), Some("A"), Some("B"), Some("A")]),
            vec![0, 0, 10, 10],
            vec![10, 10, merge::OPEN_END, merge::OPEN_END],
            |_| 7,
        );
        let keys = StringArray::from(vec![Some("A"), Some("B"), Some("A"), Some("B"), Some("C")]);
        let dates = vec![Some(5), Some(5), Some(15), Some(15), Some(5)];
        let mut met: Vec<(usize, Vec<u32>)> = Vec::new();
        dim.sweep(&keys, &dates, |fact, versions| met.push((fact, versions.to_vec())));
        met.sort();
        assert_eq!(met, vec![(0, vec![1, 3]), (1, vec![0, 2]), (2, vec![1, 3]), (3, vec![0, 2]), (4, vec![])]);
    }

    #[test]
    fn a_shared_fact_order_resolves_as_the_index_alone_does() {
        let keys = StringArray::from(vec![Some("A"), Some("B"), Some("A"), None]);
        let dates = vec![Some(5), Some(15), Some(15), Some(5)];
        // One order for every index these keys resolve against; an index
        // that hashes keys otherwise orders the facts itself.
        let order = FactOrder::new(&keys, &dates);
        let hashers: [fn(&str) -> u64; 2] = [key_hash, |_| 7];
        for hasher in hashers {
            let index = DimIndex {
                version: 0,
                intervals: Intervals::hashed_by(
                    StringArray::from(vec![Some("B"), Some("A"), Some("A")]),
                    vec![0, 0, 10],
                    vec![merge::OPEN_END, 10, merge::OPEN_END],
                    hasher,
                ),
                key_hash: vec![1, 2, 3],
                sk: vec![100, 200, 201],
                inferred: vec![false; 3],
                has_unknown_row: false,
            };
            let alone = index.resolve(&keys, &dates);
            assert_eq!(
                alone,
                vec![
                    Resolved::Version { sk: 200, inferred: false },
                    Resolved::Version { sk: 100, inferred: false },
                    Resolved::Version { sk: 201, inferred: false },
                    Resolved::Null,
                ]
            );
            assert_eq!(index.resolve_in(&keys, &dates, &order), alone);
        }
    }
}
