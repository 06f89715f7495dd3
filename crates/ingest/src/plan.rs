//! Which files of a source a run reads: every file matching the source's
//! location in each day folder, fingerprinted (size and BLAKE3 hash, on
//! every worker), and sorted into new files, files already ingested, and
//! files changed under a name already ingested.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::checkpoint::Checkpoint;
use crate::model::SourceDef;
use crate::workers::{on_workers, stride};
use crate::{Error, Result, files};

/// A new file of a source: where it is and what it holds.
#[derive(Clone)]
pub(crate) struct NewFile {
    /// The day folder it is in.
    pub(crate) day: NaiveDate,
    pub(crate) path: PathBuf,
    /// Its path relative to the landing root, as checkpointed.
    pub(crate) rel: String,
    pub(crate) size: u64,
    pub(crate) hash: String,
}

/// The files of one source: new ones, and how many were seen before.
pub(crate) struct FilePlan {
    pub(crate) new: Vec<NewFile>,
    pub(crate) already: usize,
    /// Days on which no file matched.
    pub(crate) missing_on: Vec<NaiveDate>,
}

/// The files of `source` in `days`; files that changed under a name
/// already ingested are added to `changed` instead.
pub(crate) fn plan_files(
    source: &SourceDef,
    days: &[(NaiveDate, PathBuf)],
    landing: &Path,
    checkpoint: &Checkpoint,
    changed: &mut Vec<String>,
) -> Result<FilePlan> {
    let pattern = source.location.as_deref().unwrap_or_default();
    let mut plan = FilePlan { new: Vec::new(), already: 0, missing_on: Vec::new() };
    let mut found: Vec<PathBuf> = Vec::new();
    let mut found_on: Vec<NaiveDate> = Vec::new();
    for (date, dir) in days {
        let full = format!("{}/{}", glob::Pattern::escape(&dir.display().to_string()), pattern);
        let paths = glob::glob(&full).map_err(|e| Error::Model {
            origin: format!("source {}", source.name),
            reason: format!("location {pattern:?}: {e}"),
        })?;
        let before = found.len();
        for path in paths {
            let path = path.map_err(|e| {
                let path = e.path().display().to_string();
                Error::Io { path, source: e.into() }
            })?;
            if path.is_file() {
                found.push(path);
                found_on.push(*date);
            }
        }
        if found.len() == before {
            plan.missing_on.push(*date);
        }
    }
    for ((path, day), (size, hash)) in found.iter().zip(found_on).zip(fingerprint_all(&found)?) {
        let rel = path.strip_prefix(landing).unwrap_or(path).display().to_string();
        match checkpoint.files.get(&(source.name.clone(), rel.clone())) {
            Some(Some(old)) if *old == hash => plan.already += 1,
            Some(_) => changed.push(rel),
            None => plan.new.push(NewFile { day, path: path.clone(), rel, size, hash }),
        }
    }
    Ok(plan)
}

/// Size and hash of every file, on every worker, in `paths` order.
fn fingerprint_all(paths: &[PathBuf]) -> Result<Vec<(u64, String)>> {
    let parts = on_workers(paths.len(), |w, workers| {
        stride(paths, w, workers).map(|(i, p)| files::fingerprint(p).map(|f| (i, f))).collect::<Result<Vec<_>>>()
    })?;
    let mut all: Vec<_> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, f)| f).collect())
}
