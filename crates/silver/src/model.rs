//! The silver models: one TOML file per silver table under
//! `models/silver/`, read into [`TableModel`]s and checked before any data
//! is touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// What a failed expectation does to the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Keep the row, count it, and list the rule in its `_dq_warnings`.
    Warn,
    /// Leave the row out of silver, and count it.
    Drop,
    /// Send the row to `quarantine_<table>` with every rule it failed.
    Quarantine,
    /// Abort the run; nothing is committed.
    Fail,
}

impl Action {
    /// The action as models spell it (`warn`, `drop`, `quarantine`,
    /// `fail`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Drop => "drop",
            Self::Quarantine => "quarantine",
            Self::Fail => "fail",
        }
    }
}

/// What a row whose parent is unknown does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Quarantine it; it is released on the first run after its parent
    /// arrives.
    Quarantine,
    /// Keep it, flagged in `_dq_warnings`, so that facts infer the parent.
    Flag,
}

/// One column of the common data model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnModel {
    /// The column's name (names starting with `_` are reserved).
    pub name: String,
    /// The column holds personal data (masked for readers without the
    /// right to see it).
    #[serde(default)]
    pub pii: bool,
    /// What the column holds, for the catalog.
    #[serde(default)]
    pub description: Option<String>,
}

/// One bronze table feeding the silver table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceModel {
    /// The bronze table, e.g. `bronze_members`.
    pub bronze: String,
    /// Each file of this source is a full extract: keys missing from the
    /// newest one are marked deleted.
    #[serde(default)]
    pub snapshot: bool,
    /// Silver column name -> SQL expression over the bronze columns.
    /// Columns left out are NULL for this source.
    pub select: BTreeMap<String, String>,
}

/// A named expectation: a SQL boolean expression every row should meet.
/// NULL counts as failed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The rule's name, as `_failed_rules`, `_dq_warnings` and
    /// `dq_results` list it.
    pub name: String,
    /// The SQL boolean expression over the typed columns.
    pub rule: String,
    /// What a row that fails it does.
    pub action: Action,
    /// Abort the run when more than this share (0..1) of a batch fails.
    #[serde(default)]
    pub fail_above: Option<f64>,
    /// Only rows of these bronze tables are checked (all when absent).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// What the rule checks, for the catalog.
    #[serde(default)]
    pub description: Option<String>,
}

/// Referential integrity: `column` must match `key` of silver `table`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    /// The rule's name, as `_failed_rules`, `_dq_warnings` and
    /// `dq_results` list it.
    pub name: String,
    /// The column of this table holding the parent's key.
    pub column: String,
    /// The parent silver table.
    pub table: String,
    /// The parent's key column.
    pub key: String,
    /// What a row whose parent is unknown does.
    pub on_missing: OnMissing,
    /// Only rows of these bronze tables are checked (all when absent).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

/// A table computed from the silver table's rows by SQL over `parent`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// The derived table's name.
    pub table: String,
    /// The query over `parent` (the silver table's new rows).
    pub sql: String,
    /// What the table holds, for the catalog.
    #[serde(default)]
    pub description: Option<String>,
}

/// One silver table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableModel {
    /// The silver table's name, `silver_<name>`.
    pub table: String,
    /// What the table holds, for the catalog.
    #[serde(default)]
    pub description: Option<String>,
    /// The business key: one silver row per key.
    pub key: Vec<String>,
    /// Latest wins: the row with the greatest ordering value (NULLs
    /// lowest) is the silver row.
    #[serde(default)]
    pub order: Vec<String>,
    /// Among rows with the same ordering value, the first by these columns
    /// wins; the others, when they differ, are conflicting duplicates.
    #[serde(default)]
    pub tie_break: Vec<String>,
    /// Fill a NULL in the winning row from the newest older version that
    /// has the column (partial events, such as a stream's status update).
    #[serde(default)]
    pub coalesce: bool,
    /// The table's columns, in order.
    pub columns: Vec<ColumnModel>,
    /// The bronze tables feeding it (`[[source]]`).
    #[serde(rename = "source")]
    pub sources: Vec<SourceModel>,
    /// The declared expectations (`[[expect]]`).
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
    /// The parents checked for referential integrity (`[[parent]]`).
    #[serde(default, rename = "parent")]
    pub parents: Vec<Parent>,
    /// The tables computed from this one's rows.
    #[serde(default)]
    pub derived: Vec<Derived>,
    /// A date column: the rows (and the derived tables' rows) are written
    /// grouped by its month, so that a night's changes to recent rows leave
    /// the files of settled months alone.
    #[serde(default)]
    pub cluster_by: Option<String>,
}

