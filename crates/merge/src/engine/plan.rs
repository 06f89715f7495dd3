//! The plan of a merge ([`Plan`]): every row it writes ([`OutRow`]), the
//! existing rows it replaces, the intervals facts must re-key to, and the
//! surrogate keys it gives out.
//!
//! The keys are shared out over the threads: [`Keys::plan`] places the
//! changes of one run of keys on their timelines ([`super::timeline`]) and
//! settles each key's result into a plan of its own; [`Plan::absorb`] joins
//! the runs' plans in key order, so the result is the same as one pass, and
//! a surrogate key two runs give to different versions is a collision. A
//! new surrogate key is then checked against every stored version, the
//! current rows and the history's identities, on every thread
//! ([`check_stored_sks`]).

use std::collections::HashMap;
use std::ops::Range;

use deltalake::arrow::array::RecordBatch;

use super::Mode;
use super::arrays::{binary_col, int_col, ts_col};
use super::existing::Existing;
use super::incoming::Incoming;
use super::index::{KeyMap, Prehashed};
use super::timeline::{Content, Ver, apply, check_timeline, delete_at, existing_ver, micros_to_utc, new_ver};
use crate::hash::{self, Hash128, surrogate_key};
use crate::{ChangedInterval, Error, Metrics, OPEN_END, Result, Spec, columns, key_hash_hex};

/// One row to write.
#[derive(Clone, Copy, Debug)]
pub(super) struct OutRow {
    pub(super) key: Hash128,
    pub(super) sk: i64,
    pub(super) from: i64,
    pub(super) to: i64,
    pub(super) deleted: bool,
    pub(super) inferred: bool,
    pub(super) content: Content,
}

impl OutRow {
    /// Existing row `r`, written again as it is.
    #[inline]
    pub(super) fn copy(ex: &Existing, r: u32) -> Self {
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
    #[inline]
    pub(super) fn matched(&self, partner: &[u32]) -> Option<usize> {
        match self.content {
            Content::Existing(r) => partner.get(r as usize).filter(|&&i| i != u32::MAX).map(|&i| i as usize),
            _ => None,
        }
    }

    /// The file whose rows this row's values come from.
    #[inline]
    pub(super) fn file(&self, ex: &Existing) -> Option<u32> {
        match self.content {
            Content::Existing(r) | Content::Updated { base: r, .. } => Some(ex.file[r as usize]),
            Content::Incoming(_) => None,
        }
    }
}

/// Everything a merge will write.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) rows: Vec<OutRow>,
    /// Existing rows that are rewritten or dropped.
    pub(super) replaced: Vec<u32>,
    pub(super) changed: Vec<ChangedInterval>,
    /// The key hash of the all-NULL key, whose one version is the unknown
    /// row (inferring only).
    pub(super) unknown_key: Option<Hash128>,
    /// The surrogate keys this merge gives out, with the version (key hash,
    /// start) each identifies.
    pub(super) new_sks: HashMap<i64, (Hash128, i64), Prehashed>,
}

