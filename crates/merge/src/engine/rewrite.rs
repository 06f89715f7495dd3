//! Writing a merge's plan: the touched files rewritten (or kept with a
//! deletion vector), then the new versions.
//!
//! - A current file whose rows mostly matched a source row unchanged is
//!   read slim: those rows take their key, tracked and type-1 values from
//!   the source row (their hashes are equal and the encoding is exact for
//!   every type but floats and nanosecond timestamps:
//!   [`matched_from_source`]), so only `recorded_at`, `batch_id` and the
//!   other columns are decoded for every row, and the rest for the changed
//!   rows only, with a Parquet row selection.
//! - On a table with deletion vectors ([`crate::Target::deletion_vectors`]),
//!   a touched current file is not rewritten: only its rows that the plan
//!   takes values from are read (all columns, a row selection), the closed
//!   and updated versions go to new files, and the file is removed and
//!   added again in the same commit with a deletion vector hiding its
//!   replaced rows. When that would hide more than half of the file, it is
//!   rewritten instead, and its hidden rows are gone.
//! - A history file is read whole only when a late change rewrites it.
//! - Each touched file is read on its own task, started while the file
//!   before it is rebuilt ([`READ_AHEAD_FILES`]): decoding overlaps
//!   building and encoding. A file's copied rows are listed only when its
//!   turn comes, and files roll over at 16 MB, so a rewrite's memory
//!   follows the file size rather than the partition's.
//! - New versions are written in the order of their source rows, not of
//!   their key hashes: the table then keeps the order its sources come in,
//!   and the next snapshot in that order finds most of its rows' current
//!   versions by sequential reads ([`super::index::CurrentIndex::get_near`]).
//! - Every batch goes to the writers current rows first ([`current_first`]),
//!   so each run of rows goes to its `is_current` partition as one slice.

use std::collections::{HashSet, VecDeque};

use deltalake::arrow::array::{RecordBatch, new_null_array};
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::kernel::Action;
use deltalake::logstore::ObjectStoreRef;

use super::Merge;
use super::build::{Builder, FileData};
use super::existing::Existing;
use super::layout::Layout;
use super::plan::OutRow;
use super::timeline::Content;
use crate::hash::Col;
use crate::io::{self, DataFile};
use crate::{Error, OPEN_END, Result, Spec, columns};

/// Touched files read (on their own tasks) while the one before them is
/// rewritten.
const READ_AHEAD_FILES: usize = 1;

/// Output rows built into one batch for the writers.
const BUILD_ROWS: usize = 64 * 1024;

/// What to read of a touched file.
pub(super) enum FileRead {
    /// Already read whole (a history file the plan loaded).
    Held(RecordBatch),
    /// Every column of every row.
    Whole,
    /// The slim columns of every row, the others of these rows only.
    Slim(Vec<u32>),
    /// Every column of these rows only (a file kept in place).
    Rows(Vec<u32>),
}

/// A touched file's turn: its index in the table's files, the planned rows
/// that take values from it, and the file itself when it was read already.
pub(super) type Job = (u32, Vec<OutRow>, Option<RecordBatch>);

