//! Reading landing files (CSV and newline-delimited JSON) into bronze rows.
//! Every physical row becomes a bronze row: what does not fit is kept in
//! `_rescued_data` with the reason in `_error`.
//!
//! A CSV file is read in two steps: its header gives the file's `Layout`
//! (which field each declared column takes, and the undeclared ones),
//! checked against the source's drift policy; then each row is typed
//! through that layout (`CsvRows`). Rows are read as bytes into one
//! reused record, and only a row that is rescued is read again as raw
//! text, from a second handle on the file at the byte range the reader
//! reported, so that the common row costs no copy of its line.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use crate::bronze::BronzeBuilder;
use crate::model::{DriftPolicy, SourceDef};
use crate::{Error, Result};

/// What reading one file found, beyond its rows.
#[derive(Debug, Default)]
pub(crate) struct FileNotes {
    /// Declared columns the file lacks (CSV).
    pub(crate) missing_columns: Vec<String>,
    /// Columns the file has but the source does not declare.
    pub(crate) extra_columns: Vec<String>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// The size and BLAKE3 hash of a file.
pub(crate) fn fingerprint(path: &Path) -> Result<(u64, String)> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).map_err(io_err(path))?;
    let size = std::fs::metadata(path).map_err(io_err(path))?.len();
    Ok((size, hasher.finalize().to_hex().to_string()))
}

/// Raw bytes `[start, end)` of a file, as text (invalid UTF-8 replaced),
/// without the line ending.
fn raw_line(file: &mut File, start: u64, end: u64) -> String {
    let mut buf = vec![0; end.saturating_sub(start) as usize];
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_exact(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    text.trim_end_matches(['\r', '\n']).to_string()
}

/// How a CSV file's fields map onto its source's declared columns.
struct Layout {
    /// The header's names, trimmed (and the first without a BOM).
    header: Vec<String>,
    /// Declared column → field index, by exact name, else ignoring case.
    positions: Vec<Option<usize>>,
    /// The fields no declared column takes: index and name.
    extra: Vec<(usize, String)>,
}

impl Layout {
    /// The layout of `header` for `source`: an error when a name appears
    /// twice, when no declared column is found, or when an undeclared one
    /// is and the drift policy is `fail`.
    fn of(header: Vec<String>, source: &SourceDef, file_err: impl Fn(String) -> Error) -> Result<Self> {
        let mut seen = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            if let Some(first) = seen.insert(name.as_str(), i) {
                return Err(file_err(format!(
                    "column {name:?} appears twice in the header (fields {} and {})",
                    first + 1,
                    i + 1
                )));
            }
        }
        let positions: Vec<Option<usize>> = source
            .columns
            .iter()
            .map(|c| {
                header
                    .iter()
                    .position(|h| *h == c.name)
                    .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(&c.name)))
            })
            .collect();
        if positions.iter().all(Option::is_none) {
            return Err(file_err(format!(
                "the header matches none of the columns declared for source {}; is the file comma-separated? (header: {:?})",
                source.name,
                header.join("|")
            )));
        }
        let extra: Vec<(usize, String)> = header
            .iter()
            .enumerate()
            .filter(|(i, _)| !positions.contains(&Some(*i)))
            .map(|(i, h)| (i, h.clone()))
            .collect();
        if !extra.is_empty() && source.drift == DriftPolicy::Fail {
            return Err(file_err(format!(
                "column {:?} is not declared for source {} (drift policy: fail)",
                extra[0].1, source.name
            )));
        }
        Ok(Layout { header, positions, extra })
    }

    /// What the layout tells about the file: declared columns it lacks and
    /// undeclared ones it has.
    fn notes(&self, source: &SourceDef) -> FileNotes {
        FileNotes {
            missing_columns: source
                .columns
                .iter()
                .zip(&self.positions)
                .filter(|(_, p)| p.is_none())
                .map(|(c, _)| c.name.clone())
                .collect(),
            extra_columns: self.extra.iter().map(|(_, h)| h.clone()).collect(),
        }
    }
}

