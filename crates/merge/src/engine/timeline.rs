//! One key's timeline while a batch is applied: the pure SCD2 logic, with
//! no I/O. A timeline is the key's versions ([`Ver`]) sorted by start,
//! each naming where its values come from ([`Content`]: an existing row,
//! a source row, or an existing row updated from a source row) by row
//! number, so a version is a small `Copy` value and a key's few versions
//! live in one reused vector.
//!
//! [`apply`] places one change at its effective time `t`, found with
//! [`find`]:
//! - no version yet: a first version opens at `t` (or at
//!   [`Spec::history_from`], when that is earlier);
//! - before the first version: a version from `t` to the first one's
//!   start (a late change);
//! - in a gap left by a delete, or after the last version: a version from
//!   `t` to the next one's start (a resurrection after a delete);
//! - inside a version with the same tracked values: its type-1 and new
//!   columns are updated in place, or nothing happens;
//! - inside a version at its own start, or inside an inferred version:
//!   the version is replaced in place (a correction, a revived tombstone,
//!   the real row of an inferred key);
//! - inside a version otherwise: the version is split at `t`, the new
//!   version ending where the old one ended (closing the current version,
//!   or splitting a closed one when the change is late).
//!
//! [`delete_at`] closes the version holding `t` (or, under
//! [`Deletes::NewRecord`], adds a tombstone), and [`check_timeline`]
//! checks the SCD2 invariants before a timeline is planned for writing.
//! [`unchanged`] is the fast path that settles a source row without any
//! timeline: a row that matches its key's current version exactly.

use chrono::{DateTime, Utc};

use super::existing::Existing;
use super::incoming::Incoming;
use crate::hash::Hash128;
use crate::{Deletes, Error, Metrics, OPEN_END, Result, Spec, key_hash_hex};

/// Where a version's business values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Content {
    /// An existing row, unchanged.
    Existing(u32),
    /// A source row of this batch.
    Incoming(u32),
    /// An existing row with its type-1 and new columns taken from a source row.
    Updated { base: u32, from: u32 },
}

/// One version on a key's timeline while the batch is applied.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ver {
    pub(super) from: i64,
    pub(super) to: i64,
    pub(super) deleted: bool,
    /// A `new-record` tombstone.
    pub(super) tomb: bool,
    pub(super) inferred: bool,
    pub(super) content: Content,
    /// The existing row this version was, if any.
    pub(super) origin: Option<u32>,
    pub(super) dirty: bool,
}

/// The version that existing row `r` is.
#[inline]
pub(super) fn existing_ver(ex: &Existing, r: u32) -> Ver {
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

#[inline]
fn ver_cmp(v: &Ver, ex: &Existing, inc: &Incoming) -> Hash128 {
    match v.content {
        Content::Existing(r) | Content::Updated { base: r, .. } => ex.cmp[r as usize],
        Content::Incoming(i) => inc.cmp[i as usize],
    }
}

#[inline]
fn ver_t1(v: &Ver, ex: &Existing, inc: &Incoming) -> Hash128 {
    match v.content {
        Content::Existing(r) => ex.t1(r as usize),
        Content::Updated { from: i, .. } | Content::Incoming(i) => inc.t1(i as usize),
    }
}

/// Where an instant falls on a timeline.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pos {
    /// The timeline has no version.
    Empty,
    /// Inside version `q`.
    Inside(usize),
    /// Before the first version.
    Before,
    /// After version `q`, in a gap left by a delete or at the end.
    Gap(usize),
}

/// Where instant `t` falls on `versions` (sorted by start).
#[inline]
pub(super) fn find(versions: &[Ver], t: i64) -> Pos {
    if versions.is_empty() {
        return Pos::Empty;
    }
    if t < versions[0].from {
        return Pos::Before;
    }
    let q = versions.partition_point(|v| v.from <= t) - 1;
    if t < versions[q].to { Pos::Inside(q) } else { Pos::Gap(q) }
}

