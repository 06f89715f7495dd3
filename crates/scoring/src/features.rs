//! Claim and provider features, computed from the facts with DataFusion and
//! normalised within peer groups.
//!
//! The SQL gathers, per claim, what the facts and the dimensions say
//! (amount, status, specialty, coverage, weekend service). What depends on
//! a claim's procedure codes (signature, E/M level, duplicate rank,
//! unbundled components), how much more often a claim's provider bills its
//! codes than the provider's specialty does, and how many members
//! providers share, are counted in Rust over integer ids. Peer
//! normalisation (robust z-scores within the claim's code signature or
//! specialty) is done here in Rust on the collected columns.

use std::sync::Arc;

// foldhash rather than SipHash: the features hash millions of claim,
// member, provider and code ids per build, and need no DoS resistance.
use hashbrown::{HashMap, HashSet};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Float64Type, Int32Type};
use deltalake::datafusion::prelude::SessionContext;
use futures::StreamExt;
use ndarray::Array2;
use storage::{TableName, Warehouse};

use crate::config::ScoringConfig;
use crate::{Error, Result};

/// The tables the features read, with the version read.
pub const INPUT_TABLES: [&str; 7] = [
    "fact_claims",
    "fact_claim_procedures",
    "fact_claim_diagnoses",
    "dim_diagnosis",
    "dim_date",
    "dim_members",
    "silver_provider_specialties",
];

/// Input tables a warehouse may not have yet (a landing without a medical
/// events feed): the features are computed without them, and the versions
/// name them only when they were read.
pub const OPTIONAL_INPUT_TABLES: [&str; 1] = ["fact_medical_events"];

/// Claim-level features, in the order of the model's columns.
pub const CLAIM_FEATURES: [&str; 17] = [
    "amount_vs_code_peers",
    "amount_vs_specialty_peers",
    "duplicate_signature",
    "service_after_coverage_end",
    "unbundled_components",
    "procedure_count_vs_specialty",
    "em_level_vs_specialty",
    "code_overuse_at_provider",
    "weekend_or_holiday",
    "weekend_at_weekend_heavy_provider",
    "after_coverage_at_provider",
    "members_shared_beyond_chance",
    "amount_above_peers_at_provider",
    "high_level_at_provider",
    "code_set_overuse_at_provider",
    "high_level_new_to_provider",
    "new_member_at_provider",
];

/// Provider-level features, in the order of the model's columns.
pub const PROVIDER_FEATURES: [&str; 13] = [
    "claims_per_member",
    "services_per_member_day",
    "amount_z_mean",
    "high_level_code_share",
    "weekend_share",
    "denial_rate",
    "shared_members_max",
    "duplicate_share",
    "after_coverage_share",
    "unbundled_share",
    "code_overuse_max",
    "procedures_per_claim",
    "shared_members_excess",
];

/// The revision of how the features are computed, stored in each model.
/// A model fitted to features computed another way is stale: the score
/// stage of `gold build` trains a new one rather than apply it to features
/// it was not fitted on. Bump it whenever a feature's definition changes.
pub const FEATURES_REVISION: u32 = 3;

/// The smallest peer group whose own statistics are used; smaller groups
/// fall back to a wider peer group.
const MIN_PEERS: usize = 30;
/// The group key of a value that has no peer group of its own (a provider
/// whose specialty is unknown): [`peer_z`] measures it against its
/// fallback group at once.
const NO_PEERS: &str = "\u{0}no peers";
/// Robust z-scores are clipped to this, so one feature cannot dwarf the
/// geometry of every detector.
pub(crate) const Z_CLIP: f64 = 12.0;

/// Claims serviced within `[from_key, to_key]` (yyyymmdd date keys).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from_key: i32,
    pub to_key: i32,
}

/// The features of a set of claims and of their providers.
#[derive(Debug)]
pub struct FeatureSet {
    pub claims: ClaimTable,
    pub providers: ProviderTable,
    /// The version of each input table read.
    pub versions: Vec<(String, i64)>,
}

#[derive(Debug, Default)]
pub struct ClaimTable {
    pub claim_id: Vec<String>,
    pub provider_id: Vec<String>,
    pub amount: Vec<f64>,
    pub status: Vec<String>,
    /// The service date key (the claim date's for a claim without one).
    pub serviced_key: Vec<i32>,
    /// `claims x CLAIM_FEATURES`, peer-normalised.
    pub values: Array2<f64>,
    /// The amount is above the 99th percentile of the claim's code peers.
    pub above_code_p99: Vec<bool>,
}

