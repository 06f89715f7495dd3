//! What depends on a claim's procedure codes, counted over integer code
//! ids ([`Procedures`]): its signature (distinct codes in order), first
//! code, lines and highest E/M level ([`signatures`]), its rank among
//! duplicates ([`duplicate_ranks`]) and whether it unbundles a bundle
//! ([`unbundled`]). The same in SQL (an ordered `array_agg` per claim, a
//! window function partitioned by four string keys, and self-joins of the
//! day's codes) took two thirds of the score stage at a million members.

use deltalake::datafusion::prelude::SessionContext;
use hashbrown::HashMap;

use super::RawClaims;
use super::query::stream_pairs;
use crate::Result;
use crate::config::ScoringConfig;

/// Every procedure line; [`Procedures::read`] keeps the window's claims.
const PROCEDURES_SQL: &str = "SELECT claim_id, procedure_code FROM fact_claim_procedures";

/// The procedure codes of the window's claims, over integer ids.
pub(super) struct Procedures {
    /// Code names by id; ids are in the names' byte order.
    pub(super) names: Vec<String>,
    /// Claim `i`'s distinct codes are `codes[starts[i]..starts[i + 1]]`,
    /// ascending, with how many lines bill each in `units`.
    starts: Vec<usize>,
    codes: Vec<u32>,
    pub(super) units: Vec<u32>,
}

impl Procedures {
    /// Streams the procedure lines and keeps those of the claims
    /// `claim_index` numbers.
    pub(super) async fn read(ctx: &SessionContext, claim_index: &HashMap<&str, u32>) -> Result<Self> {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut lines: Vec<(u32, u32)> = Vec::new();
        stream_pairs(ctx, PROCEDURES_SQL, "procedure_code", claim_index, |claim, code| {
            lines.push((claim, intern(&mut ids, code, 0)));
        })
        .await?;
        Ok(Self::new(ids, lines, claim_index.len()))
    }

    /// From the lines (claim index, code id) of `claims` claims, with
    /// `ids` naming the codes.
    pub(super) fn new(ids: HashMap<String, u32>, mut lines: Vec<(u32, u32)>, claims: usize) -> Self {
        // Renumber the codes in their names' order, so that a claim's codes
        // sorted by id are sorted by name.
        let mut names: Vec<(String, u32)> = ids.into_iter().collect();
        names.sort_unstable();
        let mut rank = vec![0u32; names.len()];
        for (r, (_, id)) in names.iter().enumerate() {
            rank[*id as usize] = r as u32;
        }
        for line in &mut lines {
            line.1 = rank[line.1 as usize];
        }
        lines.sort_unstable();
        let (mut starts, mut codes, mut units) = (vec![0usize; claims + 1], Vec::new(), Vec::new());
        for run in lines.chunk_by(|a, b| a == b) {
            starts[run[0].0 as usize + 1] += 1;
            codes.push(run[0].1);
            units.push(run.len() as u32);
        }
        for i in 0..claims {
            starts[i + 1] += starts[i];
        }
        Self { names: names.into_iter().map(|(n, _)| n).collect(), starts, codes, units }
    }

    pub(super) fn of(&self, claim: usize) -> &[u32] {
        &self.codes[self.starts[claim]..self.starts[claim + 1]]
    }

    fn id(&self, code: &str) -> Option<u32> {
        self.names.binary_search_by(|n| n.as_str().cmp(code)).ok().map(|i| i as u32)
    }

    /// The (claim, code id) pairs, sorted and distinct.
    pub(super) fn pairs(&self) -> Vec<(u32, u32)> {
        (0..self.starts.len() - 1).flat_map(|i| self.of(i).iter().map(move |&c| (i as u32, c))).collect()
    }
}

/// The id of `code` in `ids`, numbered from `first` in order of arrival.
pub(super) fn intern(ids: &mut HashMap<String, u32>, code: &str, first: u32) -> u32 {
    match ids.get(code) {
        Some(&id) => id,
        None => {
            let id = first + ids.len() as u32;
            ids.insert(code.to_string(), id);
            id
        }
    }
}

