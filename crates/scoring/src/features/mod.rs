//! Claim and provider features, computed from the facts with DataFusion and
//! normalised within peer groups.
//!
//! [`compute`] runs these steps, one module each:
//!
//! 1. `query`: the SQL gathers, per claim, what the facts and the
//!    dimensions say (amount, status, specialty, coverage, weekend
//!    service), into `RawClaims`.
//! 2. `procedures`: what depends on a claim's procedure codes (its
//!    signature, E/M level, duplicate rank, unbundled components).
//! 3. `overuse`: how much more often a claim's provider bills its codes,
//!    and its whole code set, than the provider's specialty does.
//! 4. `ties`: how many other records tie a claim's member to its
//!    provider.
//! 5. `sharing`: how many members providers share, and how far beyond
//!    chance.
//! 6. `claims` and `providers`: the claim features and the provider
//!    aggregates, normalised within peer groups (`peers`: robust
//!    z-scores within the claim's code signature or specialty).
//!
//! Steps 2 to 5 are counted in Rust over integer ids, not in SQL: the same
//! in SQL (an ordered `array_agg` per claim, window functions partitioned
//! by string keys, self-joins and string-keyed pair aggregates) took two
//! thirds of the score stage, or did not fit in memory, at a million
//! members. The ids are hashed with foldhash rather than SipHash: the
//! features hash millions of claim, member, provider and code ids per
//! build, and need no DoS resistance.

mod claims;
#[cfg(test)]
mod fixtures;
mod overuse;
mod peers;
mod procedures;
mod providers;
mod query;
mod sharing;
mod ties;

// foldhash rather than SipHash (see above).
use hashbrown::HashMap;

use ndarray::Array2;
use storage::{TableName, Warehouse};

use crate::config::ScoringConfig;
use crate::{Error, Result};

use claims::claim_features;
use overuse::code_overuse;
use peers::{Groups, dense_ids};
use procedures::{Procedures, duplicate_ranks, keep_same_amount_duplicates, signatures, unbundled};
use providers::provider_features;
use query::{CLAIMS_SQL, collect, raw_claims};
use sharing::member_sharing;
use ties::ties;

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

/// Claims serviced within `[from_key, to_key]` (yyyymmdd date keys).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The first service date key.
    pub from_key: i32,
    /// The last service date key.
    pub to_key: i32,
}

/// The features of a set of claims and of their providers.
#[derive(Debug)]
pub struct FeatureSet {
    /// The claims' features.
    pub claims: ClaimTable,
    /// The providers' features.
    pub providers: ProviderTable,
    /// The version of each input table read.
    pub versions: Vec<(String, i64)>,
}

/// The claims' features, one row per claim in claim id order.
#[derive(Debug, Default)]
pub struct ClaimTable {
    /// The claim ids.
    pub claim_id: Vec<String>,
    /// Each claim's provider ("" for none).
    pub provider_id: Vec<String>,
    /// Each claim's billed amount (0 for none).
    pub amount: Vec<f64>,
    /// Each claim's status, upper case ("" for none).
    pub status: Vec<String>,
    /// The service date key (the claim date's for a claim without one).
    pub serviced_key: Vec<i32>,
    /// `claims x CLAIM_FEATURES`, peer-normalised.
    pub values: Array2<f64>,
    /// The amount is above the 99th percentile of the claim's code peers.
    pub above_code_p99: Vec<bool>,
}

/// The providers' features, one row per provider in provider id order.
#[derive(Debug, Default)]
pub struct ProviderTable {
    /// The provider ids.
    pub provider_id: Vec<String>,
    /// Each provider's specialty ("" when unknown).
    pub specialty: Vec<String>,
    /// Each provider's claims in the window.
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
    let claims = claim_features(&raw, &provider, &sharing.claim_excess)?;
    let providers = provider_features(&raw, &claims, &sharing);
    tracing::info!(
        providers = providers.provider_id.len(),
        seconds = started.elapsed().as_secs_f64(),
        "features normalised"
    );
    Ok(FeatureSet { claims, providers, versions })
}