#[derive(Debug, Default)]
pub struct ProviderTable {
    pub provider_id: Vec<String>,
    pub specialty: Vec<String>,
    pub claims: Vec<u64>,
    /// `providers x PROVIDER_FEATURES`, peer-normalised.
    pub values: Array2<f64>,
}

/// Raw per-claim columns: what the SQL returns, then what is counted in Rust.
#[derive(Default)]
struct RawClaims {
    claim_id: Vec<String>,
    provider_id: Vec<String>,
    member_id: Vec<String>,
    specialty: Vec<String>,
    signature: Vec<String>,
    first_code: Vec<String>,
    service_date_key: Vec<i32>,
    claim_date_key: Vec<i32>,
    amount: Vec<f64>,
    status: Vec<String>,
    n_proc: Vec<f64>,
    em_level: Vec<f64>,
    dup_rank: Vec<f64>,
    prev_amount: Vec<f64>,
    after_coverage: Vec<f64>,
    unbundled: Vec<f64>,
    weekend: Vec<f64>,
    overuse: Vec<f64>,
    set_overuse: Vec<f64>,
    /// The other records tying the claim's member to its provider.
    ties: Vec<f64>,
}

/// The claims serviced in the window (`{from}`/`{to}` are date keys), in
/// claim id order, with what the joins say of each: the provider's
/// specialty, whether the claim was serviced after the extract that showed
/// the member's coverage ended, and whether on a weekend or holiday. A
/// claim whose feed sends no service date (the claims stream, the
/// care-management feed: its key is the unknown date, -1) counts as
/// serviced on its claim date, for the window and for every date feature.
///
/// What depends on a claim's procedure codes (its signature, duplicate
/// rank, unbundling) is counted in Rust over integer ids ([`Procedures`]):
/// the same in SQL (an ordered `array_agg` per claim, a window function
/// partitioned by four string keys, and self-joins of the day's codes)
/// took two thirds of the score stage at a million members.
const CLAIMS_SQL: &str = r#"
WITH f AS (
  SELECT *, CASE WHEN service_date_key > 0 THEN service_date_key ELSE claim_date_key END AS serviced_key
  FROM fact_claims
),
c AS (
  SELECT claim_id,
         coalesce(member_id, concat('#', claim_id)) AS member_id,
         coalesce(provider_id, '') AS provider_id,
         member_sk, serviced_key AS service_date_key, claim_date_key,
         CAST(billed_amount AS DOUBLE) AS amount,
         upper(coalesce(status, '')) AS status
  FROM f
  WHERE serviced_key BETWEEN {from} AND {to}
),
spec AS (
  SELECT provider_id, min(specialty) AS specialty
  FROM silver_provider_specialties WHERE position = 1 GROUP BY provider_id
)
SELECT c.claim_id, c.provider_id, c.member_id,
       coalesce(spec.specialty, '') AS specialty,
       c.service_date_key, c.claim_date_key,
       coalesce(c.amount, 0.0) AS amount,
       c.status,
       -- Serviced after the extract that showed the member's coverage ended.
       CASE WHEN m.is_active = false AND dt.date > CAST(m.last_updated AS DATE) THEN 1.0 ELSE 0.0 END AS after_coverage,
       CASE WHEN coalesce(dt.is_weekend, false) OR coalesce(dt.is_federal_holiday, false) THEN 1.0 ELSE 0.0 END AS weekend
FROM c
LEFT JOIN spec ON spec.provider_id = c.provider_id
LEFT JOIN dim_members m ON m.member_sk = c.member_sk
LEFT JOIN dim_date dt ON dt.date_key = c.service_date_key
ORDER BY c.claim_id
"#;

/// Every procedure line; [`Procedures::read`] keeps the window's claims.
const PROCEDURES_SQL: &str = "SELECT claim_id, procedure_code FROM fact_claim_procedures";

/// Every (claim, diagnosis code) pair (a pair may repeat; [`code_overuse`]
/// keeps claims of the window only, each pair once).
const DIAGNOSES_SQL: &str = r#"
SELECT fd.claim_id, dd.code
FROM fact_claim_diagnoses fd JOIN dim_diagnosis dd ON dd.diagnosis_key = fd.diagnosis_key
"#;

