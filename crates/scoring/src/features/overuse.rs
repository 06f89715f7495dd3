//! Code over-use: how far above its specialty's rate a claim's provider
//! bills the claim's codes, and the claim's whole code set, as Poisson
//! z-scores, counted over integer (claim, code) ids.

use deltalake::datafusion::prelude::SessionContext;
use hashbrown::HashMap;

use super::RawClaims;
use super::peers::dense_ids;
use super::procedures::{Procedures, intern};
use super::query::stream_pairs;
use crate::Result;

/// Every (claim, diagnosis code) pair (a pair may repeat; [`code_overuse`]
/// keeps claims of the window only, each pair once).
const DIAGNOSES_SQL: &str = r#"
SELECT fd.claim_id, dd.code
FROM fact_claim_diagnoses fd JOIN dim_diagnosis dd ON dd.diagnosis_key = fd.diagnosis_key
"#;

/// For each claim of `r`, how far above its specialty's rate the claim's
/// provider bills the claim's codes, as a Poisson z-score; the claim keeps
/// its largest (0 for a claim without codes). Then the same for the
/// claim's whole set of codes, procedures and diagnoses together: a
/// provider billing one template claim over and over (the same visit code
/// with the same lone diagnosis, claim after claim) stands out on the set
/// although each of its codes is common. The (claim, code) pairs are
/// counted over integer ids, not joined in SQL with string-keyed
/// per-provider and per-specialty counts, which did not fit in memory at a
/// million members.
pub(super) async fn code_overuse(
    ctx: &SessionContext,
    r: &RawClaims,
    claim_index: &HashMap<&str, u32>,
    procs: &Procedures,
) -> Result<(Vec<f64>, Vec<f64>)> {
    // Procedure codes keep their ids; diagnosis codes follow them.
    let mut pairs = procs.pairs();
    let first = procs.names.len() as u32;
    let mut diagnoses: HashMap<String, u32> = HashMap::new();
    stream_pairs(ctx, DIAGNOSES_SQL, "code", claim_index, |claim, code| {
        pairs.push((claim, intern(&mut diagnoses, code, first)));
    })
    .await?;
    pairs.sort_unstable();
    pairs.dedup();
    let groups = ClaimGroups::new(&r.provider_id, &r.specialty);
    Ok((overuse_z(&pairs, &groups), overuse_z(&code_sets(&pairs), &groups)))
}

/// (claim, code set id) pairs from the sorted, distinct (claim, code id)
/// pairs: claims billing the same codes share a set id.
fn code_sets(pairs: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    pairs
        .chunk_by(|a, b| a.0 == b.0)
        .map(|claim| {
            let next = ids.len() as u32;
            let id = *ids.entry(claim.iter().map(|&(_, code)| code).collect()).or_insert(next);
            (claim[0].0, id)
        })
        .collect()
}

/// Each claim's provider and specialty as dense ids, and the claims of
/// each provider and of each specialty.
struct ClaimGroups {
    provider: Vec<u32>,
    specialty: Vec<u32>,
    provider_claims: Vec<u32>,
    specialty_claims: Vec<u32>,
}

impl ClaimGroups {
    fn new(provider_ids: &[String], specialties: &[String]) -> Self {
        let (provider, providers) = dense_ids(provider_ids);
        let (specialty, specialties) = dense_ids(specialties);
        let (mut provider_claims, mut specialty_claims) = (vec![0u32; providers], vec![0u32; specialties]);
        for (p, s) in provider.iter().zip(&specialty) {
            provider_claims[*p as usize] += 1;
            specialty_claims[*s as usize] += 1;
        }
        Self { provider, specialty, provider_claims, specialty_claims }
    }
}