/// The header of a CSV file, its names trimmed and the first without a
/// BOM; `None` for an empty file.
fn read_header(reader: &mut csv::Reader<File>, rel: &str) -> Result<Option<Vec<String>>> {
    let mut record = csv::ByteRecord::new();
    let has_header = reader.read_byte_record(&mut record).map_err(|source| Error::Csv {
        file: rel.to_string(),
        at: "cannot read the header".to_string(),
        source,
    })?;
    if !has_header {
        return Ok(None);
    }
    let mut header = Vec::with_capacity(record.len());
    for (i, field) in record.iter().enumerate() {
        let name = std::str::from_utf8(field).map_err(|_| Error::BadFile {
            file: rel.to_string(),
            reason: format!("header field {} is not valid UTF-8", i + 1),
        })?;
        let name = if i == 0 { name.trim_start_matches('\u{feff}') } else { name };
        header.push(name.trim().to_string());
    }
    Ok(Some(header))
}

/// Reads one CSV file. `rel` is its path relative to the landing root.
pub(crate) fn read_csv(path: &Path, rel: &str, source: &SourceDef, out: &mut BronzeBuilder) -> Result<FileNotes> {
    let file = File::open(path).map_err(io_err(path))?;
    let raw = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(1 << 20).from_reader(file);
    let Some(header) = read_header(&mut reader, rel)? else {
        // An empty file holds no rows; nothing to ingest.
        return Ok(FileNotes::default());
    };
    let file_err = |reason: String| Error::BadFile { file: rel.to_string(), reason };
    let layout = Layout::of(header, source, file_err)?;
    let notes = layout.notes(source);
    if source.drift == DriftPolicy::AddColumn {
        out.set_extra_columns(&layout.extra.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
    }
    CsvRows { reader, raw, file_len, rel, source, layout }.read_into(out)?;
    Ok(notes)
}

/// The rows of a CSV file after its header, and what is needed to turn
/// each into a bronze row.
struct CsvRows<'a> {
    reader: csv::Reader<File>,
    /// The same file, to read a row's raw bytes back when it is rescued.
    raw: File,
    file_len: u64,
    rel: &'a str,
    source: &'a SourceDef,
    layout: Layout,
}

impl CsvRows<'_> {
    /// Every row into `out`, numbered from 1 after the header.
    fn read_into(mut self, out: &mut BronzeBuilder) -> Result<()> {
        let mut record = csv::ByteRecord::new();
        let mut row: u64 = 0;
        let mut errors: Vec<String> = Vec::new();
        loop {
            let start = self.reader.position().byte();
            let more = match self.reader.read_byte_record(&mut record) {
                Ok(more) => more,
                Err(source) => {
                    return Err(Error::Csv { file: self.rel.to_string(), at: format!("row {}", row + 1), source });
                }
            };
            if !more {
                break;
            }
            row += 1;
            let end = self.reader.position().byte().min(self.file_len);
            errors.clear();
            self.row(&record, row, (start, end), &mut errors, out)?;
        }
        Ok(())
    }

    /// One row, `record`, at bytes `start..end` of the file: whole into
    /// `_rescued_data` when its shape is wrong, else typed, with the
    /// fields that do not fit (or undeclared ones, under `rescue`) kept.
    fn row(
        &mut self,
        record: &csv::ByteRecord,
        row: u64,
        (start, end): (u64, u64),
        errors: &mut Vec<String>,
        out: &mut BronzeBuilder,
    ) -> Result<()> {
        let Layout { header, positions, extra } = &self.layout;
        let mut fields: Vec<&str> = Vec::with_capacity(header.len());
        for (i, f) in record.iter().enumerate() {
            fields.push(std::str::from_utf8(f).unwrap_or_else(|_| {
                errors.push(format!("field {} is not valid UTF-8", i + 1));
                ""
            }));
        }
        if fields.len() != header.len() {
            errors.push(format!("expected {} fields, found {}", header.len(), fields.len()));
        } else if fields.iter().zip(header).all(|(f, h)| f.trim_start_matches('\u{feff}') == h) {
            errors.push("repeated header line".to_string());
        }
        if !errors.is_empty() {
            // The row's shape is wrong: keep it whole, typed columns NULL.
            out.null_row();
            for (_, name) in extra {
                out.extra(name, None);
            }
            let line = raw_line(&mut self.raw, start, end);
            return out.end_row(self.rel, row, Some(&line), Some(&errors.join("; ")));
        }
        for (col, pos) in positions.iter().enumerate() {
            let value = pos.map(|p| fields[p]);
            if !out.text(col, value) {
                let c = &self.source.columns[col];
                errors.push(format!("column {}: {:?} is not a {}", c.name, value.unwrap_or(""), c.column_type()));
            }
        }
        let mut rescued = None;
        if !errors.is_empty() {
            rescued = Some(raw_line(&mut self.raw, start, end));
        }
        match self.source.drift {
            DriftPolicy::AddColumn => {
                for (i, name) in extra {
                    out.extra(name, Some(fields[*i]));
                }
            }
            DriftPolicy::Rescue if !extra.is_empty() && rescued.is_none() => {
                let map: serde_json::Map<String, Value> =
                    extra.iter().map(|(i, n)| (n.clone(), Value::String(fields[*i].to_string()))).collect();
                rescued = Some(Value::Object(map).to_string());
            }
            _ => {}
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        out.end_row(self.rel, row, rescued.as_deref(), error.as_deref())
    }
}