/// Every (member, provider) record up to the window's end (`{to}`): the
/// claims of every feed that names both, and the medical events whose
/// provider resolved to a known one. [`Ties`] counts them.
const CLAIM_TIES_SQL: &str = r#"
SELECT member_id, provider_id FROM fact_claims
WHERE member_id IS NOT NULL AND provider_id IS NOT NULL
  AND CASE WHEN service_date_key > 0 THEN service_date_key ELSE claim_date_key END <= {to}
"#;
const EVENT_TIES_SQL: &str = r#"
SELECT patient_id AS member_id, provider_id FROM fact_medical_events
WHERE patient_id IS NOT NULL AND provider_id IS NOT NULL AND event_date_key <= {to}
"#;

/// How well each claim's member knows its provider: the member's other
/// claims with it and the medical events it recorded. An established-patient
/// visit billed at a high level by a provider the member has no other record
/// with is what upcoding looks like; an honest practice's high-level visits
/// are mostly with its own patients.
struct Ties<'a> {
    members: HashMap<&'a str, u32>,
    providers: HashMap<&'a str, u32>,
    counts: HashMap<u64, u32>,
}

impl<'a> Ties<'a> {
    /// Ties among the members and providers of `r`'s claims (claims
    /// without a member or a provider take no part).
    fn new(r: &'a RawClaims) -> Self {
        let (mut members, mut providers) = (HashMap::new(), HashMap::new());
        for (m, p) in r.member_id.iter().zip(&r.provider_id) {
            if !p.is_empty() && !m.starts_with('#') {
                let next = members.len() as u32;
                members.entry(m.as_str()).or_insert(next);
                let next = providers.len() as u32;
                providers.entry(p.as_str()).or_insert(next);
            }
        }
        Self { members, providers, counts: HashMap::new() }
    }

    fn key(&self, member: &str, provider: &str) -> Option<u64> {
        let (m, p) = (self.members.get(member)?, self.providers.get(provider)?);
        Some((u64::from(*m) << 32) | u64::from(*p))
    }

    /// One record of `member` with `provider`.
    fn add(&mut self, member: &str, provider: &str) {
        if let Some(k) = self.key(member, provider) {
            *self.counts.entry(k).or_default() += 1;
        }
    }

    /// Per claim of `r`: the records of its member with its provider other
    /// than the claim itself (which the records include).
    fn others(&self, r: &RawClaims) -> Vec<f64> {
        r.member_id
            .iter()
            .zip(&r.provider_id)
            .map(|(m, p)| {
                let n = self.key(m, p).and_then(|k| self.counts.get(&k)).copied().unwrap_or(0);
                f64::from(n.saturating_sub(1))
            })
            .collect()
    }
}

/// [`Ties::others`] for the claims of `r`, read from the claims and, when
/// `events`, the medical events serviced up to `to`.
async fn ties(ctx: &SessionContext, r: &RawClaims, to: i32, events: bool) -> Result<Vec<f64>> {
    let mut ties = Ties::new(r);
    let to = to.to_string();
    let mut sqls = vec![CLAIM_TIES_SQL.replace("{to}", &to)];
    if events {
        sqls.push(EVENT_TIES_SQL.replace("{to}", &to));
    }
    for sql in sqls {
        stream_strings(ctx, &sql, "member_id", "provider_id", |m, p| ties.add(m, p)).await?;
    }
    Ok(ties.others(r))
}

/// The procedure codes of the window's claims, over integer ids.
struct Procedures {
    /// Code names by id; ids are in the names' byte order.
    names: Vec<String>,
    /// Claim `i`'s distinct codes are `codes[starts[i]..starts[i + 1]]`,
    /// ascending, with how many lines bill each in `units`.
    starts: Vec<usize>,
    codes: Vec<u32>,
    units: Vec<u32>,
}

