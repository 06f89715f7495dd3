//! `gold.toml`, and how the global flags, the config and the environment
//! combine.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::UserError;

/// The config file. Secrets never live here: they come from environment
/// variables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) warehouse: WarehouseConfig,
    #[serde(default)]
    pub(crate) models: ModelsConfig,
    #[serde(default)]
    pub(crate) build: BuildConfig,
    /// Who sees PII in `gold sql` (and later reports and exports).
    #[serde(default = "default_roles")]
    pub(crate) roles: std::collections::BTreeMap<String, RoleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleConfig {
    /// Sees PII-tagged columns as they are. Otherwise names, emails and
    /// other PII are hidden, dates of birth reduced to the year, and
    /// member and patient ids pseudonymised with keyed BLAKE3 (the key is
    /// the GOLD_PII_KEY environment variable).
    #[serde(default)]
    pub(crate) sees_pii: bool,
}

pub(crate) fn default_roles() -> std::collections::BTreeMap<String, RoleConfig> {
    [("analyst".to_string(), RoleConfig { sees_pii: false }), ("auditor".to_string(), RoleConfig { sees_pii: true })]
        .into_iter()
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildConfig {
    /// How often a stage that failed on a transient error (a database or
    /// object store that did not answer) is tried again, waiting 1, 2, 4, …
    /// seconds (at most 30) in between.
    #[serde(default = "default_retries")]
    pub(crate) retries: u32,
}

fn default_retries() -> u32 {
    3
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self { retries: default_retries() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelsConfig {
    /// The models folder, relative to the config file's folder.
    pub(crate) dir: Option<PathBuf>,
}

/// Where the models file or folder `rel` is: in the configured models
/// folder (relative to the config file's folder), else `./models/rel` when
/// it exists; `None` means the copy built into gold.
fn models_path(config: &Config, config_dir: Option<&Path>, rel: &str) -> Option<PathBuf> {
    match &config.models.dir {
        Some(d) => Some(config_dir.map_or_else(|| d.clone(), |base| base.join(d)).join(rel)),
        None => Some(PathBuf::from("models").join(rel)).filter(|p| p.exists()),
    }
}

/// The source catalog: `sources.toml` in the configured models folder, else
/// `./models/sources.toml` when it exists, else the one built into gold.
pub(crate) fn source_catalog(config: &Config, config_dir: Option<&Path>) -> anyhow::Result<ingest::SourceCatalog> {
    match models_path(config, config_dir, "sources.toml") {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| UserError(format!("cannot read {}: {e}", path.display())))?;
            Ok(ingest::SourceCatalog::parse(&text, &path.display().to_string())?)
        }
        None => Ok(ingest::SourceCatalog::default_catalog()?),
    }
}

/// The silver models: `silver/` in the configured models folder, else
/// `./models/silver/` when it exists, else the ones built into gold.
pub(crate) fn silver_catalog(config: &Config, config_dir: Option<&Path>) -> anyhow::Result<silver::SilverCatalog> {
    match models_path(config, config_dir, "silver") {
        Some(dir) => Ok(silver::SilverCatalog::load_dir(&dir)?),
        None => Ok(silver::SilverCatalog::default_catalog()?),
    }
}

/// The dimensions: `dims.toml` in the configured models folder, else
/// `./models/dims.toml` when it exists, else the ones built into gold.
pub(crate) fn dim_catalog(config: &Config, config_dir: Option<&Path>) -> anyhow::Result<dims::DimCatalog> {
    match models_path(config, config_dir, "dims.toml") {
        Some(path) => Ok(dims::DimCatalog::load(&path)?),
        None => Ok(dims::DimCatalog::default_catalog()?),
    }
}

/// The fraud scoring model: `scoring.toml` in the configured models
/// folder, else `./models/scoring.toml` when it exists, else the one built
/// into gold.
pub(crate) fn scoring_config(config: &Config, config_dir: Option<&Path>) -> anyhow::Result<scoring::ScoringConfig> {
    match models_path(config, config_dir, "scoring.toml") {
        Some(path) => Ok(scoring::ScoringConfig::load(&path)?),
        None => Ok(scoring::ScoringConfig::default_config()?),
    }
}

/// The aggregates: every `gold/*.sql` in the configured models folder,
/// else in `./models/gold/` when it exists, else the ones built into gold.
pub(crate) fn aggregate_catalog(
    config: &Config,
    config_dir: Option<&Path>,
) -> anyhow::Result<aggregates::AggregateCatalog> {
    let catalog = match models_path(config, config_dir, "gold") {
        Some(dir) => aggregates::AggregateCatalog::load_dir(&dir)?,
        None => aggregates::AggregateCatalog::default_catalog()?,
    };
    // The score stage's tables are its own: a model must not overwrite them.
    let taken = [scoring::FRAUD_SCORES, scoring::PROVIDER_RISK, scoring::MODELS];
    if let Some(m) = catalog.models().iter().find(|m| taken.contains(&m.table.as_str())) {
        return Err(UserError(format!(
            "aggregate model {}: {} is written by the score stage; name the aggregate otherwise",
            m.origin, m.table
        ))
        .into());
    }
    Ok(catalog)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WarehouseConfig {
    /// Warehouse root, relative to the config file's folder when it is a
    /// relative path.
    pub(crate) root: Option<String>,
    /// Options of the object store the warehouse is on (endpoint, region,
    /// emulator…), as the deltalake crate names them. No secrets: those
    /// come from the environment.
    #[serde(default)]
    pub(crate) storage: BTreeMap<String, String>,
}

/// Where the warehouse is, and the options of its object store.
#[derive(Clone, Debug)]
pub(crate) struct WarehouseLocation {
    pub(crate) uri: String,
    pub(crate) storage: HashMap<String, String>,
}

impl std::fmt::Display for WarehouseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri)
    }
}