/// [`code_overuse`] from the distinct (claim index, code id) pairs of the
/// claims whose providers and specialties `groups` holds.
fn overuse_z(pairs: &[(u32, u32)], groups: &ClaimGroups) -> Vec<f64> {
    let ClaimGroups { provider, specialty, provider_claims: pn, specialty_claims: sn } = groups;
    let n = provider.len();
    let key = |group: u32, code: u32| (u64::from(group) << 32) | u64::from(code);
    let (mut pc, mut sc): (HashMap<u64, u32>, HashMap<u64, u32>) = (HashMap::new(), HashMap::new());
    for &(claim, code) in pairs {
        *pc.entry(key(provider[claim as usize], code)).or_default() += 1;
        *sc.entry(key(specialty[claim as usize], code)).or_default() += 1;
    }
    let mut z = vec![f64::NEG_INFINITY; n];
    for &(claim, code) in pairs {
        let (p, s) = (provider[claim as usize], specialty[claim as usize]);
        let expected = f64::from(pn[p as usize]) * f64::from(sc[&key(s, code)]) / f64::from(sn[s as usize]);
        let zi = (f64::from(pc[&key(p, code)]) - expected) / (expected + 1.0).sqrt();
        z[claim as usize] = z[claim as usize].max(zi);
    }
    z.into_iter().map(|v| if v == f64::NEG_INFINITY { 0.0 } else { v }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sorted, distinct (claim, code) pairs of providers A..E of
    /// specialty S, 20 claims each (claim `20p + c`), with the codes
    /// `codes(provider, c)`, then claim 100 of provider F (specialty T)
    /// without codes; and each claim's provider and specialty.
    fn five_providers(codes: impl Fn(&str, u32) -> Vec<u32>) -> (Vec<(u32, u32)>, Vec<String>, Vec<String>) {
        let mut provider = Vec::new();
        let mut pairs = Vec::new();
        for (p, name) in ["A", "B", "C", "D", "E"].iter().enumerate() {
            for c in 0..20u32 {
                let claim = p as u32 * 20 + c;
                provider.push(name.to_string());
                pairs.extend(codes(name, c).into_iter().map(|code| (claim, code)));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        provider.push("F".to_string());
        let mut specialty = vec!["S".to_string(); 100];
        specialty.push("T".to_string());
        (pairs, provider, specialty)
    }

    #[test]
    fn code_overuse_is_high_where_a_provider_bills_a_code_far_above_its_specialty() {
        // Specialty S: providers A..E, 20 claims each; every claim has code
        // 0 (common). A also bills code 1 on all its claims, the others
        // never; claim 100 (provider F, specialty T) has no code at all.
        let (pairs, provider, specialty) = five_providers(|name, _| if name == "A" { vec![0, 1, 1] } else { vec![0] });
        let z = overuse_z(&pairs, &ClaimGroups::new(&provider, &specialty));
        assert_eq!(z.len(), 101);
        assert_eq!(z[100], 0.0, "a claim without codes has no over-use");
        // Code 1: A bills it 20 times where its specialty's rate predicts 4.
        let expected: f64 = 20.0 * 20.0 / 100.0;
        assert!((z[0] - (20.0 - expected) / (expected + 1.0).sqrt()).abs() < 1e-12, "{}", z[0]);
        // Code 0 is billed at the specialty's rate by everyone: z = 0.
        assert_eq!(z[20], 0.0);
        assert!(z[0] > 5.0 && z[1..20].iter().all(|v| *v == z[0]));
    }

    #[test]
    fn a_provider_billing_one_code_set_over_and_over_stands_out_on_the_set_not_on_its_codes() {
        // Specialty S, providers A..E with 20 claims each. Every provider
        // bills code 0 on half its claims and code 1 on the other half,
        // but A bills the two together on 10 of its claims (and nothing
        // else on them): each code is billed at about the specialty's rate,
        // the set {0, 1} only at A. Claim 100 has no codes.
        let (pairs, provider, specialty) = five_providers(|name, c| match (name, c % 2) {
            ("A", 0) => vec![1, 0, 1],
            (_, 0) => vec![0],
            _ => vec![1],
        });
        let sets = code_sets(&pairs);
        assert_eq!(sets.len(), 100, "one set per claim with codes");
        assert_eq!(sets[0].1, sets[2].1, "A's template claims share a set");
        assert_ne!(sets[0].1, sets[1].1);
        assert_eq!(sets[21].1, sets[1].1, "the same codes at another provider are the same set");
        let groups = ClaimGroups::new(&provider, &specialty);
        let by_code = overuse_z(&pairs, &groups);
        let by_set = overuse_z(&sets, &groups);
        assert_eq!(by_set[100], 0.0, "a claim without codes has no over-use");
        // The set {0, 1}: 10 claims at A, where the specialty's rate
        // predicts 20 x 10 / 100 = 2.
        assert!((by_set[0] - (10.0 - 2.0) / 3.0f64.sqrt()).abs() < 1e-12, "{}", by_set[0]);
        assert!(by_set[0] > by_code[0] + 2.0, "set {} against code {}", by_set[0], by_code[0]);
    }
}