impl Procedures {
    /// Streams the procedure lines and keeps those of the claims
    /// `claim_index` numbers.
    async fn read(ctx: &SessionContext, claim_index: &HashMap<&str, u32>) -> Result<Self> {
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
    fn new(ids: HashMap<String, u32>, mut lines: Vec<(u32, u32)>, claims: usize) -> Self {
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

    fn of(&self, claim: usize) -> &[u32] {
        &self.codes[self.starts[claim]..self.starts[claim + 1]]
    }

    fn id(&self, code: &str) -> Option<u32> {
        self.names.binary_search_by(|n| n.as_str().cmp(code)).ok().map(|i| i as u32)
    }

    /// The (claim, code id) pairs, sorted and distinct.
    fn pairs(&self) -> Vec<(u32, u32)> {
        (0..self.starts.len() - 1).flat_map(|i| self.of(i).iter().map(move |&c| (i as u32, c))).collect()
    }
}

/// The id of `code` in `ids`, numbered from `first` in order of arrival.
fn intern(ids: &mut HashMap<String, u32>, code: &str, first: u32) -> u32 {
    match ids.get(code) {
        Some(&id) => id,
        None => {
            let id = first + ids.len() as u32;
            ids.insert(code.to_string(), id);
            id
        }
    }
}

/// Streams the `claim_id` and `value` columns of `sql`, calling `each`
/// with the claim's index for every row of a claim `claim_index` holds.
async fn stream_pairs(
    ctx: &SessionContext,
    sql: &str,
    value: &str,
    claim_index: &HashMap<&str, u32>,
    mut each: impl FnMut(u32, &str),
) -> Result<()> {
    stream_strings(ctx, sql, "claim_id", value, |claim, value| {
        if let Some(&claim) = claim_index.get(claim) {
            each(claim, value);
        }
    })
    .await
}

/// Streams the `first` and `second` columns of `sql` as strings, calling
/// `each` for every row whose `first` is not NULL (a NULL `second` is "").
async fn stream_strings(
    ctx: &SessionContext,
    sql: &str,
    first: &str,
    second: &str,
    mut each: impl FnMut(&str, &str),
) -> Result<()> {
    let frame = ctx.sql(sql).await.map_err(|e| Error::query("features", e))?;
    let mut stream = frame.execute_stream().await.map_err(|e| Error::query("features", e))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::query("features", e))?;
        let keys = cast(column(&batch, first)?, &DataType::Utf8).map_err(|e| Error::arrow(first, e))?;
        let values = cast(column(&batch, second)?, &DataType::Utf8).map_err(|e| Error::arrow(second, e))?;
        let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
        for i in 0..batch.num_rows() {
            if keys.is_valid(i) {
                each(keys.value(i), if values.is_valid(i) { values.value(i) } else { "" });
            }
        }
    }
    Ok(())
}