/// Words that mark a storage option as a credential, which belongs in the
/// environment (e.g. `AWS_SECRET_ACCESS_KEY`), not in gold.toml.
const SECRET_WORDS: [&str; 6] = ["secret", "key", "token", "password", "sas", "credential"];

/// Refuses credentials among the `[warehouse.storage]` options, naming the
/// environment variable to use instead.
pub(crate) fn check_storage_options(options: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for key in options.keys() {
        let lower = key.to_ascii_lowercase();
        if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
            return Err(UserError(format!(
                "[warehouse.storage] {key}: credentials never go in gold.toml; set the environment variable {} instead",
                key.to_ascii_uppercase()
            ))
            .into());
        }
    }
    Ok(())
}

/// The config that applies: `--config FILE`, else `./gold.toml` when it
/// exists, else the defaults. Also returns the file's folder.
pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new("gold.toml").is_file() => PathBuf::from("gold.toml"),
        None => return Ok((Config::default(), None)),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| UserError(format!("cannot read config {}: {e}", path.display())))?;
    let config: Config = toml::from_str(&text)
        .map_err(|e| UserError(format!("config {}: {}", path.display(), e.to_string().trim_end())))?;
    let dir = path.parent().map(|d| if d.as_os_str().is_empty() { PathBuf::from(".") } else { d.to_path_buf() });
    Ok((config, dir))
}

/// The warehouse location: the flag, else the config, else
/// `$GOLD_WAREHOUSE`, else `./warehouse`; with the config's storage options.
pub(crate) fn warehouse_location(
    flag: Option<&str>,
    config: &Config,
    config_dir: Option<&Path>,
) -> anyhow::Result<WarehouseLocation> {
    check_storage_options(&config.warehouse.storage)?;
    let uri = if let Some(flag) = flag {
        flag.to_string()
    } else if let Some(root) = &config.warehouse.root {
        let is_uri = root.contains("://");
        match config_dir {
            Some(dir) if !is_uri && Path::new(root).is_relative() => dir.join(root).display().to_string(),
            _ => root.clone(),
        }
    } else {
        std::env::var("GOLD_WAREHOUSE").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "./warehouse".to_string())
    };
    let storage = config.warehouse.storage.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(WarehouseLocation { uri, storage })
}

/// Opens the warehouse, naming the location in any error.
pub(crate) fn open_warehouse(location: &WarehouseLocation) -> anyhow::Result<storage::Warehouse> {
    storage::Warehouse::open_with(&location.uri, location.storage.clone())
        .with_context(|| format!("cannot open warehouse {location}"))
}