/// Reads one newline-delimited JSON file (flat or nested records).
pub(crate) fn read_ndjson(path: &Path, rel: &str, source: &SourceDef, out: &mut BronzeBuilder) -> Result<FileNotes> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    let mut notes = FileNotes::default();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let bytes = if line_no == 1 { bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes) } else { bytes };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue; // a blank line holds no record
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                out.null_row();
                out.end_row(rel, line_no, Some(&String::from_utf8_lossy(bytes)), Some(&format!("invalid UTF-8: {e}")))?;
                continue;
            }
        };
        let mut object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                let kind = match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                out.null_row();
                out.end_row(rel, line_no, Some(text), Some(&format!("not a JSON object but {kind}")))?;
                continue;
            }
            Err(e) => {
                out.null_row();
                out.end_row(rel, line_no, Some(text), Some(&format!("malformed JSON: {e}")))?;
                continue;
            }
        };
        let mut rescued = serde_json::Map::new();
        let mut errors = Vec::new();
        for (col, c) in source.columns.iter().enumerate() {
            let value = object.remove(&c.name);
            if !out.json(col, value.clone()) {
                errors.push(format!("column {}: value does not fit {}", c.name, c.column_type()));
                if let Some(v) = value {
                    rescued.insert(c.name.clone(), v);
                }
            }
        }
        if !object.is_empty() {
            for key in object.keys() {
                if !notes.extra_columns.contains(key) {
                    notes.extra_columns.push(key.clone());
                }
            }
            match source.drift {
                DriftPolicy::Fail => {
                    let key = object.keys().next().cloned().unwrap_or_default();
                    return Err(Error::BadFile {
                        file: rel.to_string(),
                        reason: format!(
                            "line {line_no}: key {key:?} is not declared for source {} (drift policy: fail)",
                            source.name
                        ),
                    });
                }
                DriftPolicy::AddColumn => {
                    let names: Vec<String> = object.keys().cloned().collect();
                    out.set_extra_columns(&names);
                    for (k, v) in &object {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        out.extra(k, Some(&text));
                    }
                }
                DriftPolicy::Rescue => rescued.extend(object),
            }
        }
        let rescued = (!rescued.is_empty()).then(|| Value::Object(rescued).to_string());
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        out.end_row(rel, line_no, rescued.as_deref(), error.as_deref())?;
    }
    Ok(notes)
}