/// Each claim's signature (its distinct procedure codes joined by `;`),
/// first code, procedure lines and highest E/M level, from `procs`.
fn signatures(r: &mut RawClaims, procs: &Procedures, config: &ScoringConfig) {
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
fn duplicate_ranks(r: &mut RawClaims, procs: &Procedures, member: &[u32], provider: &[u32]) {
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
fn unbundled(r: &RawClaims, procs: &Procedures, config: &ScoringConfig, member: &[u32], provider: &[u32]) -> Vec<f64> {
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
async fn code_overuse(
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

/// Dense ids for `keys` (equal keys, equal ids) and how many distinct keys.
fn dense_ids(keys: &[String]) -> (Vec<u32>, usize) {
    let groups = Groups::of(keys);
    (groups.id, groups.count)
}

/// What the members that providers share say, counted over the window's
/// claims (claims without a provider, the care-management feed's, and
/// claims without a member, whose member id is `#` and the claim id, take
/// no part).
#[derive(Debug, Default, PartialEq)]
struct Sharing {
    /// Per provider: how many members it shares with the provider it
    /// shares most with.
    most: HashMap<String, f64>,
    /// Per provider: how far its largest overlap with one other provider
    /// is above chance, as a Poisson z-score.
    excess: HashMap<String, f64>,
    /// Per claim: how far above chance the claim's provider shares members
    /// with another provider of the same member (0 when the member saw no
    /// other provider).
    claim_excess: Vec<f64>,
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
fn member_sharing(member_id: &[String], provider_id: &[String]) -> Sharing {
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

/// The latest version of every input table.
pub async fn input_versions(warehouse: &Warehouse) -> Result<Vec<(String, i64)>> {
    let mut versions = Vec::new();
    for t in INPUT_TABLES {
        let table = warehouse.load(&TableName::new(t)?).await?.ok_or_else(|| Error::MissingInput(t.to_string()))?;
        let v =
            table.version().and_then(|v| i64::try_from(v).ok()).ok_or_else(|| Error::MissingInput(t.to_string()))?;
        versions.push((t.to_string(), v));
    }
    for t in OPTIONAL_INPUT_TABLES {
        if let Some(table) = warehouse.load(&TableName::new(t)?).await?
            && let Some(v) = table.version().and_then(|v| i64::try_from(v).ok())
        {
            versions.push((t.to_string(), v));
        }
    }
    Ok(versions)
}

/// Computes the features of the claims serviced in `window`, from the
/// input tables at `versions` (from [`input_versions`]).
pub async fn compute(
    warehouse: &Warehouse,
    config: &ScoringConfig,
    window: Window,
    versions: Vec<(String, i64)>,
) -> Result<FeatureSet> {
    let ctx = Warehouse::session();
    for (t, v) in &versions {
        warehouse.register(&ctx, &TableName::new(t)?, Some(*v)).await?;
    }
    let sql = CLAIMS_SQL.replace("{from}", &window.from_key.to_string()).replace("{to}", &window.to_key.to_string());
    let started = std::time::Instant::now();
    let mut raw = raw_claims(&collect(&ctx, &sql).await?)?;
    tracing::info!(claims = raw.claim_id.len(), seconds = started.elapsed().as_secs_f64(), "claim columns read");
    let claim_index: HashMap<&str, u32> =
        raw.claim_id.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    let procs = Procedures::read(&ctx, &claim_index).await?;
    tracing::info!(
        lines = procs.units.iter().map(|&u| u as usize).sum::<usize>(),
        seconds = started.elapsed().as_secs_f64(),
        "procedures read"
    );
    let (overuse, set_overuse) = code_overuse(&ctx, &raw, &claim_index, &procs).await?;
    drop(claim_index);
    (raw.overuse, raw.set_overuse) = (overuse, set_overuse);
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "code over-use counted");
    signatures(&mut raw, &procs, config);
    let (member, _) = dense_ids(&raw.member_id);
    let provider = Groups::of(&raw.provider_id);
    duplicate_ranks(&mut raw, &procs, &member, &provider.id);
    if let Some(tolerance) = config.scores.duplicate_amount_tolerance {
        keep_same_amount_duplicates(&mut raw, tolerance);
    }
    raw.unbundled = unbundled(&raw, &procs, config, &member, &provider.id);
    drop(procs);
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "signatures, duplicates and bundles counted");
    let events = versions.iter().any(|(t, _)| t == OPTIONAL_INPUT_TABLES[0]);
    raw.ties = ties(&ctx, &raw, window.to_key, events).await?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "member and provider ties counted");
    let sharing = member_sharing(&raw.member_id, &raw.provider_id);
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "shared members counted");
    let claims = claim_features(&raw, &provider, &sharing.claim_excess);
    let providers = provider_features(&raw, &claims, &sharing);
    tracing::info!(
        providers = providers.provider_id.len(),
        seconds = started.elapsed().as_secs_f64(),
        "features normalised"
    );
    Ok(FeatureSet { claims, providers, versions })
}

async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let frame = ctx.sql(sql).await.map_err(|e| Error::query("features", e))?;
    frame.collect().await.map_err(|e| Error::query("features", e))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    batch.column_by_name(name).ok_or_else(|| Error::Column { column: name.to_string(), reason: "is missing".into() })
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let col = cast(column(batch, name)?, &DataType::Utf8).map_err(|e| Error::arrow(name, e))?;
    let col = col.as_string::<i32>();
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i).to_string() } else { String::new() }).collect())
}

fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let col = cast(column(batch, name)?, &DataType::Float64).map_err(|e| Error::arrow(name, e))?;
    let col = col.as_primitive::<Float64Type>();
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i) } else { 0.0 }).collect())
}

fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<i32>> {
    let col = cast(column(batch, name)?, &DataType::Int32).map_err(|e| Error::arrow(name, e))?;
    let col = col.as_primitive::<Int32Type>();
    Ok((0..col.len()).map(|i| if col.is_valid(i) { col.value(i) } else { -1 }).collect())
}

/// The columns [`CLAIMS_SQL`] returns; the others are counted later.
fn raw_claims(batches: &[RecordBatch]) -> Result<RawClaims> {
    let mut r = RawClaims::default();
    for b in batches {
        r.claim_id.extend(strings(b, "claim_id")?);
        r.provider_id.extend(strings(b, "provider_id")?);
        r.member_id.extend(strings(b, "member_id")?);
        r.specialty.extend(strings(b, "specialty")?);
        r.service_date_key.extend(ints(b, "service_date_key")?);
        r.claim_date_key.extend(ints(b, "claim_date_key")?);
        r.amount.extend(floats(b, "amount")?);
        r.status.extend(strings(b, "status")?);
        r.after_coverage.extend(floats(b, "after_coverage")?);
        r.weekend.extend(floats(b, "weekend")?);
    }
    Ok(r)
}

