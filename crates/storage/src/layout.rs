//! How gold keeps a table's Delta log and files in shape over years of
//! nightly commits: the table properties it sets, and the compaction of
//! the small files each night appends.
//!
//! - **Checkpoints every [`CHECKPOINT_INTERVAL`] commits**, so loading a
//!   table reads one checkpoint and at most that many JSON commits,
//!   however long its history (delta-rs's default is every 100).
//! - **No expired-log clean-up.** delta-rs deletes commit files older
//!   than 30 days once a checkpoint covers them, which would cut
//!   time travel, `gold rollback` and `gold rebuild --as-of` to a month.
//!   gold's tables say `delta.enableExpiredLogCleanup = false` and keep
//!   their log for [`LOG_RETENTION`] (what other engines read), and every
//!   gold commit asks delta-rs for no clean-up, so a table made by an
//!   older gold keeps its log too. Only an explicit `gold maintain
//!   --vacuum` deletes data files.
//! - **Compaction.** A partition that has gathered [`COMPACT_AT`] files
//!   smaller than [`COMPACT_TARGET`] is compacted (Delta OPTIMIZE, the
//!   rows unchanged, the old files kept for time travel): the nightly
//!   cost of reading a table follows its size, not its age.

use std::collections::HashMap;
use std::num::NonZeroU64;

use crate::warehouse::{committed_version, delta_err};
use crate::{Commit, Error, Result, TableName, Warehouse};

/// Commits between two checkpoints of a gold table.
pub const CHECKPOINT_INTERVAL: u32 = 10;

/// How long a gold table's commit files are kept (the `interval` of
/// `delta.logRetentionDuration`): ten years, the record-keeping period of
/// Medicare Advantage.
pub const LOG_RETENTION: &str = "interval 3650 days";

/// Files smaller than this are compacted, into files of about this size.
pub const COMPACT_TARGET: u64 = 32 * 1024 * 1024;

/// How many files below [`COMPACT_TARGET`] one partition may hold before
/// it is compacted.
pub const COMPACT_AT: usize = 16;

/// The Delta table properties every gold table carries.
pub fn table_properties() -> [(&'static str, String); 3] {
    [
        ("delta.checkpointInterval", CHECKPOINT_INTERVAL.to_string()),
        ("delta.enableExpiredLogCleanup", "false".to_string()),
        ("delta.logRetentionDuration", LOG_RETENTION.to_string()),
    ]
}

/// What [`Warehouse::keep_in_shape`] did to one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Upkeep {
    /// The version that set the missing table properties, if any.
    pub properties_set: Option<i64>,
    /// The version of the compaction, if any.
    pub compacted: Option<i64>,
    /// Files the compaction removed.
    pub files_removed: u64,
    /// Files it added.
    pub files_added: u64,
    /// The most small files one partition held before.
    pub small_files: usize,
}

impl Upkeep {
    /// The table's last version written, if anything was.
    pub fn version(&self) -> Option<i64> {
        self.compacted.or(self.properties_set)
    }
}

impl Warehouse {
    /// Sets the table properties an older gold did not set, then compacts
    /// the table if one partition holds [`COMPACT_AT`] small files. Both
    /// commits carry `commit`'s run; the rows do not change. A table with
    /// deletion vectors is left alone.
    pub async fn keep_in_shape(&self, name: &TableName, commit: &Commit<'_>) -> Result<Upkeep> {
        let Some(mut table) = self.load(name).await? else {
            return Err(Error::NoSuchTable { table: name.to_string() });
        };
        let mut upkeep = Upkeep::default();
        let snapshot = table.snapshot().map_err(delta_err(name))?;
        let configuration = snapshot.metadata().configuration();
        if configuration.get("delta.enableDeletionVectors").is_some_and(|v| v == "true") {
            // A `gold snapshot` table: its merges keep files under deletion
            // vectors and rewrite them past half; it is left as it is.
            return Ok(upkeep);
        }
        let missing: HashMap<String, String> = table_properties()
            .into_iter()
            .filter(|(k, v)| configuration.get(*k) != Some(v))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut per_partition: HashMap<String, usize> = HashMap::new();
        for file in snapshot.log_data().iter() {
            if u64::try_from(file.size()).is_ok_and(|size| size < COMPACT_TARGET) {
                let partition = format!("{:?}", sorted(file.partition_values_map()));
                *per_partition.entry(partition).or_default() += 1;
            }
        }
        upkeep.small_files = per_partition.values().copied().max().unwrap_or(0);
        if !missing.is_empty() {
            table = table
                .set_tbl_properties()
                .with_properties(missing)
                .with_commit_properties(commit.properties())
                .await
                .map_err(delta_err(name))?;
            upkeep.properties_set = Some(committed_version(name, &table)?);
        }
        if upkeep.small_files >= COMPACT_AT {
            let kind = deltalake::operations::optimize::OptimizeType::Compact;
            let target = NonZeroU64::new(COMPACT_TARGET);
            (upkeep.compacted, upkeep.files_removed, upkeep.files_added) =
                Self::optimize_loaded(name, table, kind, target, commit).await?;
        }
        Ok(upkeep)
    }
}

fn sorted(map: HashMap<String, Option<String>>) -> Vec<(String, Option<String>)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}
