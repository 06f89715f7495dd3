//! `fact_medical_events`: one row per medical event, keyed to the patient
//! and provider versions valid on its date.
//!
//! As for the claims, the events are planned ([`crate::plan`]), their
//! patients inferred where the dimension lacks them ([`patient_rounds`]),
//! and only the month partitions holding a rebuilt event rewritten, with
//! the watermarks in the same commit. Events name their provider as free
//! text: only a known NPI resolves, and no provider is inferred.

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::array::{Array, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use storage::{Commit, RunContext, Warehouse};

use crate::dim::{Dim, absent_keys, versions};
use crate::pit::{FactOrder, Resolved};
use crate::plan::{Plan, extend_rebuild, plan, select, select_strings};
use crate::read::{day_start, days_col, month_of, silver, string_col, year_of};
use crate::write::{self, FactTable, Rebuilt, write_with_watermarks};
use crate::{Error, FACT_MEDICAL_EVENTS, FactOptions, FactsReport, Result, date};

/// The silver table of the events.
const S: &str = "silver_medical_events";

/// Builds and writes the event facts that changed, inferring the patients
/// `patients` lacks.
pub(crate) async fn events(
    warehouse: &Warehouse,
    run: &RunContext,
    patients: &mut Dim,
    providers: &Dim,
    options: FactOptions,
    report: &mut FactsReport,
    years: &mut BTreeSet<i32>,
) -> Result<()> {
    let columns =
        ["event_id", "patient_id", "event_date", "event_type", "medical_provider", "provider_id", "_updated_at"];
    let Some(all) = silver(warehouse, S, &columns).await? else {
        tracing::warn!("no {S} yet; the event facts wait for it");
        return Ok(());
    };
    if all.num_columns() == 0 {
        return Ok(());
    }
    let days = days_col(S, &all, "event_date")?;
    years.extend(days.iter().flatten().filter_map(year_of));
    let dates: Vec<Option<i64>> = days.iter().map(|d| day_start(*d)).collect();
    let patient_keys = string_col(S, &all, "patient_id")?;
    let provider_keys = string_col(S, &all, "provider_id")?;
    let mut plan = plan(
        warehouse,
        FACT_MEDICAL_EVENTS,
        S,
        &all,
        &[(&*patients, &patient_keys), (providers, &provider_keys)],
        &dates,
        options.full_refresh,
    )
    .await?;
    let (patient_keys, p) = patient_rounds(warehouse, run, patients, &patient_keys, &dates, &mut plan, report).await?;
    let mask = BooleanArray::from(plan.rebuild.clone());
    let rows = filter_record_batch(&all, &mask).map_err(|e| Error::arrow(S, e))?;
    drop(all);
    let days = select(&days, &plan.rebuild);
    let dates = select(&dates, &plan.rebuild);
    let provider_keys = select_strings(&provider_keys, &plan.rebuild);
    // Events name their provider as free text; only a known NPI resolves.
    let v = providers.resolve(&provider_keys, &dates);
    report.count_unknown("fact_medical_events.patient_sk", &p);
    report.count_unknown("fact_medical_events.provider_sk", &v);
    let ids = string_col(S, &rows, "event_id")?;
    let months: Vec<i32> = days.iter().map(|d| month_of(*d)).collect();
    let keyed = EventKeys { patient_keys, patients: p, provider_keys, providers: v };
    let fact = event_facts(&rows, &ids, &keyed, &days, &months)?;
    let n = rows.num_rows();
    let rebuilt: Rebuilt = (0..n).filter(|&i| ids.is_valid(i)).map(|i| (ids.value(i).to_string(), months[i])).collect();
    let table = FactTable { name: FACT_MEDICAL_EVENTS, id: "event_id", month: "event_month" };
    let commit = Commit::new(run, "facts");
    let prepared = write::prepare(warehouse, &table, fact, &rebuilt, plan.full).await?;
    let written =
        write_with_watermarks(warehouse, commit, S, &plan, &versions(&[&*patients, providers]), prepared).await?;
    report.tables.push(written);
    Ok(())
}

/// Resolves the patients of the events `plan` rebuilds, inferring those
/// the dimension lacks. As for claims: events not rebuilt whose patient
/// was just inferred join the plan, and are resolved in a further round.
/// Returns the rebuilt events' patient keys and versions.
async fn patient_rounds(
    warehouse: &Warehouse,
    run: &RunContext,
    patients: &mut Dim,
    all_patients: &StringArray,
    dates: &[Option<i64>],
    plan: &mut Plan,
    report: &mut FactsReport,
) -> Result<(StringArray, Vec<Resolved>)> {
    loop {
        let dates_r = select(dates, &plan.rebuild);
        let patient_keys = select_strings(all_patients, &plan.rebuild);
        let order = FactOrder::new(&patient_keys, &dates_r);
        let mut p = patients.resolve_in(&patient_keys, &dates_r, Some(&order));
        let absent = absent_keys(&p, &patient_keys, |_| true);
        let inferred = patients.infer(warehouse, run, absent.clone()).await?;
        *report.inferred.entry(patients.model.table.clone()).or_default() += inferred;
        let mut extended = 0;
        if inferred > 0 {
            p = patients.resolve_in(&patient_keys, &dates_r, Some(&order));
            extended = extend_rebuild(&mut plan.rebuild, all_patients, &absent);
        }
        plan.restated += extended;
        if extended == 0 {
            return Ok((patient_keys, p));
        }
    }
}

/// The rebuilt events' patient and provider keys, and their versions.
struct EventKeys {
    patient_keys: StringArray,
    patients: Vec<Resolved>,
    provider_keys: StringArray,
    providers: Vec<Resolved>,
}

/// The `fact_medical_events` rows of the rebuilt silver `rows`.
fn event_facts(
    rows: &RecordBatch,
    ids: &StringArray,
    keyed: &EventKeys,
    days: &[Option<i32>],
    months: &[i32],
) -> Result<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, true),
        Field::new("patient_sk", DataType::Int64, false),
        Field::new("provider_id", DataType::Utf8, true),
        Field::new("provider_sk", DataType::Int64, false),
        Field::new("medical_provider", DataType::Utf8, true),
        Field::new("event_date_key", DataType::Int32, false),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("event_month", DataType::Int32, false),
    ]));
    let EventKeys { patient_keys, patients: p, provider_keys, providers: v } = keyed;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ids.clone()),
            Arc::new(patient_keys.clone()),
            Arc::new(Int64Array::from(p.iter().map(|r| r.sk()).collect::<Vec<_>>())),
            Arc::new(provider_keys.clone()),
            Arc::new(Int64Array::from(v.iter().map(|r| r.sk()).collect::<Vec<_>>())),
            Arc::new(string_col(S, rows, "medical_provider")?),
            Arc::new(Int32Array::from(days.iter().map(|d| date::date_key_of_days(*d)).collect::<Vec<_>>())),
            Arc::new(string_col(S, rows, "event_type")?),
            Arc::new(Int32Array::from(months.to_vec())),
        ],
    )
    .map_err(|e| Error::arrow(FACT_MEDICAL_EVENTS, e))
}
