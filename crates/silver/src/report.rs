//! What the silver stage reports: per table, how each bronze batch's rows
//! were accounted for, each rule's counts, and the versions written.

use serde::Serialize;

use crate::dq::DQ_RESULTS_TABLE;

/// How one bronze batch's rows were accounted for in one silver table:
/// `accepted + duplicates + quarantined + dropped = bronze_rows`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BatchAccount {
    /// The bronze table the batch is in.
    pub bronze_table: String,
    /// The batch (`<source>-000042`).
    pub batch_id: String,
    /// The batch's rows.
    pub bronze_rows: u64,
    /// In silver: the current row or an older version in its `_lineage`.
    pub accepted: u64,
    /// Exact duplicates of a row already accepted (this run or before).
    pub duplicates: u64,
    /// Sent to the quarantine table.
    pub quarantined: u64,
    /// Left out by a `drop` rule.
    pub dropped: u64,
}

impl BatchAccount {
    /// The counts of `accounts` added up (table and batch left empty).
    pub fn sum<'a>(accounts: impl IntoIterator<Item = &'a BatchAccount>) -> Self {
        let mut t = Self::default();
        for b in accounts {
            t.bronze_rows += b.bronze_rows;
            t.accepted += b.accepted;
            t.duplicates += b.duplicates;
            t.quarantined += b.quarantined;
            t.dropped += b.dropped;
        }
        t
    }
}

/// A rule's result over the batches of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCount {
    /// The rule's name (an expectation, a parent check, or a built-in one
    /// such as `parsed` or `exact_duplicate`).
    pub rule: String,
    /// What a failure does (`warn`, `drop`, `quarantine`, `fail`, `count`).
    pub action: String,
    /// Rows the rule was checked on.
    pub rows_evaluated: u64,
    /// Rows that failed it.
    pub rows_failed: u64,
}

/// What the stage did to one silver table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableReport {
    /// The silver table.
    pub table: String,
    /// Each new bronze batch's account, in (bronze table, batch) order.
    pub batches: Vec<BatchAccount>,
    /// Each rule's counts, by rule name.
    pub rules: Vec<RuleCount>,
    /// Quarantined orphans released into silver because their parent came.
    pub released: u64,
    /// Rows in the table after the run (0 when the run did not rewrite it).
    pub rows: u64,
    /// Keys marked deleted (missing from the newest full extract).
    pub deleted: u64,
    /// The silver table's version written, if the run rewrote it.
    pub version: Option<i64>,
    /// The quarantine table's version written, if any.
    pub quarantine_version: Option<i64>,
    /// `(table, version)` of each derived table written.
    pub derived: Vec<(String, i64)>,
}

/// What the stage did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SilverReport {
    /// One report per silver table planned, parents first.
    pub tables: Vec<TableReport>,
    /// The last `dq_results` version written, if any.
    pub dq_results_version: Option<i64>,
}

impl SilverReport {
    /// `(table, version, rows written)` for every table written.
    pub fn table_versions(&self) -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for t in &self.tables {
            if let Some(v) = t.version {
                out.push((t.table.clone(), v, t.rows as i64));
            }
            if let Some(v) = t.quarantine_version {
                let q: u64 = t.batches.iter().map(|b| b.quarantined).sum();
                out.push((format!("quarantine_{}", t.table), v, q as i64));
            }
            for (name, v) in &t.derived {
                out.push((name.clone(), *v, -1));
            }
        }
        if let Some(v) = self.dq_results_version {
            out.push((DQ_RESULTS_TABLE.to_string(), v, -1));
        }
        out
    }

    /// Adds a later round's report to this one: its batches and rule
    /// counts, and the versions it wrote.
    pub fn absorb(&mut self, later: SilverReport) {
        for t in later.tables {
            let Some(mine) = self.tables.iter_mut().find(|m| m.table == t.table) else {
                self.tables.push(t);
                continue;
            };
            mine.batches.extend(t.batches);
            for r in t.rules {
                match mine.rules.iter_mut().find(|m| m.rule == r.rule) {
                    Some(m) => {
                        m.rows_evaluated += r.rows_evaluated;
                        m.rows_failed += r.rows_failed;
                    }
                    None => mine.rules.push(r),
                }
            }
            mine.released += t.released;
            mine.deleted += t.deleted;
            if t.version.is_some() {
                mine.version = t.version;
                mine.rows = t.rows;
            }
            mine.quarantine_version = t.quarantine_version.or(mine.quarantine_version);
            for (name, v) in t.derived {
                match mine.derived.iter_mut().find(|(n, _)| *n == name) {
                    Some(d) => d.1 = v,
                    None => mine.derived.push((name, v)),
                }
            }
        }
        self.dq_results_version = later.dq_results_version.or(self.dq_results_version);
    }

    /// Rows that reached silver, were quarantined, counted as duplicates
    /// or dropped, over every table and batch.
    pub fn totals(&self) -> BatchAccount {
        BatchAccount::sum(self.tables.iter().flat_map(|t| &t.batches))
    }
}