/// A new version `[from, to)` holding source row `i`.
#[inline]
pub(super) fn new_ver(from: i64, to: i64, i: u32) -> Ver {
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
#[inline]
pub(super) fn apply(spec: &Spec, inc: &Incoming, ex: &Existing, versions: &mut Vec<Ver>, i: u32, m: &mut Metrics) {
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
#[inline]
pub(super) fn delete_at(spec: &Spec, versions: &mut Vec<Ver>, t: i64, m: &mut Metrics) {
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

/// Whether source row `i` leaves current row `c` exactly as it is: same
/// tracked and type-1 values, nothing new to fill in, a start at or after
/// the version's, and a plain live version (no tombstone, nothing inferred).
#[inline]
pub(super) fn unchanged(inc: &Incoming, ex: &Existing, i: usize, c: usize) -> bool {
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
#[inline]
pub(super) fn check_timeline(key: Hash128, versions: &[Ver]) -> Result<()> {
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

/// UTC microseconds as a date and time (the epoch if out of range).
pub(super) fn micros_to_utc(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::datatypes::Schema;

    use super::*;

    const DAY: i64 = 86_400_000_000;

    /// A key's timeline and the hashes it is compared with, built in
    /// memory: `ex` holds its existing versions, `inc` the changes.
    struct Key {
        spec: Spec,
        ex: Existing,
        inc: Incoming,
        versions: Vec<Ver>,
        metrics: Metrics,
    }

    impl Key {
        fn new(spec: Spec) -> Self {
            let inc = Incoming {
                pieces: Vec::new(),
                starts: Vec::new(),
                schema: Arc::new(Schema::empty()),
                key: Vec::new(),
                cmp: Vec::new(),
                full: Vec::new(),
                t1: Vec::new(),
                eff: Vec::new(),
                delete: Vec::new(),
                unknown_key: None,
            };
            Self { spec, ex: Existing::default(), inc, versions: Vec::new(), metrics: Metrics::default() }
        }

        /// An existing version `[from, to)` with tracked values `cmp` and
        /// type-1 values `t1`, on the timeline.
        fn stored(&mut self, from: i64, to: i64, cmp: Hash128, t1: Hash128) -> &mut Self {
            let ex = &mut self.ex;
            let r = ex.key.len() as u32;
            ex.key.push(1);
            ex.from.push(from);
            ex.to.push(to);
            ex.cmp.push(cmp);
            ex.t1.push(t1);
            ex.sk.push(r as i64);
            ex.deleted.push(false);
            ex.inferred.push(false);
            ex.file.push(0);
            ex.row_in_file.push(r);
            self.versions.push(existing_ver(&self.ex, r));
            self
        }

        /// Applies a change at `t` with tracked values `cmp` and type-1
        /// values `t1` (a delete when `delete`).
        fn change(&mut self, t: i64, cmp: Hash128, t1: Hash128, delete: bool) -> &mut Self {
            let inc = &mut self.inc;
            let i = inc.key.len() as u32;
            inc.key.push(1);
            inc.cmp.push(cmp);
            inc.t1.push(t1);
            inc.eff.push(t);
            inc.delete.push(delete);
            apply(&self.spec, &self.inc, &self.ex, &mut self.versions, i, &mut self.metrics);
            self
        }

        /// The timeline as `(from, to, deleted, content)`.
        fn spans(&self) -> Vec<(i64, i64, bool, Content)> {
            self.versions.iter().map(|v| (v.from, v.to, v.deleted, v.content)).collect()
        }
    }

    #[test]
    fn a_late_change_splits_the_closed_interval_it_falls_into() {
        let mut key = Key::new(Spec::new(&["id"]));
        key.stored(0, 10 * DAY, 100, 0).stored(10 * DAY, OPEN_END, 200, 0);
        key.change(4 * DAY, 150, 0, false);
        assert_eq!(
            key.spans(),
            [
                (0, 4 * DAY, false, Content::Existing(0)),
                (4 * DAY, 10 * DAY, false, Content::Incoming(0)),
                (10 * DAY, OPEN_END, false, Content::Existing(1)),
            ]
        );
        assert!(key.versions[0].dirty && key.versions[1].dirty && !key.versions[2].dirty);
        assert_eq!((key.metrics.inserted, key.metrics.late_split, key.metrics.closed), (1, 1, 0));
        check_timeline(1, &key.versions).expect("a valid timeline");
        // A change before the first version opens one that ends where it starts.
        key.change(-DAY, 50, 0, false);
        assert_eq!(key.spans()[0], (-DAY, 0, false, Content::Incoming(1)));
        assert_eq!(key.metrics.late_split, 2);
        check_timeline(1, &key.versions).expect("a valid timeline");
    }

    #[test]
    fn a_delete_then_a_resurrection_leaves_a_gap_between_two_versions() {
        let mut key = Key::new(Spec::new(&["id"]));
        key.stored(0, OPEN_END, 100, 0);
        key.change(5 * DAY, 0, 0, true);
        assert_eq!(key.spans(), [(0, 5 * DAY, true, Content::Existing(0))]);
        assert_eq!(key.metrics.deleted, 1);
        // Deleting a deleted key does nothing.
        key.change(6 * DAY, 0, 0, true);
        assert_eq!((key.metrics.deleted, key.metrics.unchanged), (1, 1));
        key.change(8 * DAY, 100, 0, false);
        assert_eq!(
            key.spans(),
            [(0, 5 * DAY, true, Content::Existing(0)), (8 * DAY, OPEN_END, false, Content::Incoming(2)),]
        );
        assert_eq!((key.metrics.resurrected, key.metrics.inserted), (1, 1));
        check_timeline(1, &key.versions).expect("a valid timeline");
    }

    #[test]
    fn a_delete_at_a_versions_own_start_drops_it_and_a_new_record_delete_leaves_a_tombstone() {
        let mut key = Key::new(Spec::new(&["id"]));
        key.stored(0, OPEN_END, 100, 0);
        delete_at(&key.spec, &mut key.versions, 0, &mut key.metrics);
        assert!(key.versions.is_empty());

        let mut key = Key::new(Spec { deletes: Deletes::NewRecord, ..Spec::new(&["id"]) });
        key.stored(0, OPEN_END, 100, 0);
        key.change(3 * DAY, 0, 0, true);
        let tomb = key.versions[1];
        assert_eq!((key.versions[0].to, tomb.from, tomb.to), (3 * DAY, 3 * DAY, OPEN_END));
        assert!(tomb.tomb && tomb.deleted && tomb.origin.is_none());
        // The key comes back after its tombstone: the tombstone closes.
        key.change(4 * DAY, 100, 0, false);
        assert_eq!(key.versions.len(), 3);
        assert_eq!((key.versions[1].to, key.versions[2].from), (4 * DAY, 4 * DAY));
        assert_eq!(key.metrics.resurrected, 1);
        check_timeline(1, &key.versions).expect("a valid timeline");
    }

    #[test]
    fn a_type1_only_change_updates_the_version_in_place() {
        let mut key = Key::new(Spec { type1: vec!["email".into()], ..Spec::new(&["id"]) });
        key.stored(0, OPEN_END, 100, 7);
        key.change(5 * DAY, 100, 8, false);
        assert_eq!(key.spans(), [(0, OPEN_END, false, Content::Updated { base: 0, from: 0 })]);
        assert!(key.versions[0].dirty);
        assert_eq!((key.metrics.type1_updated, key.metrics.inserted, key.metrics.closed), (1, 0, 0));
        // The same values again change nothing.
        key.change(6 * DAY, 100, 8, false);
        assert_eq!(key.metrics.unchanged, 1);
        assert_eq!(key.spans(), [(0, OPEN_END, false, Content::Updated { base: 0, from: 0 })]);
        // A tracked change closes the version.
        key.change(7 * DAY, 200, 8, false);
        assert_eq!(key.spans()[1], (7 * DAY, OPEN_END, false, Content::Incoming(2)));
        assert_eq!(key.metrics.closed, 1);
    }

    #[test]
    fn a_timeline_that_breaks_an_invariant_is_refused() {
        let reason = |versions: &[Ver]| match check_timeline(1, versions) {
            Err(Error::Invariant { key_hash, reason }) => {
                assert_eq!(key_hash, key_hash_hex(1));
                reason
            }
            other => panic!("expected an invariant error, got {other:?}"),
        };
        let mut versions = [new_ver(0, 10 * DAY, 0), new_ver(20 * DAY, OPEN_END, 1)];
        check_timeline(1, &versions).expect("a gap between versions is fine");
        // The first version left open runs into the second.
        versions[0].to = OPEN_END;
        assert_eq!(reason(&versions), "versions starting 1970-01-01 00:00:00 UTC and 1970-01-21 00:00:00 UTC overlap");
        assert_eq!(
            reason(&[new_ver(DAY, DAY, 0)]),
            "valid_from 1970-01-02 00:00:00 UTC is not before valid_to 1970-01-02 00:00:00 UTC"
        );
        // A split that went wrong: the new version starts before the old one ends.
        let mut key = Key::new(Spec::new(&["id"]));
        key.stored(0, OPEN_END, 100, 0).change(5 * DAY, 200, 0, false);
        key.versions[0].to = 6 * DAY;
        assert!(reason(&key.versions).ends_with("overlap"));
    }

    #[test]
    fn an_instant_is_found_inside_before_or_after_the_versions() {
        let versions = [new_ver(10, 20, 0), new_ver(30, OPEN_END, 1)];
        assert_eq!(find(&[], 5), Pos::Empty);
        assert_eq!(find(&versions, 5), Pos::Before);
        assert_eq!(find(&versions, 10), Pos::Inside(0));
        assert_eq!(find(&versions, 25), Pos::Gap(0));
        assert_eq!(find(&versions, 30), Pos::Inside(1));
    }
}
