//! How much happens per member and day.
//!
//! By default the generator writes a short, dense landing: each member has
//! a fixed number of claims, care-management claims and medical events
//! over the whole history, whatever its length, which suits a demo of a
//! few days. With [`Config::claims_per_member_year`] it writes a steady
//! flow instead, as an insurer sees it night after night: claims and
//! events arrive every day in proportion to the members enrolled that day,
//! member and patient records change at yearly rates, and the money looks
//! like a real plan's (a heavy tail of facility claims, a loss ratio
//! between 75% and 95%, most clean claims paid within two weeks). The
//! figures and their sources are in `docs/economics.md`.

use crate::Config;

/// Claims per member over the whole history, by default.
const DENSE_CLAIMS_PER_MEMBER: f64 = 3.0;
/// Care-management claims and medical events per patient over the whole
/// history, by default.
const DENSE_EHR_CLAIMS_PER_PATIENT: f64 = 3.5;
const DENSE_EVENTS_PER_PATIENT: f64 = 5.5;
/// The share of members that are also care-management patients.
pub(crate) const PATIENT_SHARE: f64 = 0.85;

/// The steady flow's split of a member-year's claims between the two
/// source systems, in the proportions of the dense default: the
/// enrollment system's claims per member, and the care-management
/// system's claims and events per patient, per claim of the member-year.
const ENROLLMENT_SHARE: f64 = DENSE_CLAIMS_PER_MEMBER / DENSE_TOTAL;
const EHR_PER_PATIENT: f64 = DENSE_EHR_CLAIMS_PER_PATIENT / DENSE_TOTAL;
const EVENTS_PER_PATIENT: f64 = DENSE_EVENTS_PER_PATIENT / DENSE_TOTAL;
const DENSE_TOTAL: f64 = DENSE_CLAIMS_PER_MEMBER + PATIENT_SHARE * DENSE_EHR_CLAIMS_PER_PATIENT;

/// The rates of one generation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flow {
    /// Claims per member-year over both source systems, for a steady flow.
    per_year: Option<f64>,
}

impl Flow {
    pub(crate) fn of(config: &Config) -> Self {
        Self { per_year: config.claims_per_member_year }
    }

    /// Whether this is the steady yearly flow.
    pub(crate) fn is_steady(self) -> bool {
        self.per_year.is_some()
    }

    /// Mean enrollment-system claims of a member present `days` days.
    pub(crate) fn enrollment_claims(self, days: usize) -> f64 {
        match self.per_year {
            None => DENSE_CLAIMS_PER_MEMBER,
            Some(r) => r * ENROLLMENT_SHARE * days as f64 / 365.0,
        }
    }

    /// Mean care-management claims of a patient present `days` days.
    pub(crate) fn ehr_claims(self, days: usize) -> f64 {
        match self.per_year {
            None => DENSE_EHR_CLAIMS_PER_PATIENT,
            Some(r) => r * EHR_PER_PATIENT * days as f64 / 365.0,
        }
    }

    /// Mean medical events of a patient present `days` days.
    pub(crate) fn events(self, days: usize) -> f64 {
        match self.per_year {
            None => DENSE_EVENTS_PER_PATIENT,
            Some(r) => r * EVENTS_PER_PATIENT * days as f64 / 365.0,
        }
    }

    /// Mean enrollment claims per member over a history of `days` days,
    /// for the fraud plan's share of claims.
    pub(crate) fn claims_per_member(self, days: u32) -> f64 {
        self.enrollment_claims(days as usize)
    }

    /// The daily chance that a present member leaves the extract (60% of
    /// them come back within days): about one member in seven a year in
    /// the steady flow (commercial plans lose 15–20% a year).
    pub(crate) fn member_leaves(self) -> f64 {
        if self.is_steady() { 0.0005 } else { 0.004 }
    }

    /// The daily chance that a present member's plan, region, e-mail or
    /// active flag changes: about once a year in the steady flow.
    pub(crate) fn member_changes(self) -> f64 {
        if self.is_steady() { 0.003 } else { 0.03 }
    }

    /// The daily chance that a patient's risk factors or plan change.
    pub(crate) fn patient_changes(self) -> f64 {
        if self.is_steady() { 0.002 } else { 0.02 }
    }

    /// How much a facility claim's amount is scaled so that a member-year
    /// costs about the same whatever its claim count: 1 at 12 claims per
    /// member-year.
    pub(crate) fn cost_scale(self) -> f64 {
        self.per_year.map_or(1.0, |r| 12.0 / r)
    }

    /// The days (mean of each exponential step) from submission to the
    /// decision, and from the decision to payment.
    pub(crate) fn adjudication_days(self) -> (f64, f64) {
        if self.is_steady() { (5.0, 5.0) } else { (7.0, 6.0) }
    }
}