/// The metadata columns a row may be ordered or tie-broken by.
const ORDERABLE_META: [&str; 3] = ["_batch_id", "_source_file", "_source_row"];

impl TableModel {
    /// The quarantine table's name.
    pub fn quarantine_table(&self) -> String {
        format!("quarantine_{}", self.table)
    }

    /// The columns tagged as personal data.
    pub fn pii_columns(&self) -> Vec<&str> {
        self.columns.iter().filter(|c| c.pii).map(|c| c.name.as_str()).collect()
    }

    fn check(&self, origin: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::Model { origin: origin.to_string(), reason });
        if !self.table.starts_with("silver_") {
            return bad(format!("table {:?} must be named silver_<name>", self.table));
        }
        for name in std::iter::once(&self.table).chain(self.derived.iter().map(|d| &d.table)) {
            if storage::TableName::new(name).is_err() || name.len() > 100 {
                return bad(format!("{name:?} is not a valid table name"));
            }
        }
        let columns: BTreeSet<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        if columns.len() != self.columns.len() {
            return bad("a column is declared twice".into());
        }
        if let Some(c) = self.columns.iter().find(|c| c.name.starts_with('_')) {
            return bad(format!("column {:?}: names starting with '_' are reserved for metadata", c.name));
        }
        if self.key.is_empty() {
            return bad("the key is empty".into());
        }
        for k in &self.key {
            if !columns.contains(k.as_str()) {
                return bad(format!("key column {k:?} is not a declared column"));
            }
        }
        for c in self.order.iter().chain(&self.tie_break) {
            if !columns.contains(c.as_str()) && !ORDERABLE_META.contains(&c.as_str()) {
                return bad(format!(
                    "ordering column {c:?} is neither a declared column nor one of {ORDERABLE_META:?}"
                ));
            }
        }
        if self.sources.is_empty() {
            return bad("no [[source]]".into());
        }
        let bronze: BTreeSet<&str> = self.sources.iter().map(|s| s.bronze.as_str()).collect();
        if bronze.len() != self.sources.len() {
            return bad("a bronze table is listed twice".into());
        }
        for s in &self.sources {
            if let Some(c) = s.select.keys().find(|c| !columns.contains(c.as_str())) {
                return bad(format!("source {}: {c:?} is not a declared column", s.bronze));
            }
            for k in &self.key {
                if !s.select.contains_key(k) {
                    return bad(format!("source {}: no expression for key column {k:?}", s.bronze));
                }
            }
        }
        let mut names = BTreeSet::new();
        for name in self.expectations.iter().map(|e| &e.name).chain(self.parents.iter().map(|p| &p.name)) {
            if BUILTIN_RULES.contains(&name.as_str()) {
                return bad(format!("rule name {name:?} is reserved"));
            }
            if !names.insert(name) {
                return bad(format!("rule {name:?} is declared twice"));
            }
        }
        for e in &self.expectations {
            if let Some(t) = e.fail_above
                && !(0.0..=1.0).contains(&t)
            {
                return bad(format!("rule {}: fail_above must be between 0 and 1", e.name));
            }
        }
        let listed = self
            .expectations
            .iter()
            .filter_map(|e| e.sources.as_ref())
            .chain(self.parents.iter().filter_map(|p| p.sources.as_ref()));
        for list in listed {
            if let Some(s) = list.iter().find(|s| !bronze.contains(s.as_str())) {
                return bad(format!("rule sources: {s:?} is not a [[source]] of this table"));
            }
        }
        if let Some(c) = self.cluster_by.as_ref().filter(|c| !columns.contains(c.as_str())) {
            return bad(format!("cluster_by {c:?} is not a declared column"));
        }
        for p in &self.parents {
            if !columns.contains(p.column.as_str()) {
                return bad(format!("parent {}: {:?} is not a declared column", p.name, p.column));
            }
        }
        Ok(())
    }
}