/// Each claim's signature (its distinct procedure codes joined by `;`),
/// first code, procedure lines and highest E/M level, from `procs`.
pub(super) fn signatures(r: &mut RawClaims, procs: &Procedures, config: &ScoringConfig) {
    let level: Vec<f64> =
        procs.names.iter().map(|n| f64::from(config.em_levels.get(n).copied().unwrap_or(0))).collect();
    for i in 0..r.claim_id.len() {
        let codes = procs.of(i);
        let names: Vec<&str> = codes.iter().map(|&c| procs.names[c as usize].as_str()).collect();
        r.signature.push(names.join(";"));
        r.first_code.push(names.first().map_or_else(String::new, |n| n.to_string()));
        r.n_proc.push(procs.units[procs.starts[i]..procs.starts[i + 1]].iter().map(|&u| f64::from(u)).sum());
        r.em_level.push(codes.iter().map(|&c| level[c as usize]).fold(0.0, f64::max));
    }
}

/// Each claim's rank among the claims of the same member, provider,
/// service date and codes, ordered by claim date and claim id (earlier
/// such claims; 0 for a claim without a provider or a code), and the
/// amount of the claim just before it in that order.
pub(super) fn duplicate_ranks(r: &mut RawClaims, procs: &Procedures, member: &[u32], provider: &[u32]) {
    let n = r.claim_id.len();
    let mut set_ids: HashMap<&[u32], u32> = HashMap::new();
    let signature: Vec<u32> = (0..n)
        .map(|i| {
            let next = set_ids.len() as u32;
            *set_ids.entry(procs.of(i)).or_insert(next)
        })
        .collect();
    let key = |i: usize| (member[i], provider[i], r.service_date_key[i], signature[i]);
    let mut order: Vec<usize> = (0..n).collect();
    // Claims are in claim id order: the index breaks ties as the id does.
    order.sort_unstable_by_key(|&i| (key(i), r.claim_date_key[i], i));
    r.dup_rank = vec![0.0; n];
    r.prev_amount = vec![0.0; n];
    for run in order.chunk_by(|&a, &b| key(a) == key(b)) {
        for (rank, pair) in run.windows(2).enumerate() {
            let (before, i) = (pair[0], pair[1]);
            r.prev_amount[i] = r.amount[before];
            if !r.provider_id[i].is_empty() && !procs.of(i).is_empty() {
                r.dup_rank[i] = (rank + 1) as f64;
            }
        }
    }
}

/// 1.0 for each claim billing a component of a bundle whose other
/// components the same provider billed the same member on the same day
/// (two components or more, across the day's claims), without billing the
/// bundle's own code that day.
pub(super) fn unbundled(
    r: &RawClaims,
    procs: &Procedures,
    config: &ScoringConfig,
    member: &[u32],
    provider: &[u32],
) -> Vec<f64> {
    let n = r.claim_id.len();
    // Each bundle's code and distinct component ids, for codes billed at all.
    let bundles: Vec<(Option<u32>, Vec<u32>)> = config
        .bundles
        .iter()
        .map(|b| {
            let mut components: Vec<u32> = b.components.iter().filter_map(|c| procs.id(c)).collect();
            components.sort_unstable();
            components.dedup();
            (procs.id(&b.code), components)
        })
        .filter(|(_, components)| components.len() >= 2)
        .collect();
    let mut out = vec![0.0; n];
    if bundles.is_empty() {
        return out;
    }
    let key = |i: usize| (member[i], provider[i], r.service_date_key[i]);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| key(i));
    let mut day: Vec<u32> = Vec::new();
    let mut open: Vec<u32> = Vec::new();
    for run in order.chunk_by(|&a, &b| key(a) == key(b)) {
        day.clear();
        day.extend(run.iter().flat_map(|&i| procs.of(i)));
        day.sort_unstable();
        day.dedup();
        let billed = |c: &u32| day.binary_search(c).is_ok();
        open.clear();
        for (code, components) in &bundles {
            if components.iter().filter(|c| billed(c)).count() >= 2 && !code.as_ref().is_some_and(billed) {
                open.extend(components);
            }
        }
        if open.is_empty() {
            continue;
        }
        for &i in run {
            if procs.of(i).iter().any(|c| open.contains(c)) {
                out[i] = 1.0;
            }
        }
    }
    out
}

