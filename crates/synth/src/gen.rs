//! The insurer's activity: what each member, patient and provider sends on
//! each day, with the injected defects and fraud.

use std::collections::HashSet;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::Rng;
use rand::seq::{SliceRandom, index::sample};
use rand_distr::{Distribution, Exp, LogNormal, Poisson};
use serde::Serialize;

use crate::Config;
use crate::Result;
use crate::codes::{Codes, invalid_icd};
use crate::db::MemberRow;
use crate::flow::{Flow, PATIENT_SHARE};
use crate::output::{Landing, RowRef, SourceFile, Truth};
use crate::rng::{Domain, Stream, stream};
use crate::world::npi;
use crate::world::{
    EXTERNAL_FACILITIES, Member, PATIENT_PLANS, PATIENT_REGIONS, PLAN_TYPES, PRIMARY_CARE, Patient, Provider, REGIONS,
    date_at, is_weekend, member_id, weighted,
};

/// Kinds of injected defect, as named in `_truth/defects.csv`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Defect {
    ExactDuplicate,
    ConflictingDuplicate,
    InvalidIcd,
    UnknownMember,
    UnknownProvider,
    MissingAmount,
    MalformedJson,
    WrongCase,
    WrongType,
    FutureDate,
    ServiceAfterClaim,
}

impl Defect {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ExactDuplicate => "exact_duplicate",
            Self::ConflictingDuplicate => "conflicting_duplicate",
            Self::InvalidIcd => "invalid_icd",
            Self::UnknownMember => "unknown_member",
            Self::UnknownProvider => "unknown_provider",
            Self::MissingAmount => "missing_amount",
            Self::MalformedJson => "malformed_json",
            Self::WrongCase => "wrong_case",
            Self::WrongType => "wrong_type",
            Self::FutureDate => "future_date",
            Self::ServiceAfterClaim => "service_after_claim",
        }
    }

    /// The defects each file can carry.
    fn kinds(file: SourceFile) -> &'static [Defect] {
        use Defect::*;
        match file {
            SourceFile::Members => &[ExactDuplicate, ConflictingDuplicate, WrongCase, WrongType, FutureDate],
            SourceFile::Providers => &[ExactDuplicate, MalformedJson],
            SourceFile::DiagnosisRef => &[ExactDuplicate, ConflictingDuplicate],
            SourceFile::ClaimsBatch => &[
                ExactDuplicate,
                ConflictingDuplicate,
                InvalidIcd,
                UnknownMember,
                UnknownProvider,
                MissingAmount,
                WrongType,
                WrongCase,
                FutureDate,
                ServiceAfterClaim,
            ],
            SourceFile::ClaimsStream => &[
                ExactDuplicate,
                MalformedJson,
                InvalidIcd,
                UnknownMember,
                UnknownProvider,
                MissingAmount,
                WrongType,
                FutureDate,
            ],
            SourceFile::Patients => &[ExactDuplicate, ConflictingDuplicate, WrongType, WrongCase],
            SourceFile::EhrClaims => &[
                ExactDuplicate,
                ConflictingDuplicate,
                InvalidIcd,
                UnknownMember,
                MissingAmount,
                WrongType,
                WrongCase,
                FutureDate,
            ],
            SourceFile::MedicalEvents => &[ExactDuplicate, UnknownMember, WrongType, FutureDate],
        }
    }
}

/// Fraud patterns, as named in `_truth/fraud_labels.csv`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pattern {
    PhantomBilling,
    Upcoding,
    Unbundling,
    DuplicateBilling,
    ExcessiveServices,
    AmountOutlier,
    WeekendSpike,
    AfterCoverageEnd,
    CollusionRing,
}

/// Patterns injected claim by claim; the other two need a particular member.
const CLAIM_PATTERNS: [Pattern; 7] = [
    Pattern::PhantomBilling,
    Pattern::Upcoding,
    Pattern::Unbundling,
    Pattern::DuplicateBilling,
    Pattern::ExcessiveServices,
    Pattern::AmountOutlier,
    Pattern::WeekendSpike,
];
const ALL_PATTERNS: usize = 9;

impl Pattern {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::PhantomBilling => "phantom_billing",
            Self::Upcoding => "upcoding",
            Self::Unbundling => "unbundling",
            Self::DuplicateBilling => "duplicate_billing",
            Self::ExcessiveServices => "excessive_services",
            Self::AmountOutlier => "amount_outlier",
            Self::WeekendSpike => "weekend_spike",
            Self::AfterCoverageEnd => "billing_after_coverage_end",
            Self::CollusionRing => "collusion_ring",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Intensity {
    Low,
    Medium,
    High,
}

impl Intensity {
    fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    fn draw(rng: &mut Stream) -> Self {
        match rng.gen_range(0..100) {
            0..=39 => Self::Low,
            40..=74 => Self::Medium,
            _ => Self::High,
        }
    }
}

/// Which providers commit which fraud, and the collusion ring.
struct FraudPlan {
    by_pattern: Vec<Vec<usize>>,
    ring_providers: Vec<usize>,
    ring_members: HashSet<u64>,
    /// Mean after-coverage claims per member whose coverage had ended.
    after_coverage_rate: f64,
    /// Mean collusion claims per ring member.
    ring_rate: f64,
}

impl FraudPlan {
    fn new(cfg: &Config, providers: usize, flow: Flow) -> Self {
        let mut rng = stream(cfg.seed, Domain::Fraud, 0);
        let mut order: Vec<usize> = (0..providers).collect();
        order.shuffle(&mut rng);
        let per_pattern = (providers / 200).max(1);
        let mut next = order.into_iter();
        let by_pattern = (0..ALL_PATTERNS - 1).map(|_| next.by_ref().take(per_pattern).collect()).collect();
        let ring_providers: Vec<usize> = next.take(5).collect();
        let mut ring_rng = stream(cfg.seed, Domain::Ring, 0);
        let ring_size = (cfg.members / 400).clamp(5, 50).min(cfg.members) as usize;
        let ring_members =
            sample(&mut ring_rng, cfg.members as usize, ring_size).into_iter().map(|i| i as u64).collect();
        // Each pattern gets about an equal share of the fraudulent claims.
        let per_pattern_claims = cfg.fraud_rate * flow.claims_per_member(cfg.days) / ALL_PATTERNS as f64;
        // About 6.5% of members' coverage had ended before the history starts.
        let after_coverage_rate = per_pattern_claims / 0.065;
        let ring_rate = per_pattern_claims * cfg.members as f64 / ring_size as f64;
        Self { by_pattern, ring_providers, ring_members, after_coverage_rate, ring_rate }
    }
}

/// One enrollment-system claim before it is written.
#[derive(Clone)]
struct Claim {
    id: String,
    member_id: String,
    provider: usize,
    claim_date: NaiveDate,
    service_date: NaiveDate,
    amount: f64,
    icd: Vec<String>,
    cpt: Vec<String>,
    claim_type: &'static str,
    channel: &'static str,
    notes: &'static str,
    arrival: u32,
    in_batch: bool,
    denial: f64,
    label: Option<(Pattern, Intensity)>,
}

#[derive(Serialize, Clone)]
struct StreamEvent {
    #[serde(rename = "ClaimID")]
    claim_id: String,
    #[serde(rename = "MemberID")]
    member_id: String,
    #[serde(rename = "ProviderID")]
    provider_id: String,
    #[serde(rename = "ClaimDate")]
    claim_date: String,
    #[serde(rename = "Amount")]
    amount: serde_json::Value,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "ICD10Codes")]
    icd: Vec<String>,
    #[serde(rename = "CPTCodes")]
    cpt: Vec<String>,
    #[serde(rename = "EventTimestamp")]
    event_timestamp: String,
}