/// Rules every table has, ahead of the declared ones.
pub(crate) const BUILTIN_RULES: [&str; 3] = ["parsed", "key_present", "conflicting_duplicate"];

/// Every silver table, in the order they are built (parents first).
#[derive(Clone, Debug)]
pub struct SilverCatalog {
    tables: Vec<TableModel>,
}

impl SilverCatalog {
    /// The models built into gold.
    pub fn default_catalog() -> Result<Self> {
        Self::parse(
            reference::models::SILVER
                .iter()
                .map(|(name, text)| (format!("embedded models/silver/{name}"), text.to_string())),
        )
    }

    /// Every `*.toml` in `dir` (e.g. `models/silver`).
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io { path: dir.display().to_string(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Self::parse(files)
    }

    /// Parses `(origin, text)` pairs, one table each.
    pub fn parse(files: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut tables = Vec::new();
        for (origin, text) in files {
            let table: TableModel = toml::from_str(&text)
                .map_err(|e| Error::ModelSyntax { origin: origin.clone(), source: Box::new(e) })?;
            table.check(&origin)?;
            tables.push((origin, table));
        }
        let mut seen = HashMap::new();
        for (origin, t) in &tables {
            for name in std::iter::once(&t.table).chain(t.derived.iter().map(|d| &d.table)) {
                if let Some(other) = seen.insert(name.clone(), origin.clone()) {
                    return Err(Error::Model {
                        origin: origin.clone(),
                        reason: format!("table {name} is also defined in {other}"),
                    });
                }
            }
        }
        Ok(Self { tables: topological(tables)? })
    }

    /// The tables, parents before children.
    pub fn tables(&self) -> &[TableModel] {
        &self.tables
    }

    /// Only the named silver tables (and what they need is not added: the
    /// parents must be built already).
    pub fn table(&self, name: &str) -> Option<&TableModel> {
        self.tables.iter().find(|t| t.table == name)
    }
}

/// Orders tables so that every parent (and the diagnosis reference, which
/// `all_in_diagnosis_ref` reads) comes before its children.
fn topological(tables: Vec<(String, TableModel)>) -> Result<Vec<TableModel>> {
    let names: BTreeSet<String> = tables.iter().map(|(_, t)| t.table.clone()).collect();
    let needs = |t: &TableModel| -> BTreeSet<String> {
        let mut n: BTreeSet<String> = t.parents.iter().map(|p| p.table.clone()).collect();
        if t.expectations.iter().any(|e| e.rule.contains("all_in_diagnosis_ref")) {
            n.insert(crate::udf::DIAGNOSIS_REF_TABLE.to_string());
        }
        n.remove(&t.table);
        n.retain(|x| names.contains(x));
        n
    };
    let mut left = tables;
    let mut done: Vec<TableModel> = Vec::new();
    while !left.is_empty() {
        let before = left.len();
        let mut rest = Vec::new();
        for (origin, t) in left {
            if needs(&t).iter().all(|n| done.iter().any(|d| &d.table == n)) {
                done.push(t);
            } else {
                rest.push((origin, t));
            }
        }
        if rest.len() == before {
            let cycle: Vec<&str> = rest.iter().map(|(_, t)| t.table.as_str()).collect();
            return Err(Error::Model {
                origin: rest[0].0.clone(),
                reason: format!("tables depend on each other in a cycle: {}", cycle.join(", ")),
            });
        }
        left = rest;
    }
    Ok(done)
}