/// A claim is a duplicate only if it bills the amount of the claim before
/// it (same member, provider, service date and codes) within `tolerance`
/// of the larger amount; two visits billed differently are not.
pub(super) fn keep_same_amount_duplicates(r: &mut RawClaims, tolerance: f64) {
    for i in 0..r.dup_rank.len() {
        let (a, b) = (r.amount[i], r.prev_amount[i]);
        if r.dup_rank[i] > 0.0 && (a - b).abs() > tolerance * a.abs().max(b.abs()) {
            r.dup_rank[i] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bundle;
    use crate::features::fixtures::claims_of;
    use crate::features::peers::dense_ids;

    #[test]
    fn a_claims_signature_is_its_distinct_codes_in_order_with_its_lines_and_highest_e_m_level() {
        let (mut r, procs) =
            claims_of(&[("m", "A", 1, 1, 10.0, &["99215", "36415", "99213", "36415"]), ("m", "A", 1, 1, 10.0, &[])]);
        let config = ScoringConfig::default_config().unwrap();
        signatures(&mut r, &procs, &config);
        assert_eq!(r.signature, ["36415;99213;99215", ""]);
        assert_eq!(r.first_code, ["36415", ""]);
        assert_eq!(r.n_proc, [4.0, 0.0], "every line counts, a repeated code too");
        assert_eq!(r.em_level, [f64::from(config.em_levels["99215"]), 0.0]);
    }

    #[test]
    fn a_duplicate_is_ranked_among_claims_of_the_same_member_provider_day_and_codes_by_claim_date() {
        let (mut r, procs) = claims_of(&[
            ("m", "A", 20250105, 20250109, 100.0, &["99213"]),
            ("m", "A", 20250105, 20250106, 90.0, &["99213"]),
            ("m", "A", 20250105, 20250107, 80.0, &["99213", "99213"]),
            // Another code set, another day, another member, another
            // provider: none is a duplicate of the claims above.
            ("m", "A", 20250105, 20250106, 70.0, &["99213", "36415"]),
            ("m", "A", 20250106, 20250106, 60.0, &["99213"]),
            ("n", "A", 20250105, 20250106, 50.0, &["99213"]),
            ("m", "B", 20250105, 20250106, 40.0, &["99213"]),
            // No provider, no codes: never a duplicate.
            ("m", "", 20250105, 20250106, 30.0, &["99213"]),
            ("m", "", 20250105, 20250107, 30.0, &["99213"]),
            ("m", "A", 20250105, 20250106, 20.0, &[]),
            ("m", "A", 20250105, 20250107, 20.0, &[]),
        ]);
        let (member, _) = dense_ids(&r.member_id);
        let (provider, _) = dense_ids(&r.provider_id);
        duplicate_ranks(&mut r, &procs, &member, &provider);
        assert_eq!(r.dup_rank, [2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // Each duplicate carries the amount of the claim just before it.
        assert_eq!((r.prev_amount[2], r.prev_amount[0]), (90.0, 80.0));
        // With a 5% tolerance, a duplicate billing another amount is not one.
        keep_same_amount_duplicates(&mut r, 0.05);
        assert_eq!(r.dup_rank[..3], [0.0, 0.0, 0.0]);
        r.amount[2] = 89.0;
        r.prev_amount[2] = 90.0;
        r.dup_rank[2] = 1.0;
        keep_same_amount_duplicates(&mut r, 0.05);
        assert_eq!(r.dup_rank[2], 1.0, "89 against 90 is within 5%");
    }

    #[test]
    fn components_of_one_bundle_billed_on_one_day_without_the_bundle_are_unbundled() {
        let mut config = ScoringConfig::default_config().unwrap();
        config.bundles =
            vec![Bundle { code: "80053".into(), components: vec!["82565".into(), "84132".into(), "84295".into()] }];
        let (r, procs) = claims_of(&[
            // Day 1: two components on two claims, and an unrelated claim.
            ("m", "A", 1, 1, 0.0, &["82565"]),
            ("m", "A", 1, 1, 0.0, &["84132", "99213"]),
            ("m", "A", 1, 1, 0.0, &["99213"]),
            // Day 2: the components with the bundle itself.
            ("m", "A", 2, 2, 0.0, &["82565", "84132"]),
            ("m", "A", 2, 2, 0.0, &["80053"]),
            // Day 3: one component only; the other at another provider.
            ("m", "A", 3, 3, 0.0, &["82565", "82565"]),
            ("m", "B", 3, 3, 0.0, &["84295"]),
        ]);
        let (member, _) = dense_ids(&r.member_id);
        let (provider, _) = dense_ids(&r.provider_id);
        assert_eq!(unbundled(&r, &procs, &config, &member, &provider), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
