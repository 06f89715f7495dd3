//! The models a build reads: one of each kind, parsed and checked.

use crate::{Error, StageError};

/// Every model a build reads, and how often a stage is retried after a
/// transient error (`gold.toml`'s `[build] retries`).
#[derive(Clone, Debug)]
pub struct Models {
    /// `models/sources.toml`: the bronze sources.
    pub sources: ingest::SourceCatalog,
    /// `models/silver/*.toml`: the silver tables.
    pub silver: silver::SilverCatalog,
    /// `models/dims.toml`: the SCD2 dimensions.
    pub dims: dims::DimCatalog,
    /// `models/scoring.toml`: fraud scoring.
    pub scoring: scoring::ScoringConfig,
    /// `models/gold/*.sql`: the aggregates.
    pub aggregates: aggregates::AggregateCatalog,
    /// Retries of a stage after a transient error.
    pub retries: u32,
}

/// How often a stage is retried by default.
pub const DEFAULT_RETRIES: u32 = 3;

impl Models {
    /// The models built into gold (the `reference` crate's copy of
    /// `models/`), with the default retries.
    pub fn defaults() -> Result<Self, Error> {
        let stage = |source: StageError| Error::BuiltInModels(Box::new(source));
        Ok(Self {
            sources: ingest::SourceCatalog::default_catalog().map_err(|e| stage(e.into()))?,
            silver: silver::SilverCatalog::default_catalog().map_err(|e| stage(e.into()))?,
            dims: dims::DimCatalog::default_catalog().map_err(|e| stage(e.into()))?,
            scoring: scoring::ScoringConfig::default_config().map_err(|e| stage(e.into()))?,
            aggregates: aggregates::AggregateCatalog::default_catalog().map_err(|e| stage(e.into()))?,
            retries: DEFAULT_RETRIES,
        })
    }
}
