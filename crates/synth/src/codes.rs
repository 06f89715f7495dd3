//! Code sets the generator bills: real ICD-10-CM codes and the
//! hand-written procedure table, both from the `reference` crate.

use std::collections::{HashMap, HashSet};

use rand::Rng;
use rand::seq::SliceRandom;

use crate::{Error, Result};

/// Who a diagnosis code is plausible for.
#[derive(Clone, Copy)]
struct Fit {
    sex: Option<Sex>,
    min_age: u32,
    max_age: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Sex {
    Male,
    Female,
}

/// Common diagnoses with a relative weight and the people they fit. Every
/// code is checked against the official list when the code sets load.
const COMMON_ICD: &[(&str, u32, Option<Sex>, u32, u32)] = &[
    ("I10", 60, None, 30, 120),
    ("E11.9", 40, None, 30, 120),
    ("E78.5", 40, None, 35, 120),
    ("J06.9", 45, None, 0, 120),
    ("M54.50", 30, None, 18, 120),
    ("Z00.00", 50, None, 18, 120),
    ("Z00.01", 20, None, 18, 120),
    ("F41.1", 20, None, 18, 120),
    ("F32.A", 15, None, 18, 120),
    ("J45.909", 15, None, 0, 120),
    ("K21.9", 20, None, 25, 120),
    ("E66.9", 20, None, 18, 120),
    ("N39.0", 15, Some(Sex::Female), 18, 120),
    ("R51.9", 10, None, 0, 120),
    ("M17.11", 10, None, 50, 120),
    ("M25.561", 10, None, 18, 120),
    ("I25.10", 15, None, 50, 120),
    ("E03.9", 15, None, 30, 120),
    ("J02.9", 15, None, 0, 60),
    ("R10.9", 10, None, 0, 120),
    ("Z23", 25, None, 0, 120),
    ("G47.33", 10, None, 35, 120),
    ("R05.9", 15, None, 0, 120),
    ("N40.0", 15, Some(Sex::Male), 50, 120),
    ("C61", 4, Some(Sex::Male), 55, 120),
    ("Z12.31", 15, Some(Sex::Female), 40, 120),
    ("N95.1", 8, Some(Sex::Female), 45, 70),
    ("Z34.90", 8, Some(Sex::Female), 18, 44),
    ("O80", 4, Some(Sex::Female), 18, 44),
    ("C50.911", 3, Some(Sex::Female), 35, 120),
    ("M81.0", 6, Some(Sex::Female), 55, 120),
    ("I48.91", 8, None, 60, 120),
    ("J44.9", 8, None, 50, 120),
    ("F17.210", 12, None, 18, 120),
    ("E55.9", 10, None, 18, 120),
    ("D64.9", 6, None, 18, 120),
    ("L70.0", 6, None, 0, 30),
    ("Z30.09", 5, Some(Sex::Female), 18, 45),
];

/// ICD-10-CM code prefixes that fit one sex only.
const MALE_ONLY: &[&str] = &[
    "N40", "N41", "N42", "N43", "N44", "N45", "N46", "N47", "N48", "N49", "N50", "N51", "N52", "N53", "C60", "C61",
    "C62", "C63", "D29", "D40", "Z125",
];
const FEMALE_ONLY: &[&str] = &[
    "O", "N7", "N8", "N90", "N91", "N92", "N93", "N94", "N95", "N96", "N97", "N98", "C51", "C52", "C53", "C54", "C55",
    "C56", "C57", "C58", "D06", "D25", "D26", "D27", "D28", "D39", "Z3", "Z124", "Z1231", "Z01.4", "Z014",
];
/// Prefixes that never fit an adult member: perinatal, congenital, newborn.
const NEVER_ADULT: &[&str] = &["P", "Q", "Z38", "Z3A"];

pub(crate) use reference::Procedure;

pub(crate) struct Codes {
    pub(crate) procedures: Vec<Procedure>,
    by_code: HashMap<String, usize>,
    by_specialty: HashMap<String, Vec<usize>>,
    common: Vec<(String, u32, Fit)>,
    common_total: u32,
    general: Vec<String>,
    male: Vec<String>,
    female: Vec<String>,
    official: HashSet<String>,
    /// Every billable code, dotted, with its description.
    pub(crate) described: Vec<(String, String)>,
    pub(crate) place_of_service: Vec<String>,
}

impl Codes {
    pub(crate) fn load() -> Result<Self> {
        let mut official = HashSet::new();
        let mut described = Vec::new();
        let (mut general, mut male, mut female) = (Vec::new(), Vec::new(), Vec::new());
        let icd = reference::icd10cm();
        if icd.is_empty() {
            return Err(Error::Embedded("the ICD-10-CM list is empty".into()));
        }
        for c in icd {
            let (code, dotted) = (c.code.as_str(), c.dotted.as_str());
            official.insert(code.to_string());
            // 518 official descriptions hold a tab; the reference file the
            // generator writes keeps the text before it.
            let description = c.description.split('\t').next().unwrap_or_default();
            described.push((dotted.to_string(), description.to_string()));
            if NEVER_ADULT.iter().any(|p| code.starts_with(p)) {
                continue;
            }
            if MALE_ONLY.iter().any(|p| code.starts_with(p)) {
                male.push(dotted.to_string());
            } else if FEMALE_ONLY.iter().any(|p| code.starts_with(p)) {
                female.push(dotted.to_string());
            } else {
                general.push(dotted.to_string());
            }
        }
        let mut common = Vec::new();
        for &(code, weight, sex, min_age, max_age) in COMMON_ICD {
            if !official.contains(&code.replace('.', "")) {
                return Err(Error::Embedded(format!("common diagnosis {code} is not in the ICD-10-CM list")));
            }
            common.push((code.to_string(), weight, Fit { sex, min_age, max_age }));
        }
        let common_total = common.iter().map(|c| c.1).sum();

        let procedures = reference::procedures().map_err(|e| Error::Embedded(e.to_string()))?;
        let by_code = procedures.iter().enumerate().map(|(i, p)| (p.code.clone(), i)).collect();
        let mut by_specialty: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in procedures.iter().enumerate() {
            by_specialty.entry(p.specialty.clone()).or_default().push(i);
        }
        let place_of_service = reference::place_of_service().into_iter().map(|p| p.code).collect();
        Ok(Self {
            procedures,
            by_code,
            by_specialty,
            common,
            common_total,
            general,
            male,
            female,
            official,
            described,
            place_of_service,
        })
    }