/// A claim is a duplicate only if it bills the amount of the claim before
/// it (same member, provider, service date and codes) within `tolerance`
/// of the larger amount; two visits billed differently are not.
fn keep_same_amount_duplicates(r: &mut RawClaims, tolerance: f64) {
    for i in 0..r.dup_rank.len() {
        let (a, b) = (r.amount[i], r.prev_amount[i]);
        if r.dup_rank[i] > 0.0 && (a - b).abs() > tolerance * a.abs().max(b.abs()) {
            r.dup_rank[i] = 0.0;
        }
    }
}

/// Median and robust scale of `values`: 1.4826 x the median absolute
/// deviation, floored by 1.2533 x the mean absolute deviation (which is
/// not zero when most values sit at the median) and by `floor`.
pub(crate) fn robust_center_scale(values: &mut [f64], floor: f64) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let median = median_of(values);
    let mean_ad = values.iter().map(|v| (v - median).abs()).sum::<f64>() / values.len() as f64;
    for v in values.iter_mut() {
        *v = (*v - median).abs();
    }
    let mad = median_of(values);
    let scale = (1.4826 * mad).max(1.2533 * mean_ad).max(floor);
    (median, scale)
}

fn median_of(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if values.len().is_multiple_of(2) {
        let lower = values[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + m) / 2.0
    } else {
        m
    }
}

fn clip(z: f64) -> f64 {
    if z.is_finite() { z.clamp(-Z_CLIP, Z_CLIP) } else { 0.0 }
}

/// Dense group ids of one grouping of the rows, computed once and shared
/// by every statistic taken within it (equal keys, equal ids).
struct Groups {
    id: Vec<u32>,
    count: usize,
    /// The id of [`NO_PEERS`], when a row has it.
    no_peers: Option<u32>,
}

impl Groups {
    fn of<S: AsRef<str>>(keys: &[S]) -> Self {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let id = keys
            .iter()
            .map(|k| {
                let next = index.len() as u32;
                *index.entry(k.as_ref()).or_insert(next)
            })
            .collect();
        let no_peers = index.get(NO_PEERS).copied();
        Self { id, count: index.len(), no_peers }
    }

    /// One group of every row.
    fn all(rows: usize) -> Self {
        Self { id: vec![0; rows], count: usize::from(rows > 0), no_peers: None }
    }

    /// Each group's values, in row order.
    fn split(&self, values: &[f64]) -> Vec<Vec<f64>> {
        let mut by: Vec<Vec<f64>> = vec![Vec::new(); self.count];
        for (&g, &v) in self.id.iter().zip(values) {
            by[g as usize].push(v);
        }
        by
    }
}

/// Robust z-scores of `values` within `group`, falling back to
/// `fallback`'s groups (and then to all values) for groups of fewer than
/// [`MIN_PEERS`] and for [`NO_PEERS`].
fn peer_z(values: &[f64], group: &Groups, fallback: Option<&Groups>, floor: f64) -> Vec<f64> {
    let stats = |groups: &Groups| -> Vec<(usize, f64, f64)> {
        groups
            .split(values)
            .into_iter()
            .map(|mut vs| {
                let n = vs.len();
                let (m, s) = robust_center_scale(&mut vs, floor);
                (n, m, s)
            })
            .collect()
    };
    let primary = stats(group);
    let secondary = fallback.map(stats);
    let (gm, gs) = robust_center_scale(&mut values.to_vec(), floor);
    (0..values.len())
        .map(|i| {
            let g = group.id[i];
            let (n, m, s) = primary[g as usize];
            let (m, s) = if n >= MIN_PEERS && Some(g) != group.no_peers {
                (m, s)
            } else {
                match (fallback, &secondary) {
                    (Some(f), Some(stats)) if stats[f.id[i] as usize].0 >= MIN_PEERS => {
                        let (_, m, s) = stats[f.id[i] as usize];
                        (m, s)
                    }
                    _ => (gm, gs),
                }
            };
            clip((values[i] - m) / s)
        })
        .collect()
}

