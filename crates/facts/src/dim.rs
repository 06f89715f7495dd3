//! One SCD2 dimension the facts point at: its point-in-time index
//! ([`DimIndex`]), the keys of facts resolved against it, and inferred
//! versions for the keys it has never held ([`merge::infer`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::array::{Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::pit::{DimIndex, FactOrder, Resolved};
use crate::{Error, Result};

/// One SCD2 dimension the facts point at.
pub(crate) struct Dim {
    /// The dimension's model.
    pub(crate) model: dims::DimModel,
    /// Its single key column.
    key: String,
    /// Its versions, once loaded (`None` while the table does not exist).
    pub(crate) index: Option<DimIndex>,
}

impl Dim {
    /// The dimension `table` of `catalog`, not loaded yet.
    pub(crate) fn new(catalog: &dims::DimCatalog, table: &str) -> Result<Self> {
        let model = catalog
            .dims()
            .iter()
            .find(|d| d.table == table)
            .cloned()
            .ok_or_else(|| Error::Model(format!("no dimension {table}, which the facts point at")))?;
        let [key] = model.key.as_slice() else {
            return Err(Error::Model(format!("{table}: facts need a single-column key, not {:?}", model.key)));
        };
        Ok(Self { key: key.clone(), model, index: None })
    }

    /// Loads (or reloads) the dimension's versions.
    pub(crate) async fn load(&mut self, warehouse: &Warehouse) -> Result<()> {
        self.index = DimIndex::load(warehouse, &self.model.table, &self.key, &self.model.surrogate_key).await?;
        Ok(())
    }

    /// The dimension's Delta version, if it exists.
    pub(crate) fn version(&self) -> Option<i64> {
        self.index.as_ref().map(|i| i.version)
    }

    /// The version of each `(key, date)` fact.
    pub(crate) fn resolve(&self, keys: &StringArray, dates: &[Option<i64>]) -> Vec<Resolved> {
        self.resolve_in(keys, dates, None)
    }

    /// [`Self::resolve`], with the facts' order when it is already known.
    pub(crate) fn resolve_in(
        &self,
        keys: &StringArray,
        dates: &[Option<i64>],
        order: Option<&FactOrder>,
    ) -> Vec<Resolved> {
        match (&self.index, order) {
            (Some(index), Some(order)) => index.resolve_in(keys, dates, order),
            (Some(index), None) => index.resolve(keys, dates),
            (None, _) => {
                (0..keys.len()).map(|i| if keys.is_valid(i) { Resolved::Absent } else { Resolved::Null }).collect()
            }
        }
    }

    /// Gives the keys of `keys` the dimension has never held an inferred
    /// version, plus the unknown row if it lacks one, then reloads. Returns
    /// how many keys were inferred.
    pub(crate) async fn infer(
        &mut self,
        warehouse: &Warehouse,
        run: &RunContext,
        keys: BTreeSet<String>,
    ) -> Result<u64> {
        let unknown_missing = !self.index.as_ref().is_some_and(|i| i.has_unknown_row);
        if keys.is_empty() && !unknown_missing {
            return Ok(0);
        }
        let table = self.model.table.clone();
        let mut values: Vec<Option<String>> = keys.into_iter().map(Some).collect();
        if unknown_missing {
            values.push(None);
        }
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(&self.key, DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(values))],
        )
        .map_err(|e| Error::arrow(&table, e))?;
        let name = TableName::new(&table)?;
        let target = merge::Target {
            url: warehouse.table_url(&name)?,
            storage_options: warehouse.storage_options().clone(),
            app_id: format!("gold.facts.infer:{table}"),
            commit_info: Commit::new(run, "infer").info(),
            // Warehouse tables stay plain Delta (reader 1) for every engine.
            deletion_vectors: false,
            table_properties: storage::table_properties().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let sequence = self.version().unwrap_or(-1) + 1;
        let outcome = merge::infer(
            &target,
            &self.model.spec(),
            rows,
            &format!("inferred@{}", run.id.0),
            sequence,
            run.clock.now(),
        )
        .await
        .map_err(|e| Error::Merge { table: table.clone(), source: Box::new(e) })?;
        if let Some(v) = outcome.version {
            dims::record_changes(warehouse, run, &table, v, &outcome.changed).await?;
        }
        self.load(warehouse).await?;
        // The unknown row is not an inferred key.
        let unknown_written = unknown_missing && self.index.as_ref().is_some_and(|i| i.has_unknown_row);
        Ok(outcome.metrics.inferred.saturating_sub(u64::from(unknown_written)))
    }
}

/// The keys of rebuilt facts that `dim` has never held.
pub(crate) fn absent_keys(resolved: &[Resolved], keys: &StringArray, only: impl Fn(usize) -> bool) -> BTreeSet<String> {
    (0..keys.len()).filter(|&i| resolved[i] == Resolved::Absent && only(i)).map(|i| keys.value(i).to_string()).collect()
}

/// The versions of `dims`, by table (those that exist).
pub(crate) fn versions(dims: &[&Dim]) -> Vec<(String, i64)> {
    dims.iter().filter_map(|d| Some((d.model.table.clone(), d.version()?))).collect()
}
