//! The provider features ([`super::PROVIDER_FEATURES`]): each provider's
//! claims aggregated ([`Profiles`]), its rates measured against its
//! specialty's ([`raw_features`]), and each feature normalised within the
//! specialty or globally ([`normalise`]).

use hashbrown::{HashMap, HashSet};
use ndarray::Array2;

use super::claims::HIGH_LEVEL;
use super::peers::{Groups, NO_PEERS, binomial_z, dense_ids, peer_z};
use super::sharing::Sharing;
use super::{ClaimTable, PROVIDER_FEATURES, ProviderTable, RawClaims};

/// The features of every provider that billed a claim of `r`.
pub(super) fn provider_features(r: &RawClaims, claims: &ClaimTable, sharing: &Sharing) -> ProviderTable {
    let profiles = Profiles::of(r, claims);
    let mut ids: Vec<&str> = profiles.by.keys().copied().collect();
    ids.sort_unstable();
    let raw = raw_features(&profiles, &ids, sharing);
    let by = &profiles.by;
    let specialty: Vec<String> = ids.iter().map(|id| by[id].specialty.clone()).collect();
    let values = normalise(&raw, &specialty, &ids.iter().map(|id| by[id].claims).collect::<Vec<_>>());
    ProviderTable {
        provider_id: ids.iter().map(|s| s.to_string()).collect(),
        specialty,
        claims: ids.iter().map(|id| by[id].claims as u64).collect(),
        values,
    }
}

/// One provider's claims, summed.
#[derive(Default)]
struct Acc {
    specialty: String,
    claims: f64,
    members: HashSet<u32>,
    member_days: HashSet<(u32, i32)>,
    services: f64,
    amount_z: f64,
    em_claims: f64,
    high_level: f64,
    weekend: f64,
    denied: f64,
    duplicate: f64,
    after_coverage: f64,
    unbundled: f64,
    overuse_max: f64,
}

/// The claims of each provider and the rates of each specialty.
struct Profiles<'a> {
    by: HashMap<&'a str, Acc>,
    /// Per specialty: E/M claims, high-level ones, claims, weekend, denied,
    /// duplicates, after coverage, unbundled.
    spec_rates: HashMap<&'a str, [f64; 8]>,
}

impl<'a> Profiles<'a> {
    /// Sums the claims of `r` (with their features in `claims`), in claim
    /// order.
    fn of(r: &'a RawClaims, claims: &ClaimTable) -> Self {
        let (member, _) = dense_ids(&r.member_id);
        let mut by: HashMap<&str, Acc> = HashMap::new();
        let mut spec_rates: HashMap<&str, [f64; 8]> = HashMap::new();
        for (i, &member) in member.iter().enumerate() {
            // Claims without a provider (care-management claims) have no
            // provider to profile.
            if r.provider_id[i].is_empty() {
                continue;
            }
            let a = by.entry(&r.provider_id[i]).or_default();
            a.specialty.clone_from(&r.specialty[i]);
            a.claims += 1.0;
            a.members.insert(member);
            a.member_days.insert((member, r.service_date_key[i]));
            a.services += r.n_proc[i];
            a.amount_z += claims.values[[i, 0]];
            let em = r.em_level[i] > 0.0;
            let high = r.em_level[i] >= HIGH_LEVEL;
            let denied = r.status[i] == "REJECTED" || r.status[i] == "DENIED";
            a.em_claims += f64::from(u8::from(em));
            a.high_level += f64::from(u8::from(high));
            a.weekend += r.weekend[i];
            a.denied += f64::from(u8::from(denied));
            a.duplicate += f64::from(u8::from(r.dup_rank[i] > 0.0));
            a.after_coverage += r.after_coverage[i];
            a.unbundled += r.unbundled[i];
            a.overuse_max = a.overuse_max.max(r.overuse[i]);
            let s = spec_rates.entry(&r.specialty[i]).or_default();
            s[0] += f64::from(u8::from(em));
            s[1] += f64::from(u8::from(high));
            s[2] += 1.0;
            s[3] += r.weekend[i];
            s[4] += f64::from(u8::from(denied));
            s[5] += f64::from(u8::from(r.dup_rank[i] > 0.0));
            s[6] += r.after_coverage[i];
            s[7] += r.unbundled[i];
        }
        Self { by, spec_rates }
    }
}

/// The features of providers `ids` before normalisation, in the order of
/// [`PROVIDER_FEATURES`].
fn raw_features(profiles: &Profiles<'_>, ids: &[&str], sharing: &Sharing) -> Vec<[f64; 13]> {
    ids.iter()
        .map(|id| {
            let a = &profiles.by[id];
            let s = profiles.spec_rates[a.specialty.as_str()];
            [
                a.claims / a.members.len().max(1) as f64,
                a.services / a.member_days.len().max(1) as f64,
                a.amount_z / a.claims,
                binomial_z(a.high_level, a.em_claims, if s[0] > 0.0 { s[1] / s[0] } else { 0.0 }),
                binomial_z(a.weekend, a.claims, s[3] / s[2]),
                binomial_z(a.denied, a.claims, s[4] / s[2]),
                sharing.most.get(*id).copied().unwrap_or(0.0),
                // Shares as binomial z-scores against the specialty's, so
                // that a provider with one claim, serviced after coverage
                // ended, does not top one at 40 of 100.
                binomial_z(a.duplicate, a.claims, s[5] / s[2]),
                binomial_z(a.after_coverage, a.claims, s[6] / s[2]),
                binomial_z(a.unbundled, a.claims, s[7] / s[2]),
                a.overuse_max,
                a.services / a.claims,
                sharing.excess.get(*id).copied().unwrap_or(0.0),
            ]
        })
        .collect()
}

/// The `raw` features as robust z-scores: rates already measured against
/// the specialty globally, the others within the specialty (`specialty`,
/// with each provider's `claims` for the fallback group).
fn normalise(raw: &[[f64; 13]], specialty: &[String], claims: &[f64]) -> Array2<f64> {
    // Providers of an unknown specialty (billing ids silver_providers does
    // not hold, most with one to three claims) are no peer group: among
    // them, a practice of 200 claims seeing each member twice stood 12
    // robust deviations above the one-claim-per-member majority. They, and
    // the providers of a specialty too small to be its own group, are
    // measured against the providers of a similar volume instead: claims
    // within the same power of two.
    let spec_keys: Vec<&str> = specialty.iter().map(|s| if s.is_empty() { NO_PEERS } else { s.as_str() }).collect();
    let volume: Vec<String> = claims.iter().map(|c| (*c as u64).max(1).ilog2().to_string()).collect();
    let volume: Vec<&str> = volume.iter().map(String::as_str).collect();
    let (spec_keys, volume, everyone) = (Groups::of(&spec_keys), Groups::of(&volume), Groups::all(raw.len()));
    let mut values = Array2::zeros((raw.len(), PROVIDER_FEATURES.len()));
    for j in 0..PROVIDER_FEATURES.len() {
        let col: Vec<f64> = raw.iter().map(|row| row[j]).collect();
        // Rates already measured against the specialty are scaled globally;
        // the others within the specialty.
        let z = match j {
            3..=5 | 7..=10 | 12 => peer_z(&col, &everyone, None, 0.5),
            6 => peer_z(&col, &everyone, None, 0.01),
            _ => peer_z(&col, &spec_keys, Some(&volume), 0.05),
        };
        for (i, v) in z.into_iter().enumerate() {
            values[[i, j]] = v;
        }
    }
    values
}