/// The 99th percentile of `values` within each group of at least
/// [`MIN_PEERS`]; `true` where a value is above it.
fn above_p99(values: &[f64], group: &Groups) -> Vec<bool> {
    let p99: Vec<Option<f64>> = group
        .split(values)
        .into_iter()
        .map(|mut vs| {
            (vs.len() >= MIN_PEERS).then(|| {
                vs.sort_by(f64::total_cmp);
                let at = ((vs.len() as f64 * 0.99).ceil() as usize).saturating_sub(1).min(vs.len() - 1);
                vs[at]
            })
        })
        .collect();
    values.iter().zip(&group.id).map(|(v, &g)| p99[g as usize].is_some_and(|p| *v > p)).collect()
}

/// Runs `jobs` on up to as many threads as there are cores; their results
/// in the jobs' order.
fn in_parallel<T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send + '_>>) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(jobs.len()).max(1);
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        // A poisoned queue only means another job panicked; that
                        // panic is re-raised by its join below.
                        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
                        let Some((i, job)) = next else { break };
                        out.push((i, job()));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// A claim's amount is high for its codes above this robust z-score.
const HIGH_AMOUNT_Z: f64 = 2.0;
/// E/M levels from this one up are high-level codes.
const HIGH_LEVEL: f64 = 4.0;

