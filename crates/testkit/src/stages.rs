//! A generated landing built through the stages ahead of the one under
//! test, with the default models. Each stage is behind the feature of its
//! name, which brings the stages before it.

use std::path::Path;

use storage::{RunContext, Warehouse};

/// Generates an insurer of `members` over `days` days into `dir` with
/// `seed` (every other setting at its default).
pub async fn generate(dir: &Path, members: u64, days: u32, seed: u64) -> synth::Summary {
    let config = synth::Config { members, days, seed, ..synth::Config::new(dir) };
    synth::generate(&config, &mut |_, _| {}).await.unwrap_or_else(|e| panic!("generate into {}: {e}", dir.display()))
}

/// The default source catalog.
pub fn sources() -> ingest::SourceCatalog {
    ingest::SourceCatalog::default_catalog().expect("the default sources parse")
}

/// Ingests `landing` up to `run`'s date with the default sources.
pub async fn ingest(warehouse: &Warehouse, run: &RunContext, landing: &Path) -> ingest::IngestReport {
    let options = ingest::IngestOptions { landing, up_to: run.clock.logical_date() };
    ingest::ingest(warehouse, run, &sources(), &options).await.unwrap_or_else(|e| panic!("ingest: {e}"))
}

/// The default silver models.
#[cfg(feature = "silver")]
pub fn silver_models() -> silver::SilverCatalog {
    silver::SilverCatalog::default_catalog().expect("the default silver models parse")
}

/// Ingest, then silver with the default models.
#[cfg(feature = "silver")]
pub async fn through_silver(warehouse: &Warehouse, run: &RunContext, landing: &Path) -> silver::SilverReport {
    ingest(warehouse, run, landing).await;
    silver::build_silver(warehouse, run, &silver_models()).await.unwrap_or_else(|e| panic!("silver: {e}"))
}

/// The default dimensions.
#[cfg(feature = "dims")]
pub fn dim_models() -> dims::DimCatalog {
    dims::DimCatalog::default_catalog().expect("the default dims parse")
}

/// Ingest, silver, then the dimensions, with the default models.
#[cfg(feature = "dims")]
pub async fn through_dims(warehouse: &Warehouse, run: &RunContext, landing: &Path) -> Vec<dims::DimReport> {
    through_silver(warehouse, run, landing).await;
    dims::build_dims(warehouse, run, &dim_models()).await.unwrap_or_else(|e| panic!("dims: {e}"))
}

/// One nightly build of `run`'s date through the facts (with `options`),
/// with the default models.
#[cfg(feature = "facts")]
pub async fn through_facts(
    warehouse: &Warehouse,
    run: &RunContext,
    landing: &Path,
    options: facts::FactOptions,
) -> facts::FactsReport {
    through_dims(warehouse, run, landing).await;
    facts::build_facts(warehouse, run, &dim_models(), options).await.unwrap_or_else(|e| panic!("facts: {e}"))
}
