//! The landing folder on disk: one sub-folder per day, one file per source,
//! plus `_truth/` for what was injected.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};

use crate::{Error, Result};

/// Every file the generator writes into a day folder.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum SourceFile {
    /// `members.csv`: the full member extract of the enrollment database.
    Members,
    /// `providers.json`: newline-delimited nested provider records.
    Providers,
    /// `diagnosis_ref.csv`: the insurer's diagnosis reference, with duplicates.
    DiagnosisRef,
    /// `claims_batch.csv`: the daily claims batch.
    ClaimsBatch,
    /// `claims_stream.json`: newline-delimited claim status events.
    ClaimsStream,
    /// `patients.csv`: care-management patients (new and changed).
    Patients,
    /// `claims.csv`: care-management claims.
    EhrClaims,
    /// `medical_events.csv`: care-management events.
    MedicalEvents,
}

impl SourceFile {
    /// All files, in the order they are listed in a summary.
    pub const ALL: [SourceFile; 8] = [
        Self::Members,
        Self::Providers,
        Self::DiagnosisRef,
        Self::ClaimsBatch,
        Self::ClaimsStream,
        Self::Patients,
        Self::EhrClaims,
        Self::MedicalEvents,
    ];

    /// The file's name inside a day folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Members => "members.csv",
            Self::Providers => "providers.json",
            Self::DiagnosisRef => "diagnosis_ref.csv",
            Self::ClaimsBatch => "claims_batch.csv",
            Self::ClaimsStream => "claims_stream.json",
            Self::Patients => "patients.csv",
            Self::EhrClaims => "claims.csv",
            Self::MedicalEvents => "medical_events.csv",
        }
    }

    /// The CSV header, exactly as the source systems send it; `None` for
    /// newline-delimited JSON.
    pub fn header(self) -> Option<&'static [&'static str]> {
        Some(match self {
            Self::Members => &[
                "MemberID",
                "Name",
                "DOB",
                "Gender",
                "Region",
                "PlanType",
                "EffectiveDate",
                "Email",
                "IsActive",
                "LastUpdated",
            ],
            Self::DiagnosisRef => &["Code", "Description"],
            Self::ClaimsBatch => &[
                "ClaimID",
                "MemberID",
                "ProviderID",
                "ClaimDate",
                "ServiceDate",
                "Amount",
                "Status",
                "ICD10Codes",
                "CPTCodes",
                "ClaimType",
                "SubmissionChannel",
                "Notes",
                "IngestTimestamp",
            ],
            Self::Patients => &[
                "patient_id",
                "first_name",
                "last_name",
                "age",
                "sex",
                "region",
                "bmi",
                "smoker",
                "children",
                "charges",
                "insurance_plan",
                "coverage_start_date",
                "timestamp",
            ],
            Self::EhrClaims => &[
                "claim_id",
                "patient_id",
                "claim_amount",
                "claim_date",
                "diagnosis_code",
                "procedure_code",
                "claim_status",
            ],
            Self::MedicalEvents => &["event_id", "patient_id", "event_date", "event_type", "medical_provider"],
            Self::Providers | Self::ClaimsStream => return None,
        })
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// The column added to one later file, to exercise schema drift.
pub(crate) struct ExtraColumn {
    pub(crate) day: u32,
    pub(crate) file: SourceFile,
    pub(crate) name: &'static str,
}

enum Sink {
    Csv(Box<csv::Writer<File>>),
    Lines(BufWriter<File>),
}

struct OpenFile {
    sink: Sink,
    rows: u64,
}

/// Where a row was written: its file (relative to the landing root) and its
/// 1-based data row (CSV rows after the header; JSON lines).
#[derive(Clone, Debug)]
pub(crate) struct RowRef {
    pub(crate) file: String,
    pub(crate) row: u64,
}

/// Writers for the day folders of one pass.
pub(crate) struct Landing {
    root: PathBuf,
    start: NaiveDate,
    days: std::ops::Range<u32>,
    open: Vec<[Option<OpenFile>; 8]>,
    extra: Option<ExtraColumn>,
    /// Rows written per file, relative path → rows.
    pub(crate) counts: BTreeMap<String, u64>,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn csv_err(path: &Path) -> impl FnOnce(csv::Error) -> Error + '_ {
    move |e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) }
}

impl Landing {
    pub(crate) fn new(root: &Path, start: NaiveDate, days: std::ops::Range<u32>, extra: Option<ExtraColumn>) -> Self {
        let open = days.clone().map(|_| Default::default()).collect();
        Self { root: root.to_path_buf(), start, days, open, extra, counts: BTreeMap::new() }
    }

    pub(crate) fn day_name(start: NaiveDate, day: u32) -> String {
        (start + Duration::days(i64::from(day))).format("%Y-%m-%d").to_string()
    }

    /// Is `day` written by this pass?
    pub(crate) fn covers(&self, day: u32) -> bool {
        self.days.contains(&day)
    }

    pub(crate) fn has_extra_column(&self, day: u32, file: SourceFile) -> bool {
        self.extra.as_ref().is_some_and(|e| e.day == day && e.file == file)
    }

    fn rel(&self, day: u32, file: SourceFile) -> String {
        format!("{}/{}", Self::day_name(self.start, day), file.file_name())
    }