#[derive(Serialize)]
struct LocationRecord<'a> {
    #[serde(rename = "Address")]
    address: &'a str,
    #[serde(rename = "City")]
    city: &'a str,
    #[serde(rename = "State")]
    state: &'a str,
}

#[derive(Serialize)]
struct ProviderRecord<'a> {
    #[serde(rename = "ProviderID")]
    provider_id: &'a str,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Specialties")]
    specialties: &'a [&'static str],
    #[serde(rename = "Locations")]
    locations: Vec<LocationRecord<'a>>,
    #[serde(rename = "IsActive")]
    is_active: bool,
    #[serde(rename = "TIN")]
    tin: &'a str,
    #[serde(rename = "LastVerified")]
    last_verified: String,
}

const NOTES: &[&str] = &[
    "Patient reported \"mild\" pain, follow-up in 2 weeks",
    "Referral from PCP; see chart",
    "Resubmitted, corrected modifier",
    "Prior auth #A-2291 on file",
    "Telehealth visit",
];
const EVENT_TYPES: &[(&str, u32)] = &[
    ("Office Visit", 35),
    ("Lab Test", 20),
    ("Prescription Fill", 15),
    ("Imaging", 8),
    ("Telehealth", 10),
    ("ER Visit", 5),
    ("Procedure", 5),
    ("Hospital Admission", 2),
];
const CLAIM_TYPES: &[(&str, u32)] = &[("Professional", 70), ("Institutional", 20), ("Outpatient", 10)];
const CHANNELS: &[(&str, u32)] = &[("EDI", 70), ("Portal", 20), ("Paper", 10)];
const EHR_STATUSES: &[(&str, u32)] = &[("submitted", 30), ("approved", 25), ("denied", 10), ("paid", 35)];

