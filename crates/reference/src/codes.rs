//! The code sets under `data/`: parsed once, on first use.

use std::collections::HashSet;
use std::io::Read;
use std::sync::OnceLock;

const ICD10CM_GZ: &[u8] = include_bytes!("../../../data/reference/icd10cm_fy2026_billable.tsv.gz");
const PLACE_OF_SERVICE_TSV: &str = include_str!("../../../data/reference/place_of_service.tsv");
const PROCEDURES_TSV: &str = include_str!("../../../data/codes/procedures.tsv");

/// An embedded code set that does not parse: a fault of the build, never
/// of user input (a unit test parses every set).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line of an embedded file is malformed.
    #[error("embedded {file} line {line}: {reason}")]
    Embedded {
        /// The file under `data/`.
        file: &'static str,
        /// The 1-based line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// One code of the official ICD-10-CM list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icd10cmCode {
    /// Without a dot, as silver stores codes (`E119`).
    pub code: String,
    /// With its dot, as printed (`E11.9`).
    pub dotted: String,
    /// The official description.
    pub description: String,
}

/// The gzip-compressed ICD-10-CM list as embedded: a TSV of `code`,
/// `code_dotted` and `description` with a header line.
pub fn icd10cm_gz() -> &'static [u8] {
    ICD10CM_GZ
}

/// The embedded FY2026 billable ICD-10-CM list (74,719 codes), read once.
pub fn icd10cm() -> &'static [Icd10cmCode] {
    static LIST: OnceLock<Vec<Icd10cmCode>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut text = String::new();
        // Embedded at build time and checked by a unit test: a failure
        // here cannot come from user input.
        if flate2::read::GzDecoder::new(ICD10CM_GZ).read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                let (code, dotted, description) = (parts.next()?, parts.next()?, parts.next()?);
                Some(Icd10cmCode {
                    code: code.to_string(),
                    dotted: dotted.to_string(),
                    description: description.to_string(),
                })
            })
            .collect()
    })
}

/// Whether `code` (upper case, without a dot) is a billable ICD-10-CM code.
pub fn is_icd10cm(code: &str) -> bool {
    static CODES: OnceLock<HashSet<&'static str>> = OnceLock::new();
    CODES.get_or_init(|| icd10cm().iter().map(|c| c.code.as_str()).collect()).contains(code)
}

/// A CMS place-of-service code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceOfService {
    /// The two-digit code.
    pub code: String,
    /// Its description.
    pub description: String,
}

/// The CMS place-of-service codes, in file order.
pub fn place_of_service() -> Vec<PlaceOfService> {
    PLACE_OF_SERVICE_TSV
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (code, description) = l.split_once('\t')?;
            Some(PlaceOfService { code: code.to_string(), description: description.to_string() })
        })
        .collect()
}

/// A procedure code the synthetic insurer bills (`data/codes/procedures.tsv`,
/// written for this project, without AMA descriptions).
#[derive(Clone, Debug, PartialEq)]
pub struct Procedure {
    /// The five-digit code.
    pub code: String,
    /// A coarse family (`em_est`, `lab`, `imaging`, …).
    pub category: String,
    /// The specialty that bills it; `*` for every specialty.
    pub specialty: String,
    /// The evaluation-and-management level (1–5), 0 for other codes.
    pub level: u8,
    /// The typical billed amount in USD.
    pub base_amount: f64,
    /// The codes this code bundles.
    pub components: Vec<String>,
}

/// The procedure table, in file order.
pub fn procedures() -> Result<Vec<Procedure>, Error> {
    let mut out = Vec::new();
    for (i, line) in PROCEDURES_TSV.lines().enumerate().skip(1) {
        let bad = |reason: &str| Error::Embedded { file: "codes/procedures.tsv", line: i + 1, reason: reason.into() };
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 5 {
            return Err(bad("expected 6 fields"));
        }
        out.push(Procedure {
            code: f[0].to_string(),
            category: f[1].to_string(),
            specialty: f[2].to_string(),
            level: f[3].parse().map_err(|_| bad("bad level"))?,
            base_amount: f[4].parse().map_err(|_| bad("bad base_amount"))?,
            components: f
                .get(5)
                .filter(|s| !s.is_empty())
                .map(|s| s.split(';').map(str::to_string).collect())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_code_set_parses_whole() {
        let icd = icd10cm();
        assert_eq!(icd.len(), 74_719, "the README's row count of the FY2026 list");
        assert!(icd.iter().all(|c| !c.code.contains('.') && c.dotted.replace('.', "") == c.code));
        assert!(is_icd10cm("E119") && !is_icd10cm("E11.9") && !is_icd10cm("ZZZ99"));
        let pos = place_of_service();
        assert_eq!(pos.len(), 52);
        assert_eq!(pos[0], PlaceOfService { code: "01".into(), description: "Pharmacy".into() });
        let procedures = procedures().unwrap();
        let office = procedures.iter().find(|p| p.code == "99203").unwrap();
        assert_eq!((office.level, office.base_amount, office.specialty.as_str()), (3, 110.0, "*"));
        assert_eq!(procedures.len(), PROCEDURES_TSV.lines().count() - 1);
    }
}