    fn file(&mut self, day: u32, file: SourceFile) -> Result<&mut OpenFile> {
        let slot = (day - self.days.start) as usize;
        if self.open[slot][file.index()].is_none() {
            let dir = self.root.join(Self::day_name(self.start, day));
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let path = dir.join(file.file_name());
            let f = File::create(&path).map_err(io_err(&path))?;
            let sink = match file.header() {
                Some(header) => {
                    let mut w = csv::WriterBuilder::new().buffer_capacity(1 << 16).from_writer(f);
                    let mut cols: Vec<&str> = header.to_vec();
                    if let Some(extra) = self.extra.as_ref().filter(|e| e.day == day && e.file == file) {
                        cols.push(extra.name);
                    }
                    w.write_record(&cols).map_err(csv_err(&path))?;
                    Sink::Csv(Box::new(w))
                }
                None => Sink::Lines(BufWriter::with_capacity(1 << 16, f)),
            };
            self.open[slot][file.index()] = Some(OpenFile { sink, rows: 0 });
        }
        Ok(self.open[slot][file.index()].as_mut().expect("opened above"))
    }

    /// Writes one CSV row and says where it went.
    pub(crate) fn csv_row(&mut self, day: u32, file: SourceFile, row: &[String]) -> Result<RowRef> {
        let rel = self.rel(day, file);
        let open = self.file(day, file)?;
        match &mut open.sink {
            Sink::Csv(w) => w
                .write_record(row)
                .map_err(|e| Error::Io { path: rel.clone().into(), source: std::io::Error::other(e) })?,
            Sink::Lines(_) => return Err(Error::Internal(format!("{rel} is not a CSV file"))),
        }
        open.rows += 1;
        let row = open.rows;
        *self.counts.entry(rel.clone()).or_default() += 1;
        Ok(RowRef { file: rel, row })
    }

    /// Writes one line of a newline-delimited JSON file.
    pub(crate) fn json_line(&mut self, day: u32, file: SourceFile, line: &str) -> Result<RowRef> {
        let rel = self.rel(day, file);
        let open = self.file(day, file)?;
        match &mut open.sink {
            Sink::Lines(w) => {
                w.write_all(line.as_bytes())
                    .and_then(|()| w.write_all(b"\n"))
                    .map_err(|source| Error::Io { path: rel.clone().into(), source })?;
            }
            Sink::Csv(_) => return Err(Error::Internal(format!("{rel} is not a JSON lines file"))),
        }
        open.rows += 1;
        let row = open.rows;
        *self.counts.entry(rel.clone()).or_default() += 1;
        Ok(RowRef { file: rel, row })
    }

    /// Flushes and closes every file of the pass.
    pub(crate) fn finish(self) -> Result<BTreeMap<String, u64>> {
        for (slot, files) in self.open.into_iter().enumerate() {
            for (i, f) in files.into_iter().enumerate() {
                let Some(f) = f else { continue };
                let path = self
                    .root
                    .join(Self::day_name(self.start, self.days.start + slot as u32))
                    .join(SourceFile::ALL[i].file_name());
                match f.sink {
                    Sink::Csv(mut w) => w.flush().map_err(io_err(&path))?,
                    Sink::Lines(mut w) => w.flush().map_err(io_err(&path))?,
                }
            }
        }
        Ok(self.counts)
    }
}

/// `_truth/defects.csv` and `_truth/fraud_labels.csv`.
pub(crate) struct Truth {
    defects: csv::Writer<File>,
    fraud: csv::Writer<File>,
    dir: PathBuf,
    pub(crate) defect_count: u64,
    pub(crate) fraud_count: u64,
    pub(crate) defects_by_kind: BTreeMap<&'static str, u64>,
    pub(crate) fraud_by_pattern: BTreeMap<&'static str, u64>,
}

impl Truth {
    pub(crate) fn create(root: &Path) -> Result<Self> {
        let dir = root.join("_truth");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let open = |name: &str, header: &[&str]| -> Result<csv::Writer<File>> {
            let path = dir.join(name);
            let mut w = csv::Writer::from_writer(File::create(&path).map_err(io_err(&path))?);
            w.write_record(header).map_err(csv_err(&path))?;
            Ok(w)
        };
        Ok(Self {
            defects: open("defects.csv", &["file", "row", "kind", "column", "key", "detail"])?,
            fraud: open("fraud_labels.csv", &["claim_id", "provider_id", "pattern", "intensity"])?,
            dir,
            defect_count: 0,
            fraud_count: 0,
            defects_by_kind: BTreeMap::new(),
            fraud_by_pattern: BTreeMap::new(),
        })
    }

    pub(crate) fn defect(
        &mut self,
        at: &RowRef,
        kind: &'static str,
        column: &str,
        key: &str,
        detail: &str,
    ) -> Result<()> {
        let path = self.dir.join("defects.csv");
        self.defects
            .write_record([at.file.as_str(), &at.row.to_string(), kind, column, key, detail])
            .map_err(csv_err(&path))?;
        self.defect_count += 1;
        *self.defects_by_kind.entry(kind).or_default() += 1;
        Ok(())
    }

    pub(crate) fn fraud(
        &mut self,
        claim_id: &str,
        provider_id: &str,
        pattern: &'static str,
        intensity: &'static str,
    ) -> Result<()> {
        let path = self.dir.join("fraud_labels.csv");
        self.fraud.write_record([claim_id, provider_id, pattern, intensity]).map_err(csv_err(&path))?;
        self.fraud_count += 1;
        *self.fraud_by_pattern.entry(pattern).or_default() += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<TruthCounts> {
        self.defects.flush().map_err(io_err(&self.dir))?;
        self.fraud.flush().map_err(io_err(&self.dir))?;
        Ok(TruthCounts {
            defects: self.defect_count,
            fraud_labels: self.fraud_count,
            defects_by_kind: self.defects_by_kind,
            fraud_by_pattern: self.fraud_by_pattern,
        })
    }
}

/// What `_truth/` lists.
pub(crate) struct TruthCounts {
    pub(crate) defects: u64,
    pub(crate) fraud_labels: u64,
    pub(crate) defects_by_kind: BTreeMap<&'static str, u64>,
    pub(crate) fraud_by_pattern: BTreeMap<&'static str, u64>,
}