/// Business columns whose value in a current row equals that of the source
/// row that matched it unchanged: the key and the compared tracked and
/// type-1 columns, whose hashes matched, where the hash encoding is exact
/// for the type. Floats are normalised and nanoseconds truncated before
/// hashing, so those columns are always read from the file.
pub(super) fn matched_from_source(spec: &Spec, layout: &Layout) -> HashSet<String> {
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

/// The planned rows `planned` cut into those of each of the table's
/// `n_files` files (by the file their values come from) and the new
/// versions, which come from no file.
pub(super) fn rows_by_file(planned: Vec<OutRow>, ex: &Existing, n_files: usize) -> (Vec<Vec<OutRow>>, Vec<OutRow>) {
    // Per file of the table, by its index in `files`.
    let mut by_file: Vec<Vec<OutRow>> = vec![Vec::new(); n_files];
    let mut fresh: Vec<OutRow> = Vec::with_capacity(planned.iter().filter(|r| r.file(ex).is_none()).count());
    for row in planned {
        match row.file(ex) {
            Some(f) => by_file[f as usize].push(row),
            None => fresh.push(row),
        }
    }
    (by_file, fresh)
}

/// How the touched files of one merge are rewritten.
pub(super) struct Rewrite<'a> {
    files: &'a [DataFile],
    ex: &'a Existing,
    /// The source row that left each current row unchanged (`u32::MAX`: none).
    partner: &'a [u32],
    /// Columns a matched row takes from its source row.
    matched: &'a HashSet<String>,
    /// Whether the table takes deletion vectors.
    deletion_vectors: bool,
    /// Per existing row: whether the plan replaced it.
    replaced: Vec<bool>,
    /// Per file of the table: its existing rows, when it is touched.
    rows_of_file: Vec<Vec<u32>>,
    /// The columns a slim read decodes for every row.
    slim_cols: Vec<String>,
    /// The columns a slim read decodes for the rows no source row matched.
    wide_cols: Vec<String>,
    store: Option<ObjectStoreRef>,
}

impl<'a> Rewrite<'a> {
    /// The rewrite of the files `touched` of `m`'s table, the plan having
    /// replaced the existing rows `replaced`.
    pub(super) fn new(
        m: &'a Merge<'_>,
        partner: &'a [u32],
        matched: &'a HashSet<String>,
        replaced: &[u32],
        touched: &[u32],
    ) -> Self {
        let (files, ex) = (m.files.as_slice(), &m.ex);
        let mut is_replaced = vec![false; ex.key.len()];
        for &r in replaced {
            is_replaced[r as usize] = true;
        }
        let mut is_touched = vec![false; files.len()];
        for &f in touched {
            is_touched[f as usize] = true;
        }
        let mut rows_of_file: Vec<Vec<u32>> = vec![Vec::new(); files.len()];
        for (r, &f) in ex.file.iter().enumerate() {
            if is_touched[f as usize] {
                rows_of_file[f as usize].push(r as u32);
            }
        }
        let slim_cols: Vec<String> = [columns::RECORDED_AT, columns::BATCH_ID]
            .into_iter()
            .map(String::from)
            .chain(m.layout.business.iter().map(|f| f.name().clone()).filter(|n| !matched.contains(n)))
            .collect();
        let wide_cols: Vec<String> = matched.iter().cloned().collect();
        Self {
            files,
            ex,
            partner,
            matched,
            deletion_vectors: m.table.as_ref().is_some_and(io::takes_deletion_vectors),
            replaced: is_replaced,
            rows_of_file,
            slim_cols,
            wide_cols,
            store: m.table.as_ref().map(|t| t.object_store()),
        }
    }

    /// Each touched file's rows to write, what to read of it, and, for a
    /// current file kept in place, the rows its deletion vector will hide.
    /// A current file keeps its untouched rows where they are, and a
    /// deletion vector hides the rows the merge replaced, unless that would
    /// leave more than half of the file hidden: then it is rewritten, and
    /// its hidden rows are dropped for good. A current file whose rows
    /// mostly matched a source row unchanged is read slim.
    fn plan_file(
        &self,
        f: u32,
        mut rows: Vec<OutRow>,
        held: Option<RecordBatch>,
    ) -> (Vec<OutRow>, FileRead, Option<Vec<u32>>) {
        let (files, ex) = (self.files, self.ex);
        let file = &files[f as usize];
        if self.deletion_vectors && file.current && held.is_none() {
            let kept = &self.rows_of_file[f as usize];
            // In file order, as a file's rows are loaded.
            let gone: Vec<u32> =
                kept.iter().filter(|&&r| self.replaced[r as usize]).map(|&r| ex.row_in_file[r as usize]).collect();
            if (file.deleted.len() + gone.len()) * 2 <= file.deleted.len() + kept.len() {
                // Only the rows that the planned rows take values from are read.
                let read = FileRead::Rows(rows_read(rows.iter(), ex));
                return (rows, read, Some(gone));
            }
        }
        // Rows of this file that the merge did not touch are copied.
        for &r in &self.rows_of_file[f as usize] {
            if !self.replaced[r as usize] {
                rows.push(OutRow::copy(ex, r));
            }
        }
        let read = match held {
            Some(b) => FileRead::Held(b),
            None => {
                let matched_rows = rows.iter().filter(|o| o.matched(self.partner).is_some()).count();
                if files[f as usize].current && !self.matched.is_empty() && matched_rows * 2 >= rows.len() {
                    FileRead::Slim(rows_read(rows.iter().filter(|o| o.matched(self.partner).is_none()), ex))
                } else {
                    FileRead::Whole
                }
            }
        };
        (rows, read, None)
    }