impl Plan {
    /// Whether the merge writes nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.replaced.is_empty()
    }

    /// Appends `later`, the plan of keys after these: a surrogate key both
    /// give out to different versions is a collision.
    pub(super) fn absorb(&mut self, later: Plan) -> Result<()> {
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

    /// The files holding a row that is replaced or that a planned row
    /// takes values from, ascending.
    pub(super) fn touched_files(&self, ex: &Existing) -> Vec<u32> {
        let mut files: Vec<u32> = self.replaced.iter().map(|&r| ex.file[r as usize]).collect();
        files.extend(self.rows.iter().filter_map(|r| r.file(ex)));
        files.sort_unstable();
        files.dedup();
        files
    }

    /// Records one key's final timeline, after checking the invariants.
    /// `initial` are the existing rows the timeline started from.
    pub(super) fn settle(&mut self, key: Hash128, versions: &[Ver], initial: &[u32], ex: &Existing) -> Result<()> {
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

/// The error for surrogate key `sk`, wanted by the version of `key` from
/// `from`, being taken.
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
pub(super) fn check_new_sks(
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

/// What the plan of a run of keys reads: the source rows grouped by key
/// and the existing versions each key reaches.
pub(super) struct Keys<'a> {
    pub(super) spec: &'a Spec,
    pub(super) mode: Mode,
    pub(super) inc: &'a Incoming,
    pub(super) ex: &'a Existing,
    /// The source rows to place, in (key, time, order) sequence.
    pub(super) order: &'a [u32],
    /// One range of `order` per key.
    pub(super) groups: &'a [Range<usize>],
    /// The history versions of the keys whose timeline reaches back.
    pub(super) history_of: &'a KeyMap<Vec<u32>>,
    /// The current row of each source row's key (`u32::MAX`: none).
    pub(super) at_current: &'a [u32],
}

impl Keys<'_> {
    /// Places every change of the keys `run` (indexes into `groups`) on
    /// its key's timeline: their plan, their metrics and the current rows
    /// they reach.
    pub(super) fn plan(&self, run: Range<usize>) -> Result<(Plan, Metrics, Vec<u32>)> {
        let (spec, inc, ex) = (self.spec, self.inc, self.ex);
        let mut plan = Plan { unknown_key: inc.unknown_key, ..Plan::default() };
        let mut metrics = Metrics::default();
        // The current rows these keys reach.
        let mut seen: Vec<u32> = Vec::new();
        let mut versions: Vec<Ver> = Vec::new();
        let mut initial: Vec<u32> = Vec::new();
        for g in &self.groups[run] {
            let g = &self.order[g.clone()];
            let key = inc.key[g[0] as usize];
            initial.clear();
            if let Some(rows) = self.history_of.get(&key) {
                initial.extend(rows);
            }
            if let Some(c) = super::current_at(self.at_current, g[0]) {
                seen.push(c);
                initial.push(c);
            }
            versions.clear();
            versions.extend(initial.iter().map(|&r| existing_ver(ex, r)));
            versions.sort_by_key(|v| v.from);
            match self.mode {
                Mode::Changes => {
                    for &i in g {
                        apply(spec, inc, ex, &mut versions, i, &mut metrics);
                    }
                }
                Mode::Infer if versions.is_empty() => {
                    versions.push(Ver { inferred: true, ..new_ver(crate::INFERRED_FROM, OPEN_END, g[0]) });
                    metrics.inferred += 1;
                }
                Mode::Infer => metrics.unchanged += 1,
            }
            plan.settle(key, &versions, &initial, ex)?;
        }
        Ok((plan, metrics, seen))
    }
}

impl Plan {
    /// Deletes, at `t`, every live current row of a full snapshot that no
    /// source row reached (`seen`). Inferred rows (and the unknown row)
    /// stand for keys the source has not sent yet: their absence from a
    /// snapshot is no delete.
    pub(super) fn delete_unseen(
        &mut self,
        spec: &Spec,
        ex: &Existing,
        seen: &[bool],
        t: i64,
        metrics: &mut Metrics,
    ) -> Result<()> {
        let mut versions: Vec<Ver> = Vec::new();
        for (c, seen) in seen.iter().enumerate() {
            if *seen || ex.deleted[c] || ex.inferred[c] {
                continue;
            }
            versions.clear();
            versions.push(existing_ver(ex, c as u32));
            delete_at(spec, &mut versions, t, metrics);
            self.settle(ex.key[c], &versions, &[c as u32], ex)?;
        }
        Ok(())
    }
}

/// No new surrogate key may belong to another version already stored:
/// every stored version is looked at, the first `n_current` rows of `ex`
/// and the history's identities `history_ids`, on every thread.
pub(super) fn check_stored_sks(
    new_sks: &HashMap<i64, (Hash128, i64), Prehashed>,
    ex: &Existing,
    n_current: usize,
    history_ids: &[RecordBatch],
    spec: &Spec,
) -> Result<()> {
    let current = parallel::on_every_core(n_current, |rows| {
        check_new_sks(new_sks, rows.map(|r| (ex.sk[r], ex.key[r], ex.from[r])))
    })?;
    let history = parallel::on_every_core(history_ids.len(), |files| -> Result<()> {
        for b in &history_ids[files] {
            let (keys, from, sks) =
                (binary_col(b, columns::KEY_HASH)?, ts_col(b, columns::VALID_FROM)?, int_col(b, &spec.surrogate_key)?);
            let rows = (0..b.num_rows()).map(|r| (sks.value(r), hash::from_stored(keys.value(r)), from.value(r)));
            check_new_sks(new_sks, rows)?;
        }
        Ok(())
    })?;
    current.into_iter().chain(history).collect::<Result<()>>()
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
}
