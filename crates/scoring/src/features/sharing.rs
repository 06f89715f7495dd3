//! Shared members: how many members each provider shares with another,
//! and how far beyond chance, counted pair by pair within each member.

use hashbrown::HashMap;

use super::peers::dense_ids;

/// What the members that providers share say, counted over the window's
/// claims (claims without a provider, the care-management feed's, and
/// claims without a member, whose member id is `#` and the claim id, take
/// no part).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sharing {
    /// Per provider: how many members it shares with the provider it
    /// shares most with.
    pub(super) most: HashMap<String, f64>,
    /// Per provider: how far its largest overlap with one other provider
    /// is above chance, as a Poisson z-score.
    pub(super) excess: HashMap<String, f64>,
    /// Per claim: how far above chance the claim's provider shares members
    /// with another provider of the same member (0 when the member saw no
    /// other provider).
    pub(super) claim_excess: Vec<f64>,
}

/// How far `overlap` shared members are above what chance gives two
/// providers with `a` and `b` members of `total`, in Poisson standard
/// deviations (with one pseudo-member, as [`binomial_z`]).
fn overlap_z(overlap: u32, a: u32, b: u32, total: usize) -> f64 {
    let expected = f64::from(a) * f64::from(b) / total.max(1) as f64;
    (f64::from(overlap) - expected) / (expected + 1.0).sqrt()
}