    /// Starts reading file `f` on its own task.
    fn start_read(&self, f: u32, read: FileRead) -> tokio::task::JoinHandle<Result<FileData>> {
        let (store, file) = (self.store.clone(), self.files[f as usize].clone());
        let (slim_cols, wide_cols) = (self.slim_cols.clone(), self.wide_cols.clone());
        tokio::spawn(async move {
            let store = || store.ok_or_else(|| Error::internal("merge", "a file without a table"));
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
    }

    /// Rewrites the touched files `jobs`, in order, each read on its own
    /// task started before the file ahead of it is rebuilt. The actions
    /// that remove rewritten files go to `actions`, and `current_rows`
    /// follows the current partition. Returns, per file kept in place, the
    /// rows its new deletion vector hides.
    pub(super) async fn write_files(
        &self,
        jobs: Vec<Job>,
        builder: &Builder<'_>,
        writer: &mut io::ParallelWriter,
        actions: &mut Vec<Action>,
        current_rows: &mut i64,
    ) -> Result<Vec<(&'a DataFile, Vec<u32>)>> {
        // The first two files are decoded on two cores at once.
        let mut jobs = jobs.into_iter().map(|(f, rows, held)| {
            let (rows, read, gone) = self.plan_file(f, rows, held);
            (f, rows, gone, self.start_read(f, read))
        });
        let mut ahead: VecDeque<_> = jobs.by_ref().take(1).collect();
        // Per file kept in place: the rows its new deletion vector hides.
        let mut hidden: Vec<(&DataFile, Vec<u32>)> = Vec::new();
        while let Some((f, rows, gone, reading)) = ahead.pop_front() {
            ahead.extend(jobs.by_ref().take(READ_AHEAD_FILES));
            let data = reading.await.map_err(|e| Error::task("reading table files", e))??;
            let file = &self.files[f as usize];
            match gone {
                // Kept in place (a current file): its replaced rows leave.
                Some(gone) => {
                    *current_rows -= gone.len() as i64;
                    if !gone.is_empty() {
                        hidden.push((file, gone));
                    }
                }
                None => {
                    actions.push(Action::Remove(file.remove.clone()));
                    if file.current {
                        *current_rows -= data.slim.num_rows() as i64;
                    }
                }
            }
            let rows = current_first(rows);
            *current_rows += rows.iter().filter(|r| r.to == OPEN_END).count() as i64;
            for chunk in rows.chunks(BUILD_ROWS) {
                let out = builder.build(chunk, Some(&data))?;
                writer.write(out).await?;
            }
        }
        Ok(hidden)
    }
}

/// Writes the new versions `fresh` in the order of their source rows;
/// `current_rows` follows the current partition.
pub(super) async fn write_fresh(
    mut fresh: Vec<OutRow>,
    builder: &Builder<'_>,
    writer: &mut io::ParallelWriter,
    current_rows: &mut i64,
) -> Result<()> {
    fresh.sort_unstable_by_key(|r| match r.content {
        Content::Incoming(i) => i,
        Content::Existing(_) | Content::Updated { .. } => u32::MAX,
    });
    let fresh = current_first(fresh);
    *current_rows += fresh.iter().filter(|r| r.to == OPEN_END).count() as i64;
    for chunk in fresh.chunks(BUILD_ROWS) {
        let out = builder.build(chunk, None)?;
        writer.write(out).await?;
    }
    Ok(())
}