    pub(crate) fn procedure(&self, code: &str) -> Option<&Procedure> {
        self.by_code.get(code).map(|&i| &self.procedures[i])
    }

    /// The common diagnosis codes, dotted.
    pub(crate) fn common_codes(&self) -> impl Iterator<Item = &str> {
        self.common.iter().map(|c| c.0.as_str())
    }

    /// Is `code` (dotted or not, any case) a billable ICD-10-CM code?
    pub(crate) fn is_official_icd(&self, code: &str) -> bool {
        self.official.contains(&code.replace('.', "").to_ascii_uppercase())
    }

    /// A diagnosis plausible for a person of this age and sex: mostly a
    /// common one, sometimes any billable code that fits.
    pub(crate) fn diagnosis(&self, rng: &mut impl Rng, age: u32, sex: Option<Sex>) -> String {
        if rng.gen_bool(0.75) {
            for _ in 0..8 {
                let mut pick = rng.gen_range(0..self.common_total);
                for (code, weight, fit) in &self.common {
                    if pick < *weight {
                        let sex_ok = fit.sex.is_none() || fit.sex == sex;
                        if sex_ok && (fit.min_age..=fit.max_age).contains(&age) {
                            return code.clone();
                        }
                        break;
                    }
                    pick -= weight;
                }
            }
        }
        let pool = match (sex, rng.gen_bool(0.1)) {
            (Some(Sex::Male), true) => &self.male,
            (Some(Sex::Female), true) => &self.female,
            _ => &self.general,
        };
        pool.choose(rng).cloned().unwrap_or_else(|| "Z00.00".to_string())
    }

    /// An E/M office visit code of the given level (1-5, clamped).
    pub(crate) fn office_visit(level: u8) -> &'static str {
        match level.clamp(1, 5) {
            1 => "99211",
            2 => "99212",
            3 => "99213",
            4 => "99214",
            _ => "99215",
        }
    }

    /// Procedure codes a provider of this specialty bills besides office visits.
    pub(crate) fn specialty_codes(&self, specialty: &str) -> &[usize] {
        self.by_specialty.get(specialty).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Codes that bundle components.
    pub(crate) fn bundles(&self) -> impl Iterator<Item = &Procedure> {
        self.procedures.iter().filter(|p| !p.components.is_empty())
    }
}

/// A code that looks like ICD-10-CM but is not on the official list.
pub(crate) fn invalid_icd(rng: &mut impl Rng, codes: &Codes) -> String {
    loop {
        let letter = (b'A' + rng.gen_range(0..26u8)) as char;
        let code = match rng.gen_range(0..3) {
            0 => format!("{letter}{:02}.{}{}", rng.gen_range(0..100), rng.gen_range(0..10), rng.gen_range(0..10)),
            1 => format!("{letter}{:02}.9X", rng.gen_range(0..100)),
            _ => format!("{}{:03}", rng.gen_range(1..10), rng.gen_range(0..1000)),
        };
        if !codes.is_official_icd(&code) {
            return code;
        }
    }
}