/// Counts [`Sharing`] over integer ids, pair by pair within each member (a
/// member seen by k providers adds k(k-1)/2 pairs), rather than by a
/// self-join of (provider, member) rows, whose string-keyed pair aggregate
/// does not fit in memory at a million members. Providers that share a
/// small set of members far beyond chance are the mark of a collusion
/// ring; a large provider sharing many members with another large one is
/// not.
pub(super) fn member_sharing(member_id: &[String], provider_id: &[String]) -> Sharing {
    let n = member_id.len();
    let (member, _) = dense_ids(member_id);
    let (provider, providers) = dense_ids(provider_id);
    let takes_part = |i: usize| !provider_id[i].is_empty() && !member_id[i].starts_with('#');
    let mut order: Vec<usize> = (0..n).filter(|&i| takes_part(i)).collect();
    order.sort_unstable_by_key(|&i| (member[i], provider[i]));
    // Each member's run of claims in `order`, and its distinct providers.
    let runs: Vec<&[usize]> = order.chunk_by(|&a, &b| member[a] == member[b]).collect();
    let distinct: Vec<Vec<u32>> = runs
        .iter()
        .map(|run| {
            let mut ps: Vec<u32> = run.iter().map(|&i| provider[i]).collect();
            ps.dedup();
            ps
        })
        .collect();
    let key = |a: u32, b: u32| (u64::from(a.min(b)) << 32) | u64::from(a.max(b));
    let mut size = vec![0u32; providers];
    let mut pairs: HashMap<u64, u32> = HashMap::new();
    for ps in &distinct {
        for (i, &a) in ps.iter().enumerate() {
            size[a as usize] += 1;
            for &b in &ps[i + 1..] {
                *pairs.entry(key(a, b)).or_default() += 1;
            }
        }
    }
    let total = runs.len();
    let z = |a: u32, b: u32| {
        overlap_z(pairs.get(&key(a, b)).copied().unwrap_or(0), size[a as usize], size[b as usize], total)
    };
    let (mut most, mut excess) = (vec![0u32; providers], vec![f64::NEG_INFINITY; providers]);
    for (&pair, &shared) in &pairs {
        let (a, b) = ((pair >> 32) as u32, (pair & 0xffff_ffff) as u32);
        let zi = z(a, b);
        for p in [a, b] {
            most[p as usize] = most[p as usize].max(shared);
            excess[p as usize] = excess[p as usize].max(zi);
        }
    }
    let mut claim_excess = vec![0.0; n];
    for (run, ps) in runs.iter().zip(&distinct) {
        for claims in run.chunk_by(|&a, &b| provider[a] == provider[b]) {
            let a = provider[claims[0]];
            let best = ps.iter().filter(|&&b| b != a).map(|&b| z(a, b)).fold(0.0, f64::max);
            for &i in claims {
                claim_excess[i] = best;
            }
        }
    }
    let mut names = vec![""; providers];
    for (i, &p) in provider.iter().enumerate() {
        names[p as usize] = provider_id[i].as_str();
    }
    let shared = |p: usize| most[p] > 0;
    Sharing {
        most: (0..providers).filter(|&p| shared(p)).map(|p| (names[p].to_string(), f64::from(most[p]))).collect(),
        excess: (0..providers).filter(|&p| shared(p)).map(|p| (names[p].to_string(), excess[p])).collect(),
        claim_excess,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing_of(rows: &[(&str, &str)]) -> Sharing {
        let (p, m): (Vec<String>, Vec<String>) = rows.iter().map(|(p, m)| (p.to_string(), m.to_string())).unzip();
        member_sharing(&m, &p)
    }

    #[test]
    fn shared_members_counts_the_largest_overlap_with_one_other_provider() {
        // m1: A B C; m2: A B; m3: A C; m4: D alone; m1 billed twice by A; a
        // care-management claim (no provider) and a claim without a member.
        let rows = [("A", "m1"), ("B", "m1"), ("C", "m1"), ("A", "m2"), ("B", "m2"), ("A", "m3"), ("C", "m3")];
        let rows: Vec<_> = rows.iter().chain(&[("D", "m4"), ("A", "m1"), ("", "m4"), ("D", "#C9")]).copied().collect();
        let sharing = sharing_of(&rows);
        // A shares m1, m2 with B and m1, m3 with C; B and C share m1 only.
        let expected: HashMap<String, f64> =
            [("A", 2.0), ("B", 2.0), ("C", 2.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(sharing.most, expected, "D shares nothing and is absent");
        // 4 members take part (m1..m4): A has 3, B 2, C 2.
        let ab = overlap_z(2, 3, 2, 4);
        assert!((sharing.excess["B"] - ab).abs() < 1e-12);
        assert!((sharing.excess["A"] - ab).abs() < 1e-12, "A shares 2 with B and 2 with C");
        // m4 saw only D; the claims without a provider or member take no part.
        assert_eq!([7, 9, 10].map(|i| sharing.claim_excess[i]), [0.0; 3]);
        // m1's claim at B: B's best other provider of m1 is A (2 shared) over C (1).
        assert!((sharing.claim_excess[1] - ab.max(overlap_z(1, 2, 2, 4))).abs() < 1e-12);
        assert_eq!(sharing.claim_excess[0], sharing.claim_excess[8], "both of m1's claims at A");
    }

    #[test]
    fn a_ring_sharing_few_members_far_beyond_chance_stands_out_from_busy_providers() {
        // 2,000 members; two busy providers P and Q see 1,000 members each,
        // at random (about 500 in common, as chance gives); ring providers R1
        // and R2 see the same 20 members and nobody else.
        let mut rows = Vec::new();
        let members: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
        for (i, m) in members.iter().enumerate() {
            if i % 2 == 0 {
                rows.push(("P", m.as_str()));
            }
            if (i * 7919) % 2000 < 1000 {
                rows.push(("Q", m.as_str()));
            }
            if i < 20 {
                rows.extend([("R1", m.as_str()), ("R2", m.as_str())]);
            }
        }
        let sharing = sharing_of(&rows);
        assert!(sharing.most["P"] > sharing.most["R1"], "the busy pair shares more members");
        assert!(sharing.excess["R1"] > 3.0 && sharing.excess["R1"] > 2.0 * sharing.excess["P"].max(0.0), "{sharing:?}");
        let ring_claim = rows.iter().position(|(p, _)| *p == "R1").unwrap();
        let busy_claim = rows.iter().rposition(|(p, _)| *p == "P").unwrap();
        assert!(sharing.claim_excess[ring_claim] > 3.0);
        assert!(sharing.claim_excess[busy_claim] < 3.0, "{}", sharing.claim_excess[busy_claim]);
    }
}
