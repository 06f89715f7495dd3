//! The claim features ([`super::CLAIM_FEATURES`]): each a claim's own
//! value normalised within its peers, or a flag it raises weighed by how
//! far above its specialty its provider raises it. The peer statistics (a
//! median per group, twice) are independent, and run side by side on the
//! threads of [`parallel::threads`].

use ndarray::Array2;

use super::peers::{Groups, above_p99, binomial_z, clip, peer_z};
use super::{CLAIM_FEATURES, ClaimTable, RawClaims};
use crate::{Error, Result};

/// A claim's amount is high for its codes above this robust z-score.
const HIGH_AMOUNT_Z: f64 = 2.0;
/// E/M levels from this one up are high-level codes.
pub(super) const HIGH_LEVEL: f64 = 4.0;

/// The features of the claims of `r`, in the order of [`CLAIM_FEATURES`];
/// `provider` holds the claims' provider ids, as [`Groups`], and
/// `shared_excess` how far beyond chance each claim's provider shares
/// members.
pub(super) fn claim_features(r: &RawClaims, provider: &Groups, shared_excess: &[f64]) -> Result<ClaimTable> {
    let n = r.claim_id.len();
    let ln_amount: Vec<f64> = r.amount.iter().map(|a| a.max(1.0).ln()).collect();
    let signature = Groups::of(&r.signature);
    let first = Groups::of(&r.first_code);
    let specialty = Groups::of(&r.specialty);
    let everyone = Groups::all(n);
    let rate_z = |flag: &[f64]| provider_rate_z(r, provider, &specialty, flag);

    let weekend_z = rate_z(&r.weekend);
    let coverage_z = rate_z(&r.after_coverage);
    let amount_z = peer_z(&ln_amount, &signature, Some(&first), 0.05);
    let high_amount: Vec<f64> = amount_z.iter().map(|z| f64::from(u8::from(*z > HIGH_AMOUNT_Z))).collect();
    let high_amount_z = rate_z(&high_amount);
    let high_level: Vec<f64> = r.em_level.iter().map(|l| f64::from(u8::from(*l >= HIGH_LEVEL))).collect();
    let high_level_z = rate_z(&high_level);
    let new_member: Vec<f64> = r.ties.iter().map(|t| f64::from(u8::from(*t == 0.0))).collect();
    let new_member_z = rate_z(&new_member);
    let new_high: Vec<f64> = (0..n).map(|i| high_level[i] * new_member[i]).collect();
    let new_high_z = rate_z(&new_high);
    // A flag the claim raises, weighed by how far above its specialty its
    // provider raises it.
    let at_provider = |flag: &[f64], z: &[f64]| -> Vec<f64> { (0..n).map(|i| clip(flag[i] * z[i].max(0.0))).collect() };

    // The peer statistics (a median per group, twice) are independent of
    // each other: they run side by side.
    type Job<'a> = Box<dyn FnOnce() -> Vec<f64> + Send + 'a>;
    let (ln, sp, all) = (&ln_amount, &specialty, &everyone);
    let peer: Vec<Job<'_>> = vec![
        Box::new(move || peer_z(ln, sp, None, 0.05)),
        Box::new(move || peer_z(&r.dup_rank, all, None, 0.05)),
        Box::new(move || peer_z(&r.after_coverage, all, None, 0.05)),
        Box::new(move || peer_z(&r.unbundled, all, None, 0.05)),
        Box::new(move || peer_z(&r.n_proc, sp, None, 0.25)),
        Box::new(move || peer_z(&r.em_level, sp, None, 0.25)),
        Box::new(move || peer_z(&r.overuse, sp, None, 0.5)),
        Box::new(move || peer_z(&r.weekend, all, None, 0.25)),
        Box::new(move || peer_z(shared_excess, all, None, 0.5)),
        Box::new(move || peer_z(&r.set_overuse, sp, None, 0.5)),
    ];
    let [by_specialty, dup, coverage, unbundled, n_proc, em, overuse, weekend, shared, set_overuse]: [Vec<f64>; 10] =
        parallel::in_parallel(peer)
            .map_err(|_| Error::Panicked)?
            .try_into()
            .unwrap_or_else(|_| unreachable!("ten jobs give ten columns"));
    let columns: [Vec<f64>; 17] = [
        amount_z,
        by_specialty,
        dup,
        coverage,
        unbundled,
        n_proc,
        em,
        overuse,
        weekend,
        (0..n).map(|i| clip(r.weekend[i] * weekend_z[i].max(0.0))).collect(),
        (0..n).map(|i| clip(r.after_coverage[i] * coverage_z[i].max(0.0))).collect(),
        shared,
        at_provider(&high_amount, &high_amount_z),
        at_provider(&high_level, &high_level_z),
        set_overuse,
        at_provider(&new_high, &new_high_z),
        at_provider(&new_member, &new_member_z),
    ];
    let mut values = Array2::zeros((n, CLAIM_FEATURES.len()));
    for (j, col) in columns.iter().enumerate() {
        for (i, v) in col.iter().enumerate() {
            values[[i, j]] = *v;
        }
    }
    Ok(ClaimTable {
        claim_id: r.claim_id.clone(),
        provider_id: r.provider_id.clone(),
        amount: r.amount.clone(),
        status: r.status.clone(),
        serviced_key: r.service_date_key.clone(),
        values,
        above_code_p99: above_p99(&ln_amount, &signature),
    })
}

/// For each claim, how far its provider's rate of `flag` is above its
/// specialty's, as a binomial z-score (0 for a claim without a provider).
fn provider_rate_z(r: &RawClaims, provider: &Groups, specialty: &Groups, flag: &[f64]) -> Vec<f64> {
    let mut by_provider = vec![(0.0, 0.0); provider.count];
    let mut by_specialty = vec![(0.0, 0.0); specialty.count];
    for (i, &f) in flag.iter().enumerate() {
        let p = &mut by_provider[provider.id[i] as usize];
        p.0 += f;
        p.1 += 1.0;
        let s = &mut by_specialty[specialty.id[i] as usize];
        s.0 += f;
        s.1 += 1.0;
    }
    (0..flag.len())
        .map(|i| {
            if r.provider_id[i].is_empty() {
                return 0.0;
            }
            let (w, t) = by_provider[provider.id[i] as usize];
            let (sw, st) = by_specialty[specialty.id[i] as usize];
            binomial_z(w, t, sw / st)
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn jobs_run_side_by_side_give_their_results_in_the_jobs_order() {
        let jobs: Vec<Box<dyn FnOnce() -> usize + Send>> = (0..25usize)
            .map(|i| {
                Box::new(move || {
                    // Uneven work, so the jobs finish out of order.
                    std::thread::sleep(std::time::Duration::from_millis(((25 - i) % 4) as u64));
                    i * i
                }) as Box<dyn FnOnce() -> usize + Send>
            })
            .collect();
        assert_eq!(parallel::in_parallel(jobs).unwrap(), (0..25).map(|i| i * i).collect::<Vec<_>>());
    }
}