fn ymd(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn ts_space(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn ts_iso(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn money(x: f64) -> String {
    format!("{x:.2}")
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A diagnosis code as senders write it: usually dotted, sometimes not.
fn icd_as_sent(rng: &mut Stream, dotted: String) -> String {
    if rng.gen_bool(0.3) { dotted.replace('.', "") } else { dotted }
}

/// Mixed letter case, as some senders write vocabulary values.
fn vary_case(rng: &mut Stream, s: &str, p: f64) -> String {
    if !rng.gen_bool(p) {
        return s.to_string();
    }
    if rng.gen_bool(0.5) { s.to_uppercase() } else { s.to_lowercase() }
}

/// A number written so that it does not parse.
fn garble_number(rng: &mut Stream, s: &str) -> String {
    match rng.gen_range(0..3) {
        0 if s.contains('0') => s.replacen('0', "O", 1),
        0 | 1 => "N/A".to_string(),
        _ => format!("{s} USD"),
    }
}

/// Writes rows (and the defects injected into them) into the landing
/// folder, for the days this pass covers.
pub(crate) struct Out<'a> {
    pub(crate) landing: &'a mut Landing,
    pub(crate) truth: &'a mut Truth,
}

impl Out<'_> {
    fn csv(&mut self, day: u32, file: SourceFile, row: &[String]) -> Result<Option<RowRef>> {
        if !self.landing.covers(day) {
            return Ok(None);
        }
        self.landing.csv_row(day, file, row).map(Some)
    }

    fn line(&mut self, day: u32, file: SourceFile, line: &str) -> Result<Option<RowRef>> {
        if !self.landing.covers(day) {
            return Ok(None);
        }
        self.landing.json_line(day, file, line).map(Some)
    }

    fn defect(&mut self, at: Option<RowRef>, kind: Defect, column: &str, key: &str, detail: &str) -> Result<()> {
        match at {
            Some(at) => self.truth.defect(&at, kind.name(), column, key, detail),
            None => Ok(()),
        }
    }
}

/// The generator's fixed world: code sets, providers and the fraud plan.
pub(crate) struct World<'c> {
    cfg: &'c Config,
    codes: Codes,
    pub(crate) providers: Vec<Provider>,
    primary_care: Vec<usize>,
    fraud: FraudPlan,
    flow: Flow,
}

impl<'c> World<'c> {
    pub(crate) fn new(cfg: &'c Config, codes: Codes) -> Self {
        let count = provider_count(cfg.members);
        let providers: Vec<Provider> =
            (0..count).map(|i| Provider::generate(cfg.seed, i, cfg.start_date, cfg.days)).collect();
        let primary_care = providers
            .iter()
            .enumerate()
            .filter(|(_, p)| PRIMARY_CARE.contains(&p.main_specialty()))
            .map(|(i, _)| i)
            .collect();
        let flow = Flow::of(cfg);
        let fraud = FraudPlan::new(cfg, providers.len(), flow);
        Self { cfg, codes, providers, primary_care, fraud, flow }
    }

    fn date(&self, day: u32) -> NaiveDate {
        self.cfg.start_date + Duration::days(i64::from(day))
    }

    fn day_of(&self, date: NaiveDate) -> i64 {
        (date - self.cfg.start_date).num_days()
    }

    fn defect_for(&self, rng: &mut Stream, file: SourceFile) -> Option<Defect> {
        if self.cfg.defect_rate <= 0.0 || !rng.gen_bool(self.cfg.defect_rate) {
            return None;
        }
        let kinds = Defect::kinds(file);
        Some(kinds[rng.gen_range(0..kinds.len())])
    }

    fn unknown_member(&self, rng: &mut Stream) -> String {
        member_id(self.cfg.members + rng.gen_range(1..5_000_000))
    }

    fn future_date(&self, day: u32, rng: &mut Stream) -> NaiveDate {
        self.date(day) + Duration::days(rng.gen_range(30..1500))
    }

    /// Writes a CSV row, with a defect now and then. `mutate` applies a
    /// defect other than an exact duplicate and names the column it hit.
    fn emit_csv(
        &self,
        out: &mut Out<'_>,
        rng: &mut Stream,
        day: u32,
        file: SourceFile,
        row: Vec<String>,
        mutate: impl FnOnce(Defect, &mut Vec<String>, &mut Stream) -> (&'static str, String),
    ) -> Result<()> {
        let defect = self.defect_for(rng, file);
        // Every source file has its key in the first column.
        let key = row[0].clone();
        match defect {
            None => {
                out.csv(day, file, &row)?;
            }
            Some(Defect::ExactDuplicate) => {
                out.csv(day, file, &row)?;
                let at = out.csv(day, file, &row)?;
                out.defect(at, Defect::ExactDuplicate, "", &key, "row repeated")?;
            }
            Some(Defect::ConflictingDuplicate) => {
                out.csv(day, file, &row)?;
                let mut dup = row;
                let (column, detail) = mutate(Defect::ConflictingDuplicate, &mut dup, rng);
                let at = out.csv(day, file, &dup)?;
                out.defect(at, Defect::ConflictingDuplicate, column, &key, &detail)?;
            }
            Some(kind) => {
                let mut row = row;
                let (column, detail) = mutate(kind, &mut row, rng);
                let at = out.csv(day, file, &row)?;
                out.defect(at, kind, column, &key, &detail)?;
            }
        }
        Ok(())
    }

    /// `providers.json` (every provider on day 0, then each change) and
    /// `diagnosis_ref.csv` (day 0).
    pub(crate) fn write_reference(&self, out: &mut Out<'_>) -> Result<()> {
        for (i, p) in self.providers.iter().enumerate() {
            let mut rng = stream(self.cfg.seed, Domain::ProviderFile, i as u64);
            for (day, state) in &p.versions {
                let record = ProviderRecord {
                    provider_id: &p.id,
                    name: &p.name,
                    specialties: &state.specialties,
                    locations: state
                        .locations
                        .iter()
                        .map(|l| LocationRecord { address: &l.address, city: &l.city, state: &l.state })
                        .collect(),
                    is_active: state.active,
                    tin: &p.tin,
                    last_verified: ymd(state.last_verified),
                };
                let line = serde_json::to_string(&record)
                    .map_err(|e| crate::Error::Internal(format!("provider record: {e}")))?;
                match self.defect_for(&mut rng, SourceFile::Providers) {
                    Some(Defect::MalformedJson) => {
                        let cut = rng.gen_range(1..line.len() - 1);
                        let at = out.line(*day, SourceFile::Providers, &line[..cut])?;
                        out.defect(at, Defect::MalformedJson, "", &p.id, "line truncated")?;
                    }
                    Some(_) => {
                        out.line(*day, SourceFile::Providers, &line)?;
                        let at = out.line(*day, SourceFile::Providers, &line)?;
                        out.defect(at, Defect::ExactDuplicate, "", &p.id, "line repeated")?;
                    }
                    None => {
                        out.line(*day, SourceFile::Providers, &line)?;
                    }
                }
            }
        }

        let mut rng = stream(self.cfg.seed, Domain::DiagnosisRef, 0);
        let mut chosen: Vec<&(String, String)> =
            self.codes.described.iter().filter(|(c, _)| self.codes.common_codes().any(|k| k == c)).collect();
        let extra = (self.cfg.members as usize * 2).clamp(500, 5000).min(self.codes.described.len());
        chosen
            .extend(sample(&mut rng, self.codes.described.len(), extra).into_iter().map(|i| &self.codes.described[i]));
        chosen.sort();
        chosen.dedup();
        for (code, description) in chosen {
            let row = vec![code.clone(), description.clone()];
            self.emit_csv(out, &mut rng, 0, SourceFile::DiagnosisRef, row, |_, row, rng| {
                row[1] = if rng.gen_bool(0.5) { row[1].to_uppercase() } else { format!("{} (see also)", row[1]) };
                ("Description", "same code, different description".to_string())
            })?;
        }
        Ok(())
    }

    /// Everything about one member: its member-extract rows, its patient
    /// record, claims and events. Returns the member table row of the last
    /// day, if the member is enrolled then.
    pub(crate) fn member(&self, index: u64, out: &mut Out<'_>) -> Result<Option<MemberRow>> {
        let cfg = self.cfg;
        let (member, mut rng) = Member::generate(cfg.seed, index, cfg.start_date, cfg.days, self.flow);
        let name = member.name();
        for (day, state) in member.days.iter().enumerate() {
            let Some(state) = state else { continue };
            let day = day as u32;
            let row = vec![
                member.id.clone(),
                name.clone(),
                ymd(member.dob),
                member.gender.to_string(),
                REGIONS[state.region].to_string(),
                PLAN_TYPES[state.plan].0.to_string(),
                ymd(member.effective),
                state.email.clone(),
                match state.active {
                    Some(true) => "1.0".to_string(),
                    Some(false) => "0.0".to_string(),
                    None => String::new(),
                },
                ts_space(state.last_updated),
            ];
            self.emit_csv(out, &mut rng, day, SourceFile::Members, row, |kind, row, rng| match kind {
                Defect::ConflictingDuplicate => {
                    row[7] = format!("x{}", row[7]);
                    ("Email", "same MemberID and LastUpdated, different Email".to_string())
                }
                Defect::WrongCase => {
                    row[3] = row[3].to_lowercase();
                    ("Gender", "lower-case gender".to_string())
                }
                Defect::WrongType => {
                    if rng.gen_bool(0.5) {
                        row[2] = member.dob.format("%d/%m/%Y").to_string();
                        ("DOB", "date as dd/mm/yyyy".to_string())
                    } else {
                        row[8] = "yes".to_string();
                        ("IsActive", "flag as text".to_string())
                    }
                }
                _ => {
                    row[2] = ymd(self.future_date(day, rng));
                    ("DOB", "born in the future".to_string())
                }
            })?;
        }

        let pcp = if self.primary_care.is_empty() {
            rng.gen_range(0..self.providers.len())
        } else {
            self.primary_care[rng.gen_range(0..self.primary_care.len())]
        };
        let present: Vec<u32> = member.present_days().collect();
        if rng.gen_bool(PATIENT_SHARE) {
            self.patient(&member, &present, pcp, &mut rng, out)?;
        }
        self.enrollment_claims(&member, &present, pcp, &mut rng, out)?;

        let last = cfg.days as usize - 1;
        Ok(member.days[last].as_ref().map(|state| MemberRow {
            member_id: member.id.clone(),
            name,
            dob: ymd(member.dob),
            gender: member.gender.to_string(),
            region: REGIONS[state.region].to_string(),
            plan_type: PLAN_TYPES[state.plan].0.to_string(),
            effective_date: ymd(member.effective),
            email: state.email.clone(),
            is_active: state.active.map(|a| if a { 1.0 } else { 0.0 }),
            last_updated: ts_space(state.last_updated),
        }))
    }

    /// The member's care-management (EHR) records: the patient rows, then
    /// the EHR claims and medical events on the days the member is present.
    fn patient(&self, m: &Member, present: &[u32], pcp: usize, rng: &mut Stream, out: &mut Out<'_>) -> Result<()> {
        let cfg = self.cfg;
        let patient = Patient::generate(m, rng, cfg.start_date, cfg.days, self.flow);
        self.patient_rows(m, &patient, rng, out)?;

        let days: Vec<u32> = present.iter().copied().filter(|d| *d >= patient.first_day).collect();
        if days.is_empty() {
            return Ok(());
        }
        self.ehr_claims(m, &days, pcp, rng, out)?;
        self.medical_events(m, &days, pcp, rng, out)
    }

    /// One `patients.csv` row per state of the patient's history.
    fn patient_rows(&self, m: &Member, patient: &Patient, rng: &mut Stream, out: &mut Out<'_>) -> Result<()> {
        let sex = match m.gender {
            'M' => "MALE",
            'F' => "FEMALE",
            _ if rng.gen_bool(0.5) => "MALE",
            _ => "FEMALE",
        };
        let region = m.days[patient.first_day as usize].as_ref().map_or(0, |s| s.region);
        for (day, state, ts) in &patient.rows {
            let age = m.age_on(self.date(*day));
            let charges = state.charges(age, rng);
            let row = vec![
                m.id.clone(),
                m.first.to_string(),
                m.last.to_string(),
                age.to_string(),
                sex.to_string(),
                PATIENT_REGIONS[region].to_string(),
                format!("{:.1}", state.bmi),
                if state.smoker { "yes" } else { "no" }.to_string(),
                state.children.to_string(),
                money(charges),
                PATIENT_PLANS[state.plan].to_string(),
                ymd(m.effective),
                ts_space(*ts),
            ];
            self.emit_csv(out, rng, *day, SourceFile::Patients, row, |kind, row, rng| match kind {
                Defect::ConflictingDuplicate => {
                    row[6] = format!("{:.1}", state.bmi + 1.5);
                    ("bmi", "same patient_id and timestamp, different bmi".to_string())
                }
                Defect::WrongCase => {
                    row[4] = if sex == "MALE" { "Male" } else { "female" }.to_string();
                    ("sex", "mixed-case sex".to_string())
                }
                _ => {
                    if rng.gen_bool(0.5) {
                        row[3] = "forty".to_string();
                        ("age", "age as a word".to_string())
                    } else {
                        row[6] = "n/a".to_string();
                        ("bmi", "bmi as text".to_string())
                    }
                }
            })?;
        }

        Ok(())
    }

    /// The patient's EHR claims (`claims.csv`), a quarter of them sent again
    /// later with a newer status.
    fn ehr_claims(&self, m: &Member, days: &[u32], pcp: usize, rng: &mut Stream, out: &mut Out<'_>) -> Result<()> {
        let cfg = self.cfg;
        let n_claims = Poisson::new(self.flow.ehr_claims(days.len())).expect("valid poisson").sample(rng) as u32;
        for k in 0..n_claims {
            let day = days[rng.gen_range(0..days.len())];
            let claim_date = self.date(day) - Duration::days(rng.gen_range(0..=3));
            let provider =
                &self.providers[if rng.gen_bool(0.7) { pcp } else { rng.gen_range(0..self.providers.len()) }];
            let code = self.procedure_for(provider.main_specialty(), rng);
            let base = self.codes.procedure(&code).map_or(100.0, |p| p.base_amount);
            let amount = round2(base * LogNormal::new(0.0, 0.25).expect("valid lognormal").sample(rng));
            let amount = if self.flow.is_steady() { self.facility(rng, amount).0 } else { amount };
            let diagnosis = self.codes.diagnosis(rng, m.age_on(claim_date), m.sex());
            let diagnosis = icd_as_sent(rng, diagnosis);
            let status = if self.flow.is_steady() { "submitted" } else { *weighted(rng, EHR_STATUSES) };
            let id = format!("EC{:08}{:02}", m.index + 1, k);
            let row =
                vec![id.clone(), m.id.clone(), money(amount), ymd(claim_date), diagnosis, code, status.to_string()];
            self.emit_ehr_claim(out, rng, day, row.clone())?;
            if self.flow.is_steady() {
                self.ehr_decisions(out, rng, self.date(day), row)?;
                continue;
            }
            // A quarter of the claims are sent again later with a newer status.
            if rng.gen_bool(0.25) {
                let later = day + rng.gen_range(1..=5);
                let next = match status {
                    "submitted" => {
                        if rng.gen_bool(0.8) {
                            "approved"
                        } else {
                            "denied"
                        }
                    }
                    "approved" => "paid",
                    other => other,
                };
                if later < cfg.days && next != status {
                    let mut row = row;
                    row[6] = next.to_string();
                    self.emit_ehr_claim(out, rng, later, row)?;
                }
            }
        }

        Ok(())
    }

    /// In the steady flow, a care-management claim's decision (one in ten
    /// denied) and payment, each sent as a row of its own on the day it
    /// happens, with the enrollment system's timing, counted from the day
    /// the claim `arrived` (a decision sent before its claim would lose to
    /// it, silver ordering EHR rows by landing day).
    fn ehr_decisions(&self, out: &mut Out<'_>, rng: &mut Stream, arrived: NaiveDate, row: Vec<String>) -> Result<()> {
        let (decide, pay) = self.flow.adjudication_days();
        let step = |mean: f64, rng: &mut Stream| {
            Duration::days((1.0 + Exp::new(1.0 / mean).expect("valid exp").sample(rng)).min(45.0) as i64)
        };
        let decided = arrived + step(decide, rng);
        let denied = rng.gen_bool(0.1);
        let mut updates = vec![(decided, if denied { "denied" } else { "approved" })];
        if !denied {
            updates.push((decided + step(pay, rng), "paid"));
        }
        for (date, status) in updates {
            let day = self.day_of(date);
            if day < 0 || day >= i64::from(self.cfg.days) {
                continue; // not arrived yet
            }
            let mut row = row.clone();
            row[6] = status.to_string();
            self.emit_ehr_claim(out, rng, day as u32, row)?;
        }
        Ok(())
    }

    /// In the steady flow, some claims are facility claims, whose amounts
    /// dwarf an office visit's: an inpatient stay (1.2% of claims, about
    /// $22,000) or an outpatient facility claim (20%, about $4,500: surgery,
    /// imaging, an emergency visit), scaled so that a member-year costs
    /// about the same whatever its claim count. They make the loss ratio a
    /// real plan's (`docs/economics.md`). Returns the amount and, for a
    /// facility claim, its claim type.
    fn facility(&self, rng: &mut Stream, amount: f64) -> (f64, Option<&'static str>) {
        let scale = self.flow.cost_scale();
        let extra = |mean: f64, sigma: f64, rng: &mut Stream| {
            let mu = mean.ln() - sigma * sigma / 2.0;
            LogNormal::new(mu, sigma).expect("valid lognormal").sample(rng) * scale
        };
        match rng.gen_range(0..1000) {
            0..12 => (round2(amount + extra(22_000.0, 0.6, rng)), Some("Institutional")),
            12..212 => (round2(amount + extra(4_500.0, 0.7, rng)), Some("Outpatient")),
            _ => (amount, None),
        }
    }

    /// The patient's medical events (`medical_events.csv`).
    fn medical_events(&self, m: &Member, days: &[u32], pcp: usize, rng: &mut Stream, out: &mut Out<'_>) -> Result<()> {
        let n_events = Poisson::new(self.flow.events(days.len())).expect("valid poisson").sample(rng) as u32;
        for k in 0..n_events {
            let day = days[rng.gen_range(0..days.len())];
            let event_date = self.date(day) - Duration::days(rng.gen_range(0..=2));
            let event_type = *weighted(rng, EVENT_TYPES);
            let provider = match rng.gen_range(0..100) {
                0..=69 => self.providers[pcp].id.clone(),
                70..=79 => self.providers[rng.gen_range(0..self.providers.len())].id.clone(),
                80..=94 => self.providers[pcp].name.clone(),
                _ => EXTERNAL_FACILITIES[rng.gen_range(0..EXTERNAL_FACILITIES.len())].to_string(),
            };
            let row = vec![
                format!("EV{:08}{:02}", m.index + 1, k),
                m.id.clone(),
                ymd(event_date),
                event_type.to_string(),
                provider,
            ];
            self.emit_csv(out, rng, day, SourceFile::MedicalEvents, row, |kind, row, rng| match kind {
                Defect::UnknownMember => {
                    row[1] = self.unknown_member(rng);
                    ("patient_id", "patient not in any feed".to_string())
                }
                Defect::FutureDate => {
                    row[2] = ymd(self.future_date(day, rng));
                    ("event_date", "event date in the future".to_string())
                }
                _ => {
                    row[2] = event_date.format("%Y-%d-%m").to_string().replace('-', "/");
                    ("event_date", "date as yyyy/dd/mm".to_string())
                }
            })?;
        }
        Ok(())
    }

    fn emit_ehr_claim(&self, out: &mut Out<'_>, rng: &mut Stream, day: u32, row: Vec<String>) -> Result<()> {
        self.emit_csv(out, rng, day, SourceFile::EhrClaims, row, |kind, row, rng| match kind {
            Defect::ConflictingDuplicate => {
                row[2] = money(row[2].parse::<f64>().unwrap_or(100.0) + f64::from(rng.gen_range(5..500)));
                ("claim_amount", "same claim_id, different amount".to_string())
            }
            Defect::InvalidIcd => {
                row[4] = invalid_icd(rng, &self.codes);
                ("diagnosis_code", "not an ICD-10-CM code".to_string())
            }
            Defect::UnknownMember => {
                row[1] = self.unknown_member(rng);
                ("patient_id", "patient not in any feed".to_string())
            }
            Defect::MissingAmount => {
                row[2] = String::new();
                ("claim_amount", "empty amount".to_string())
            }
            Defect::WrongType => {
                row[2] = garble_number(rng, &row[2]);
                ("claim_amount", "amount does not parse".to_string())
            }
            Defect::WrongCase => {
                row[6] = row[6].to_uppercase();
                ("claim_status", "upper-case status".to_string())
            }
            _ => {
                row[3] = ymd(self.future_date(day, rng));
                ("claim_date", "claim date in the future".to_string())
            }
        })
    }

    /// A procedure code a provider of this specialty bills.
    fn procedure_for(&self, specialty: &str, rng: &mut Stream) -> String {
        let own = self.codes.specialty_codes(specialty);
        if own.is_empty() || rng.gen_bool(0.5) {
            Codes::office_visit(self.visit_level(rng)).to_string()
        } else {
            self.codes.procedures[own[rng.gen_range(0..own.len())]].code.clone()
        }
    }

    fn visit_level(&self, rng: &mut Stream) -> u8 {
        match rng.gen_range(0..100) {
            0..=14 => 2,
            15..=59 => 3,
            60..=89 => 4,
            _ => 5,
        }
    }

    fn amount_of(&self, cpt: &[String], region: usize, rng: &mut Stream) -> f64 {
        let factor = [1.15, 1.05, 0.95, 1.0][region % 4];
        let noise = LogNormal::new(0.0, 0.2).expect("valid lognormal");
        round2(
            cpt.iter()
                .map(|c| self.codes.procedure(c).map_or(100.0, |p| p.base_amount) * noise.sample(rng))
                .sum::<f64>()
                * factor,
        )
    }

    fn enrollment_claims(
        &self,
        m: &Member,
        present: &[u32],
        pcp: usize,
        rng: &mut Stream,
        out: &mut Out<'_>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let mut arrivals: Vec<u32> = Vec::new();
        if !present.is_empty() {
            let n = Poisson::new(self.flow.enrollment_claims(present.len())).expect("valid poisson").sample(rng) as u32;
            arrivals.extend((0..n).map(|_| present[rng.gen_range(0..present.len())]));
        }
        // Some claims arrive the day before their member is enrolled.
        if m.join_day > 0 && rng.gen_bool(0.3) {
            arrivals.push(m.join_day - 1);
        }
        let region = present.first().and_then(|d| m.days[*d as usize].as_ref()).map_or(0, |s| s.region);
        let mut seq = 0u32;
        let mut next_id = || {
            seq += 1;
            format!("C{:08}{:03}", m.index + 1, seq)
        };
        for arrival in arrivals {
            let claim = self.normal_claim(m, next_id(), arrival, pcp, region, rng);
            let claims = if cfg.fraud_rate > 0.0
                && rng.gen_bool((cfg.fraud_rate * CLAIM_PATTERNS.len() as f64 / ALL_PATTERNS as f64).min(1.0))
            {
                let pattern = CLAIM_PATTERNS[rng.gen_range(0..CLAIM_PATTERNS.len())];
                self.commit_fraud(pattern, claim, region, rng, &mut next_id)
            } else {
                vec![claim]
            };
            for claim in claims {
                self.emit_claim(out, rng, claim)?;
            }
        }

        if let Some(ended) = m.terminated_on
            && cfg.fraud_rate > 0.0
        {
            let n = Poisson::new(self.fraud.after_coverage_rate.max(1e-9)).expect("valid poisson").sample(rng) as u32;
            for _ in 0..n {
                let arrival = rng.gen_range(0..cfg.days);
                let mut claim = self.normal_claim(m, next_id(), arrival, pcp, region, rng);
                claim.service_date = claim.service_date.max(ended + Duration::days(1));
                let gap = (claim.service_date - ended).num_days();
                let intensity = match gap {
                    0..=30 => Intensity::Low,
                    31..=120 => Intensity::Medium,
                    _ => Intensity::High,
                };
                claim.provider = self.fraud_provider(Pattern::AfterCoverageEnd, rng);
                claim.label = Some((Pattern::AfterCoverageEnd, intensity));
                claim.in_batch = true;
                claim.denial = 0.3;
                self.emit_claim(out, rng, claim)?;
            }
        }

        if self.fraud.ring_members.contains(&m.index) && cfg.fraud_rate > 0.0 && !self.fraud.ring_providers.is_empty() {
            let n = Poisson::new(self.fraud.ring_rate.max(1e-9)).expect("valid poisson").sample(rng) as u32;
            for _ in 0..n {
                let arrival = present.first().map_or(0, |first| rng.gen_range(*first..cfg.days));
                let mut claim = self.normal_claim(m, next_id(), arrival, pcp, region, rng);
                let intensity = Intensity::draw(rng);
                claim.provider = self.fraud.ring_providers[rng.gen_range(0..self.fraud.ring_providers.len())];
                claim.cpt = vec![Codes::office_visit(4).to_string(), "97110".to_string()];
                let inflate = match intensity {
                    Intensity::Low => 1.0,
                    Intensity::Medium => 1.3,
                    Intensity::High => 1.8,
                };
                claim.amount = round2(self.amount_of(&claim.cpt, region, rng) * inflate);
                claim.label = Some((Pattern::CollusionRing, intensity));
                claim.in_batch = true;
                self.emit_claim(out, rng, claim)?;
            }
        }
        Ok(())
    }

    fn normal_claim(&self, m: &Member, id: String, arrival: u32, pcp: usize, region: usize, rng: &mut Stream) -> Claim {
        let claim_date = self.date(arrival) - Duration::days(rng.gen_range(0..=2));
        let lag = rng.gen_range(0..=30).min(rng.gen_range(0..=30));
        let service_date = claim_date - Duration::days(lag);
        let provider = if rng.gen_bool(0.7) { pcp } else { rng.gen_range(0..self.providers.len()) };
        let specialty = self.providers[provider].main_specialty();
        let mut cpt = Vec::new();
        match specialty {
            "Laboratory" | "Radiology" => {}
            "Emergency Medicine" => cpt.push(["99283", "99284", "99285"][rng.gen_range(0..3)].to_string()),
            _ => cpt.push(Codes::office_visit(self.visit_level(rng)).to_string()),
        }
        let own = self.codes.specialty_codes(specialty);
        if !own.is_empty() && (cpt.is_empty() || rng.gen_bool(0.35)) {
            cpt.push(self.codes.procedures[own[rng.gen_range(0..own.len())]].code.clone());
        }
        let age = m.age_on(service_date);
        let icd = (0..rng.gen_range(1..=3)).map(|_| self.codes.diagnosis(rng, age, m.sex())).collect::<Vec<_>>();
        let icd = icd.into_iter().map(|c| icd_as_sent(rng, c)).collect();
        let amount = self.amount_of(&cpt, region, rng);
        let claim_type = if specialty == "Emergency Medicine" { "Institutional" } else { *weighted(rng, CLAIM_TYPES) };
        let (amount, claim_type) = match self.flow.is_steady() {
            true => {
                let (amount, facility) = self.facility(rng, amount);
                (amount, facility.unwrap_or(claim_type))
            }
            false => (amount, claim_type),
        };
        let channel = *weighted(rng, CHANNELS);
        Claim {
            id,
            member_id: m.id.clone(),
            provider,
            claim_date,
            service_date,
            amount,
            icd,
            cpt,
            claim_type,
            channel,
            notes: if rng.gen_bool(0.15) { NOTES[rng.gen_range(0..NOTES.len())] } else { "" },
            arrival,
            in_batch: rng.gen_bool(0.85),
            denial: 0.12,
            label: None,
        }
    }

    fn fraud_provider(&self, pattern: Pattern, rng: &mut Stream) -> usize {
        let pool = &self.fraud.by_pattern[pattern.index()];
        pool[rng.gen_range(0..pool.len())]
    }

    /// Turns a normal claim into the given fraud. Some patterns add a claim.
    fn commit_fraud(
        &self,
        pattern: Pattern,
        mut claim: Claim,
        region: usize,
        rng: &mut Stream,
        next_id: &mut impl FnMut() -> String,
    ) -> Vec<Claim> {
        let intensity = Intensity::draw(rng);
        claim.provider = self.fraud_provider(pattern, rng);
        claim.in_batch = true;
        claim.denial = 0.3;
        claim.label = Some((pattern, intensity));
        match pattern {
            Pattern::PhantomBilling => {
                claim.cpt = match intensity {
                    Intensity::Low => vec!["99213".to_string()],
                    Intensity::Medium => vec!["99214".to_string(), "85025".to_string()],
                    Intensity::High => vec!["99215".to_string(), "93306".to_string()],
                };
                claim.icd = vec!["Z00.00".to_string()];
                claim.amount = self.amount_of(&claim.cpt, region, rng);
            }
            Pattern::Upcoding => {
                let pos =
                    claim.cpt.iter().position(|c| self.codes.procedure(c).is_some_and(|p| p.category == "em_est"));
                let level = pos.and_then(|i| self.codes.procedure(&claim.cpt[i])).map_or(3, |p| p.level);
                let raised = match intensity {
                    Intensity::Low => level + 1,
                    Intensity::Medium => level + 2,
                    Intensity::High => 5,
                }
                .clamp(4, 5);
                let code = Codes::office_visit(raised).to_string();
                match pos {
                    Some(i) => claim.cpt[i] = code,
                    None => claim.cpt.insert(0, code),
                }
                claim.amount = self.amount_of(&claim.cpt, region, rng);
            }
            Pattern::Unbundling => {
                let bundles: Vec<_> = self.codes.bundles().collect();
                let bundle = bundles[rng.gen_range(0..bundles.len())];
                let mut parts = bundle.components.clone();
                if intensity == Intensity::Low {
                    parts.truncate(2);
                }
                if intensity == Intensity::High && parts.len() >= 2 {
                    let rest = parts.split_off(parts.len() / 2);
                    let mut second = claim.clone();
                    second.id = next_id();
                    second.cpt = rest;
                    second.amount = self.amount_of(&second.cpt, region, rng);
                    claim.cpt = parts;
                    claim.amount = self.amount_of(&claim.cpt, region, rng);
                    return vec![claim, second];
                }
                claim.cpt = parts;
                claim.amount = self.amount_of(&claim.cpt, region, rng);
            }
            Pattern::DuplicateBilling => {
                let mut original = claim.clone();
                original.label = None;
                claim.id = next_id();
                match intensity {
                    Intensity::High => {}
                    Intensity::Medium => claim.arrival = (claim.arrival + rng.gen_range(1..=3)).min(self.cfg.days - 1),
                    Intensity::Low => {
                        claim.arrival = (claim.arrival + rng.gen_range(1..=3)).min(self.cfg.days - 1);
                        claim.amount = round2(claim.amount * rng.gen_range(0.98..1.02));
                    }
                }
                claim.claim_date = claim.claim_date.max(self.date(claim.arrival) - Duration::days(2));
                return vec![original, claim];
            }
            Pattern::ExcessiveServices => {
                let extra = match intensity {
                    Intensity::Low => 3,
                    Intensity::Medium => 5,
                    Intensity::High => 8,
                };
                let pool = ["97110", "97140", "97530", "36415", "85025", "99213"];
                claim.cpt.extend((0..extra).map(|_| pool[rng.gen_range(0..pool.len())].to_string()));
                claim.amount = self.amount_of(&claim.cpt, region, rng);
            }
            Pattern::AmountOutlier => {
                let factor = match intensity {
                    Intensity::Low => rng.gen_range(1.6..2.2),
                    Intensity::Medium => rng.gen_range(2.5..4.0),
                    Intensity::High => rng.gen_range(5.0..9.0),
                };
                claim.amount = round2(claim.amount * factor);
            }
            Pattern::WeekendSpike => {
                let mut d = claim.service_date;
                while !is_weekend(d) {
                    d -= Duration::days(1);
                }
                claim.service_date = d;
            }
            Pattern::AfterCoverageEnd | Pattern::CollusionRing => {}
        }
        vec![claim]
    }

    /// Writes a claim: its batch row (with an occasional correction on a
    /// later day), its stream events as they arrive, and its fraud label.
    fn emit_claim(&self, out: &mut Out<'_>, rng: &mut Stream, claim: Claim) -> Result<()> {
        let cfg = self.cfg;
        let provider_id = self.providers[claim.provider].id.clone();
        if let Some((pattern, intensity)) = claim.label
            && out.landing.covers(claim.arrival)
        {
            out.truth.fraud(&claim.id, &provider_id, pattern.name(), intensity.name())?;
        }
        if claim.in_batch {
            let ingest = date_at(self.date(claim.arrival), rng.gen_range(3600..4 * 3600));
            let status = vary_case(rng, "Submitted", 0.2);
            let row = vec![
                claim.id.clone(),
                claim.member_id.clone(),
                provider_id.clone(),
                ymd(claim.claim_date),
                ymd(claim.service_date),
                money(claim.amount),
                status,
                claim.icd.join(";"),
                claim.cpt.join(";"),
                claim.claim_type.to_string(),
                claim.channel.to_string(),
                claim.notes.to_string(),
                ts_iso(ingest),
            ];
            self.emit_batch_row(out, rng, claim.arrival, row.clone(), &claim)?;
            // A correction: the same claim re-sent later with a new amount.
            if rng.gen_bool(0.02) {
                let later = claim.arrival + rng.gen_range(1..=3);
                if later < cfg.days {
                    let mut row = row;
                    row[5] = money(round2(claim.amount * rng.gen_range(0.9..1.1)));
                    row[6] = "Pending".to_string();
                    row[12] = ts_iso(date_at(self.date(later), rng.gen_range(3600..4 * 3600)));
                    self.emit_batch_row(out, rng, later, row, &claim)?;
                }
            }
        }

        // The claim's life in the event stream.
        let submitted = date_at(claim.claim_date, rng.gen_range(8 * 3600..18 * 3600));
        let mut events = vec![("Submitted", submitted)];
        if rng.gen_bool(0.7) {
            events.push(("Pending", submitted + Duration::seconds(rng.gen_range(2 * 3600..2 * 86_400))));
        }
        let (decide, pay) = self.flow.adjudication_days();
        let decided = submitted
            + Duration::seconds(
                (86_400.0f64 * (1.0 + Exp::new(1.0 / decide).expect("valid exp").sample(rng))).min(60.0 * 86_400.0)
                    as i64,
            );
        if rng.gen_bool(claim.denial) {
            events.push(("Rejected", decided));
        } else {
            events.push(("Approved", decided));
            let paid = decided
                + Duration::seconds(
                    (86_400.0f64 * (1.0 + Exp::new(1.0 / pay).expect("valid exp").sample(rng))).min(45.0 * 86_400.0)
                        as i64,
                );
            events.push(("Paid", paid));
        }
        for (status, at) in events {
            let lateness = match rng.gen_range(0..100) {
                0..=64 => 0,
                65..=84 => 1,
                85..=94 => 2,
                _ => 3,
            };
            let day = self.day_of(at.date()).max(0) + lateness;
            if day >= i64::from(cfg.days) {
                continue; // not arrived yet
            }
            let day = day as u32;
            let event = StreamEvent {
                claim_id: claim.id.clone(),
                member_id: claim.member_id.clone(),
                provider_id: provider_id.clone(),
                claim_date: ymd(claim.claim_date),
                amount: serde_json::json!(claim.amount),
                status: vary_case(rng, status, 0.05),
                icd: claim.icd.clone(),
                cpt: claim.cpt.clone(),
                event_timestamp: ts_iso(at),
            };
            self.emit_event(out, rng, day, event)?;
        }
        Ok(())
    }

    fn emit_batch_row(
        &self,
        out: &mut Out<'_>,
        rng: &mut Stream,
        day: u32,
        mut row: Vec<String>,
        claim: &Claim,
    ) -> Result<()> {
        if out.landing.has_extra_column(day, SourceFile::ClaimsBatch) {
            let pos = &self.codes.place_of_service;
            row.push(pos[rng.gen_range(0..pos.len())].clone());
        }
        self.emit_csv(out, rng, day, SourceFile::ClaimsBatch, row, |kind, row, rng| match kind {
            Defect::ConflictingDuplicate => {
                row[5] = money(claim.amount + f64::from(rng.gen_range(5..500)));
                ("Amount", "same ClaimID and IngestTimestamp, different Amount".to_string())
            }
            Defect::InvalidIcd => {
                let mut codes: Vec<String> = row[7].split(';').map(str::to_string).collect();
                let i = rng.gen_range(0..codes.len());
                codes[i] = invalid_icd(rng, &self.codes);
                row[7] = codes.join(";");
                ("ICD10Codes", format!("{} is not an ICD-10-CM code", codes[i]))
            }
            Defect::UnknownMember => {
                row[1] = self.unknown_member(rng);
                ("MemberID", "member never enrolled".to_string())
            }
            Defect::UnknownProvider => {
                row[2] = npi(self.providers.len() as u64 + rng.gen_range(1..1_000_000));
                ("ProviderID", "valid NPI, not in the provider directory".to_string())
            }
            Defect::MissingAmount => {
                row[5] = String::new();
                ("Amount", "empty amount".to_string())
            }
            Defect::WrongType => {
                if rng.gen_bool(0.5) {
                    row[5] = garble_number(rng, &row[5]);
                    ("Amount", "amount does not parse".to_string())
                } else {
                    row[3] = claim.claim_date.format("%m/%d/%Y").to_string();
                    ("ClaimDate", "date as mm/dd/yyyy".to_string())
                }
            }
            Defect::WrongCase => {
                row[9] = row[9].to_uppercase();
                ("ClaimType", "upper-case claim type".to_string())
            }
            Defect::FutureDate => {
                let future = self.future_date(day, rng);
                row[3] = ymd(future);
                row[4] = ymd(future - Duration::days(rng.gen_range(0..10)));
                ("ClaimDate", "claim and service dates in the future".to_string())
            }
            _ => {
                // The service date falls after the claim date, but not after
                // the day the claim arrived.
                let arrived = self.date(day);
                let claim_date = claim.claim_date.min(arrived - Duration::days(2));
                row[3] = ymd(claim_date);
                row[4] = ymd(claim_date + Duration::days(rng.gen_range(1..=(arrived - claim_date).num_days())));
                ("ServiceDate", "service date after claim date".to_string())
            }
        })
    }

    fn emit_event(&self, out: &mut Out<'_>, rng: &mut Stream, day: u32, mut event: StreamEvent) -> Result<()> {
        let json = |e: &StreamEvent| {
            serde_json::to_string(e).map_err(|e| crate::Error::Internal(format!("stream event: {e}")))
        };
        let key = event.claim_id.clone();
        let defect = self.defect_for(rng, SourceFile::ClaimsStream);
        let (column, detail) = match defect {
            None => {
                out.line(day, SourceFile::ClaimsStream, &json(&event)?)?;
                return Ok(());
            }
            Some(Defect::ExactDuplicate) => {
                let line = json(&event)?;
                out.line(day, SourceFile::ClaimsStream, &line)?;
                let at = out.line(day, SourceFile::ClaimsStream, &line)?;
                return out.defect(at, Defect::ExactDuplicate, "", &key, "event delivered twice");
            }
            Some(Defect::MalformedJson) => {
                let line = json(&event)?;
                let cut = rng.gen_range(1..line.len() - 1);
                let at = out.line(day, SourceFile::ClaimsStream, &line[..cut])?;
                return out.defect(at, Defect::MalformedJson, "", &key, "line truncated");
            }
            Some(Defect::InvalidIcd) => {
                let code = invalid_icd(rng, &self.codes);
                event.icd[0] = code.clone();
                ("ICD10Codes", format!("{code} is not an ICD-10-CM code"))
            }
            Some(Defect::UnknownMember) => {
                event.member_id = self.unknown_member(rng);
                ("MemberID", "member never enrolled".to_string())
            }
            Some(Defect::UnknownProvider) => {
                event.provider_id = npi(self.providers.len() as u64 + rng.gen_range(1..1_000_000));
                ("ProviderID", "valid NPI, not in the provider directory".to_string())
            }
            Some(Defect::MissingAmount) => {
                event.amount = serde_json::Value::Null;
                ("Amount", "null amount".to_string())
            }
            Some(Defect::WrongType) => {
                event.amount =
                    serde_json::Value::String(garble_number(rng, &money(event.amount.as_f64().unwrap_or(0.0))));
                ("Amount", "amount as a string that does not parse".to_string())
            }
            Some(_) => {
                let future = self.future_date(day, rng);
                event.claim_date = ymd(future);
                ("ClaimDate", "claim date in the future".to_string())
            }
        };
        let at = out.line(day, SourceFile::ClaimsStream, &json(&event)?)?;
        out.defect(at, defect.expect("matched above"), column, &key, &detail)
    }
}

/// Providers in the directory: one per 40 members, at least 40.
pub(crate) fn provider_count(members: u64) -> u64 {
    (members / 40).max(40)
}