/// `provider`: the claims' provider ids, as [`Groups`].
fn claim_features(r: &RawClaims, provider: &Groups, shared_excess: &[f64]) -> ClaimTable {
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
        in_parallel(peer).try_into().unwrap_or_else(|_| unreachable!("ten jobs give ten columns"));
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
    ClaimTable {
        claim_id: r.claim_id.clone(),
        provider_id: r.provider_id.clone(),
        amount: r.amount.clone(),
        status: r.status.clone(),
        serviced_key: r.service_date_key.clone(),
        values,
        above_code_p99: above_p99(&ln_amount, &signature),
    }
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

/// How far `hits` of `trials` is above the rate `p`, in binomial standard
/// deviations (with one pseudo-trial so that tiny providers stay small).
fn binomial_z(hits: f64, trials: f64, p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (hits - trials * p) / (trials * p * (1.0 - p) + 1.0).sqrt()
}

fn provider_features(r: &RawClaims, claims: &ClaimTable, sharing: &Sharing) -> ProviderTable {
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
    let (member, _) = dense_ids(&r.member_id);
    let mut by: HashMap<&str, Acc> = HashMap::new();
    // Per specialty: E/M claims, high-level ones, claims, weekend, denied,
    // duplicates, after coverage, unbundled.
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
    let mut ids: Vec<&str> = by.keys().copied().collect();
    ids.sort_unstable();
    let raw: Vec<[f64; 13]> = ids
        .iter()
        .map(|id| {
            let a = &by[id];
            let s = spec_rates[a.specialty.as_str()];
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
        .collect();
    let specialty: Vec<String> = ids.iter().map(|id| by[id].specialty.clone()).collect();
    // Providers of an unknown specialty (billing ids silver_providers does
    // not hold, most with one to three claims) are no peer group: among
    // them, a practice of 200 claims seeing each member twice stood 12
    // robust deviations above the one-claim-per-member majority. They, and
    // the providers of a specialty too small to be its own group, are
    // measured against the providers of a similar volume instead: claims
    // within the same power of two.
    let spec_keys: Vec<&str> = specialty.iter().map(|s| if s.is_empty() { NO_PEERS } else { s.as_str() }).collect();
    let volume: Vec<String> = ids.iter().map(|id| (by[id].claims as u64).max(1).ilog2().to_string()).collect();
    let volume: Vec<&str> = volume.iter().map(String::as_str).collect();
    let (spec_keys, volume, everyone) = (Groups::of(&spec_keys), Groups::of(&volume), Groups::all(ids.len()));
    let mut values = Array2::zeros((ids.len(), PROVIDER_FEATURES.len()));
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
    ProviderTable {
        provider_id: ids.iter().map(|s| s.to_string()).collect(),
        specialty,
        claims: ids.iter().map(|id| by[id].claims as u64).collect(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bundle;

    #[test]
    fn the_scale_has_a_floor_when_most_peers_sit_at_zero() {
        let mut v = vec![0.0; 990];
        v.extend(vec![1.0; 10]);
        let (m, s) = robust_center_scale(&mut v, 0.0);
        assert_eq!(m, 0.0);
        // MAD is 0; the mean absolute deviation (0.01) keeps it finite.
        assert!((s - 1.2533 * 0.01).abs() < 1e-12, "{s}");
        let mut z = vec![0.0; 10];
        let (_, s) = robust_center_scale(&mut z, 0.05);
        assert_eq!(s, 0.05);
    }

    #[test]
    fn small_peer_groups_fall_back_to_the_wider_group() {
        let mut values = vec![1.0; 40];
        values.extend([5.0, 5.0]);
        let mut group = vec!["big"; 40];
        group.extend(["tiny", "tiny"]);
        let z = peer_z(&values, &Groups::of(&group), None, 0.1);
        // "tiny" has 2 peers: it is measured against everyone, so it stands out.
        assert!(z[40] > 10.0, "{}", z[40]);
        assert_eq!(z[0], 0.0);
    }

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
        assert_eq!(in_parallel(jobs), (0..25).map(|i| i * i).collect::<Vec<_>>());
    }

    #[test]
    fn values_without_peers_are_measured_against_their_fallback_group() {
        // 40 providers of unknown specialty: 38 small ones at 1.0 (volume
        // band "0") and 2 large ones at 2.0 (band "7"), beside 40 family
        // practices at 2.0 (band "7").
        let mut values = vec![1.0; 38];
        values.extend([2.0; 42]);
        let mut group = vec![NO_PEERS; 40];
        group.extend(["family"; 40]);
        let mut volume = vec!["0"; 38];
        volume.extend(["7"; 42]);
        let z = peer_z(&values, &Groups::of(&group), Some(&Groups::of(&volume)), 0.05);
        // Against the other unknowns the large two would be far out; among
        // the providers of their volume they are ordinary.
        assert_eq!(z[38..40], [0.0, 0.0]);
        assert!(z.iter().all(|v| *v == 0.0), "{z:?}");
        // Named as a group of their own, the 38 small ones set the scale.
        let mut named = group.clone();
        named[..40].fill("unknown");
        let z = peer_z(&values, &Groups::of(&named), Some(&Groups::of(&volume)), 0.05);
        assert!(z[38] > 10.0, "{}", z[38]);
    }

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

    /// A claim: member, provider, service date key, claim date key, amount
    /// and procedure lines.
    type Row<'a> = (&'a str, &'a str, i32, i32, f64, &'a [&'a str]);

    /// Claims in claim id order, and their procedures.
    fn claims_of(rows: &[Row]) -> (RawClaims, Procedures) {
        let mut r = RawClaims::default();
        let (mut ids, mut lines) = (HashMap::new(), Vec::new());
        for (i, (member, provider, serviced, claimed, amount, codes)) in rows.iter().enumerate() {
            r.claim_id.push(format!("C{i:03}"));
            r.member_id.push(member.to_string());
            r.provider_id.push(provider.to_string());
            r.service_date_key.push(*serviced);
            r.claim_date_key.push(*claimed);
            r.amount.push(*amount);
            for code in *codes {
                let next = ids.len() as u32;
                lines.push((i as u32, *ids.entry(code.to_string()).or_insert(next)));
            }
        }
        (r, Procedures::new(ids, lines, rows.len()))
    }

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

    #[test]
    fn a_claims_ties_are_its_members_other_records_with_its_provider() {
        let (r, _) = claims_of(&[
            ("m1", "A", 1, 1, 10.0, &["99215"]),
            ("m1", "A", 2, 2, 10.0, &["99213"]),
            ("m1", "B", 2, 2, 10.0, &["99215"]),
            ("m2", "A", 3, 3, 10.0, &["99215"]),
            ("#C004", "A", 3, 3, 10.0, &["99215"]),
            ("m2", "", 3, 3, 10.0, &["99215"]),
        ]);
        let mut ties = Ties::new(&r);
        // The records: every claim above, an event of m2 at A, an event of
        // m1 at a provider none of the claims names, and m3's claim at A.
        for (m, p) in [("m1", "A"), ("m1", "A"), ("m1", "B"), ("m2", "A"), ("m2", "A"), ("m1", "Z"), ("m3", "A")] {
            ties.add(m, p);
        }
        // m1 saw A twice, so each of those claims has one other record; B
        // once; m2's claim at A has the event. Claims without a member or
        // a provider have no ties.
        assert_eq!(ties.others(&r), [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    }

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
