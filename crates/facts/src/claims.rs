//! `fact_claims`: one row per claim in its latest state, keyed to the
//! member, patient and provider versions valid on its service date.
//!
//! 1. [`claims`] plans the claims of `silver_claims` ([`crate::plan`]) and
//!    resolves their keys, inferring the keys the dimensions lack, in
//!    rounds ([`key_rounds`]) until no fact outside the plan pointed at a
//!    key just inferred.
//! 2. [`write_claims`] writes the two bridges ([`crate::bridges`]), each on
//!    a task of its own, while the claim rows are built ([`claim_facts`])
//!    and their write prepared; `fact_claims` commits last, with the
//!    watermarks, so a run stopped in between is redone whole.
//!
//! The members and the providers are joined on two threads
//! ([`Keyed::resolve`]): sorting the facts is most of a join's cost, and
//! members and patients share one order.

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray,
};
use deltalake::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef};
use storage::{Commit, RunContext, Warehouse};

use crate::bridges::{BRIDGES, write_bridge};
use crate::dim::{Dim, absent_keys, versions};
use crate::pit::{FactOrder, Resolved};
use crate::plan::{Plan, extend_rebuild, plan, select, select_strings};
use crate::read::{
    DAY_MICROS, cast_to, col, day_start, days_col, decimal, micros_col, month_of, silver_rows_of, string_col, year_of,
};
use crate::write::{self, FactTable, Rebuilt, write_with_watermarks};
use crate::{Error, FACT_CLAIMS, FactOptions, FactsReport, Result, SILVER_CLAIMS, TableReport, date, diagnosis_key};

/// The columns of `silver_claims` the claim facts are built from.
pub(crate) const CLAIM_COLUMNS: [&str; 16] = [
    "claim_id",
    "source_system",
    "source_feed",
    "member_id",
    "provider_id",
    "claim_date",
    "service_date",
    "amount",
    "status",
    "icd10_codes",
    "cpt_codes",
    "claim_type",
    "submission_channel",
    "updated_at",
    "_dq_warnings",
    "_updated_at",
];

/// The columns of `silver_claims` the claims are planned and keyed by:
/// read for every claim, where [`CLAIM_COLUMNS`] are read for the claims
/// rebuilt only.
pub(crate) const PLAN_COLUMNS: [&str; 7] =
    ["claim_id", "source_system", "member_id", "provider_id", "claim_date", "service_date", "_updated_at"];

/// Plans the claims of `silver_claims` (its [`PLAN_COLUMNS`], `None` when
/// the table does not exist yet), resolves their keys, inferring the ones
/// the dimensions lack, and reads the [`CLAIM_COLUMNS`] of the claims it
/// rebuilds.
pub(crate) async fn claims(
    warehouse: &Warehouse,
    run: &RunContext,
    silver_claims: Option<RecordBatch>,
    dims3: &mut [&mut Dim; 3],
    options: FactOptions,
    report: &mut FactsReport,
    years: &mut BTreeSet<i32>,
) -> Result<Option<ClaimRows>> {
    const S: &str = SILVER_CLAIMS;
    let started = std::time::Instant::now();
    let Some(all) = silver_claims else {
        tracing::warn!("no {S} yet; the claim facts wait for it");
        return Ok(None);
    };
    if all.num_columns() == 0 {
        return Ok(None);
    }
    let claim_days = days_col(S, &all, "claim_date")?;
    let service_days = days_col(S, &all, "service_date")?;
    years.extend(claim_days.iter().chain(&service_days).flatten().filter_map(year_of));
    let pit_days: Vec<Option<i32>> = service_days.iter().zip(&claim_days).map(|(s, c)| s.or(*c)).collect();
    let dates: Vec<Option<i64>> = pit_days.iter().map(|d| day_start(*d)).collect();
    let member_keys = string_col(S, &all, "member_id")?;
    let provider_keys = string_col(S, &all, "provider_id")?;
    let [members, patients, providers] = dims3;
    let mut plan = plan(
        warehouse,
        FACT_CLAIMS,
        S,
        &all,
        &[(&**members, &member_keys), (&**patients, &member_keys), (&**providers, &provider_keys)],
        &dates,
        options.full_refresh,
    )
    .await?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claims planned");
    let all_keys =
        ClaimKeys { members: member_keys, providers: provider_keys, sources: string_col(S, &all, "source_system")? };
    let dims = [&mut **members, &mut **patients, &mut **providers];
    let (keys, [m, p, v]) = key_rounds(warehouse, run, dims, &all_keys, &dates, &mut plan, report).await?;
    let ids = select_strings(&string_col(S, &all, "claim_id")?, &plan.rebuild);
    drop(all);
    let claim_days_r = select(&claim_days, &plan.rebuild);
    let rows = silver_rows_of(warehouse, S, &CLAIM_COLUMNS, ("claim_id", &ids), ("claim_date", &claim_days_r)).await?;
    report.count_unknown("fact_claims.member_sk", &m);
    report.count_unknown("fact_claims.patient_sk", &p);
    report.count_unknown("fact_claims.provider_sk", &v);
    Ok(Some(ClaimRows {
        months: select(&pit_days, &plan.rebuild).into_iter().map(month_of).collect(),
        claim_days: claim_days_r,
        service_days: select(&service_days, &plan.rebuild),
        dims: versions(&[&**members, &**patients, &**providers]),
        plan,
        rows,
        member_keys: keys.members,
        provider_keys: keys.providers,
        source_system: keys.sources,
        resolved: [m, p, v],
    }))
}

/// The claims' member (and patient) keys, provider keys and source
/// systems.
struct ClaimKeys {
    members: StringArray,
    providers: StringArray,
    sources: StringArray,
}

/// Resolves the keys of the claims `plan` rebuilds, and infers the
/// members, patients (EHR claims) and providers the dimensions lack. Facts
/// not rebuilt whose key was just inferred pointed at the unknown row
/// (patients of enrollment claims, say): they join the plan, and their
/// keys are resolved in a further round, as a full refresh would resolve
/// them. Returns the rebuilt claims' keys and their member, patient and
/// provider versions.
async fn key_rounds(
    warehouse: &Warehouse,
    run: &RunContext,
    [members, patients, providers]: [&mut Dim; 3],
    all: &ClaimKeys,
    dates: &[Option<i64>],
    plan: &mut Plan,
    report: &mut FactsReport,
) -> Result<(ClaimKeys, [Vec<Resolved>; 3])> {
    loop {
        let dates_r = select(dates, &plan.rebuild);
        let member_keys = select_strings(&all.members, &plan.rebuild);
        let provider_keys = select_strings(&all.providers, &plan.rebuild);
        let source_system = select_strings(&all.sources, &plan.rebuild);
        let is_ehr = |i: usize| source_system.is_valid(i) && source_system.value(i) == "ehr";
        let keyed = Keyed::resolve([&*members, &*patients, &*providers], &member_keys, &provider_keys, &dates_r);
        let Keyed { by_member, by_provider, resolved: [mut m, mut p, mut v] } = keyed;
        let mut extended = 0;
        for (dim, resolved, keys, order, all_keys, only_ehr) in [
            (&mut *members, &mut m, &member_keys, &by_member, &all.members, false),
            (&mut *patients, &mut p, &member_keys, &by_member, &all.members, true),
            (&mut *providers, &mut v, &provider_keys, &by_provider, &all.providers, false),
        ] {
            let absent = absent_keys(resolved, keys, |i| !only_ehr || is_ehr(i));
            let inferring = std::time::Instant::now();
            let inferred = dim.infer(warehouse, run, absent.clone()).await?;
            tracing::debug!(table = %dim.model.table, inferred, seconds = inferring.elapsed().as_secs_f64(), "inferred");
            *report.inferred.entry(dim.model.table.clone()).or_default() += inferred;
            if inferred > 0 {
                *resolved = dim.resolve_in(keys, &dates_r, Some(order));
                extended += extend_rebuild(&mut plan.rebuild, all_keys, &absent);
            }
        }
        plan.restated += extended;
        if extended == 0 {
            let keys = ClaimKeys { members: member_keys, providers: provider_keys, sources: source_system };
            return Ok((keys, [m, p, v]));
        }
    }
}

/// The claims' member, patient and provider keys resolved, with the two
/// fact orders the joins used (members and patients share one).
struct Keyed {
    by_member: FactOrder,
    by_provider: FactOrder,
    resolved: [Vec<Resolved>; 3],
}

impl Keyed {
    /// Orders the facts by member and by provider and joins them to the
    /// three dimensions, the providers on a thread of their own.
    fn resolve(
        [members, patients, providers]: [&Dim; 3],
        member_keys: &StringArray,
        provider_keys: &StringArray,
        dates: &[Option<i64>],
    ) -> Self {
        std::thread::scope(|scope| {
            let other = scope.spawn(|| {
                let order = FactOrder::new(provider_keys, dates);
                let v = providers.resolve_in(provider_keys, dates, Some(&order));
                (order, v)
            });
            let by_member = FactOrder::new(member_keys, dates);
            let m = members.resolve_in(member_keys, dates, Some(&by_member));
            let p = patients.resolve_in(member_keys, dates, Some(&by_member));
            let (by_provider, v) = other.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            Self { by_member, by_provider, resolved: [m, p, v] }
        })
    }
}

/// The claims to rebuild, their keys resolved: what [`write_claims`] needs.
pub(crate) struct ClaimRows {
    plan: Plan,
    /// The rebuilt silver rows.
    rows: RecordBatch,
    member_keys: StringArray,
    provider_keys: StringArray,
    source_system: StringArray,
    /// Member, patient and provider keys.
    resolved: [Vec<Resolved>; 3],
    /// Each claim's month partition (of its service date, else its claim
    /// date).
    months: Vec<i32>,
    claim_days: Vec<Option<i32>>,
    service_days: Vec<Option<i32>>,
    /// The dimension versions the keys were resolved against.
    dims: Vec<(String, i64)>,
}

/// Writes the two bridges, each on a task of its own, while the claim
/// facts are built and their write prepared; then commits `fact_claims`
/// with the watermarks. Returns their reports, `fact_claims` first.
pub(crate) async fn write_claims(warehouse: &Warehouse, run: &RunContext, c: ClaimRows) -> Result<Vec<TableReport>> {
    // The rebuilt claims, by id, with their months: the bridges keep
    // their lines, and the writes their other facts.
    let claim_ids = string_col(SILVER_CLAIMS, &c.rows, "claim_id")?;
    let rebuilt: Arc<Rebuilt> = Arc::new(
        (0..claim_ids.len())
            .filter(|&i| claim_ids.is_valid(i))
            .map(|i| (claim_ids.value(i).to_string(), c.months[i]))
            .collect(),
    );
    // Each bridge is read, built and written on a task of its own.
    let bridges: Vec<_> = BRIDGES
        .into_iter()
        .map(|bridge| {
            let (w, r, rebuilt, full) = (warehouse.clone(), run.clone(), Arc::clone(&rebuilt), c.plan.full);
            (bridge.table, tokio::spawn(async move { write_bridge(&w, &r, &rebuilt, full, bridge).await }))
        })
        .collect();
    // Meanwhile the claim rows are built, and what their write keeps of
    // the months it rewrites is read; they are committed after the bridges.
    let started = std::time::Instant::now();
    let table = FactTable { name: FACT_CLAIMS, id: "claim_id", month: "service_month" };
    let prepared = async {
        let fact = claim_facts(&c, claim_ids)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claim rows built");
        write::prepare(warehouse, &table, fact, &rebuilt, c.plan.full).await
    }
    .await;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "claim rows prepared");
    // Both bridges end, well or not, before anything else; they commit
    // before the claims with the watermarks: a run that stops in between
    // is redone whole by the next one.
    let mut bridge_reports = Vec::new();
    let mut failed = None;
    for (table, task) in bridges {
        match task.await {
            Ok(Ok(report)) => bridge_reports.push(report),
            Ok(Err(e)) => _ = failed.get_or_insert(e),
            Err(e) => _ = failed.get_or_insert(Error::write(table, e)),
        }
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "bridges written");
    let prepared = prepared?;
    if let Some(e) = failed {
        return Err(e);
    }
    let commit = Commit::new(run, "facts");
    let written = write_with_watermarks(warehouse, commit, SILVER_CLAIMS, &c.plan, &c.dims, prepared).await?;
    Ok(std::iter::once(written).chain(bridge_reports).collect())
}

/// The silver columns a claim's measures are derived from.
struct ClaimSources {
    status: StringArray,
    amount: Decimal128Array,
    icd: Option<ListArray>,
    cpt: Option<ListArray>,
    feed: StringArray,
    updated: Vec<Option<i64>>,
    warnings: Option<ListArray>,
}

impl ClaimSources {
    fn read(rows: &RecordBatch) -> Result<Self> {
        const S: &str = SILVER_CLAIMS;
        let status = string_col(S, rows, "status")?;
        let amount = cast_to(S, rows, "amount", &DataType::Decimal128(18, 2))?;
        let amount = amount.as_primitive::<Decimal128Type>().clone();
        let icd = col(S, rows, "icd10_codes")?.as_list_opt::<i32>().cloned();
        let cpt = col(S, rows, "cpt_codes")?.as_list_opt::<i32>().cloned();
        let feed = string_col(S, rows, "source_feed")?;
        let updated = micros_col(S, rows, "updated_at")?;
        let warnings = col(S, rows, "_dq_warnings")?.as_list_opt::<i32>().cloned();
        Ok(Self { status, amount, icd, cpt, feed, updated, warnings })
    }
}

/// The length of list `i` of `l`, 0 for NULL or without the column.
fn list_len(l: &Option<ListArray>, i: usize) -> i32 {
    l.as_ref().map_or(0, |l| if l.is_valid(i) { l.value_length(i) } else { 0 })
}

/// What a claim fact derives from its silver row and its keys.
struct Measures {
    primary: Vec<i64>,
    adjudication: Vec<Option<i32>>,
    payment: Vec<Option<i32>>,
    paid: Vec<Option<i128>>,
    clean: Vec<bool>,
}

impl Measures {
    fn of(c: &ClaimRows, s: &ClaimSources) -> Self {
        let ClaimRows { rows, source_system, resolved: [m, _, v], claim_days, .. } = c;
        let ClaimSources { status, amount, icd, feed, updated, warnings, .. } = s;
        let n = rows.num_rows();
        let is_ehr = |i: usize| source_system.is_valid(i) && source_system.value(i) == "ehr";
        let mut primary = Vec::with_capacity(n);
        let mut adjudication = Vec::with_capacity(n);
        let mut payment = Vec::with_capacity(n);
        let mut paid = Vec::with_capacity(n);
        let mut clean = Vec::with_capacity(n);
        for i in 0..n {
            let first = icd.as_ref().filter(|l| l.is_valid(i) && l.value_length(i) > 0).and_then(|l| {
                let codes = l.value(i);
                let codes = codes.as_string_opt::<i32>()?;
                codes.is_valid(0).then(|| codes.value(0).to_string())
            });
            primary.push(first.as_deref().map_or(merge::UNKNOWN_SK, diagnosis_key));
            let st = status.is_valid(i).then(|| status.value(i));
            // Silver keeps the latest status event's time: the adjudication or
            // payment time when that event is the one that set it.
            let days = match (feed.is_valid(i) && feed.value(i) == "claims_stream", updated[i], claim_days[i]) {
                (true, Some(at), Some(c)) => Some((at.div_euclid(DAY_MICROS) - i64::from(c)) as i32),
                _ => None,
            };
            adjudication.push(days.filter(|_| matches!(st, Some("approved" | "rejected"))));
            payment.push(days.filter(|_| st == Some("paid")));
            paid.push(match st {
                Some("paid") => amount.is_valid(i).then(|| amount.value(i)),
                _ => Some(0),
            });
            clean.push(
                list_len(warnings, i) == 0
                    && m[i].is_real()
                    && (is_ehr(i) || v[i].is_real())
                    && list_len(icd, i) > 0
                    && amount.is_valid(i),
            );
        }
        Self { primary, adjudication, payment, paid, clean }
    }
}

/// The columns of `fact_claims`.
fn claim_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Utf8, false),
        Field::new("source_system", DataType::Utf8, true),
        Field::new("source_feed", DataType::Utf8, true),
        Field::new("member_id", DataType::Utf8, true),
        Field::new("member_sk", DataType::Int64, false),
        Field::new("patient_sk", DataType::Int64, false),
        Field::new("provider_id", DataType::Utf8, true),
        Field::new("provider_sk", DataType::Int64, false),
        Field::new("service_date_key", DataType::Int32, false),
        Field::new("claim_date_key", DataType::Int32, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("billed_amount", DataType::Decimal128(18, 2), true),
        Field::new("paid_amount", DataType::Decimal128(18, 2), true),
        Field::new("claim_type", DataType::Utf8, true),
        Field::new("submission_channel", DataType::Utf8, true),
        Field::new("diagnosis_count", DataType::Int32, false),
        Field::new("procedure_count", DataType::Int32, false),
        Field::new("primary_diagnosis_key", DataType::Int64, false),
        Field::new("days_to_adjudication", DataType::Int32, true),
        Field::new("days_to_payment", DataType::Int32, true),
        Field::new("is_clean_claim", DataType::Boolean, false),
        Field::new("service_month", DataType::Int32, false),
    ]))
}

/// The `fact_claims` rows of the rebuilt claims, given their ids.
fn claim_facts(c: &ClaimRows, claim_ids: StringArray) -> Result<RecordBatch> {
    const S: &str = SILVER_CLAIMS;
    let ClaimRows {
        rows,
        member_keys,
        provider_keys,
        source_system,
        resolved: [m, p, v],
        months,
        claim_days,
        service_days,
        ..
    } = c;
    let n = rows.num_rows();
    let t = FACT_CLAIMS;
    let sources = ClaimSources::read(rows)?;
    let Measures { primary, adjudication, payment, paid, clean } = Measures::of(c, &sources);
    let ClaimSources { status, amount, icd, cpt, feed, .. } = sources;
    let sks = |r: &[Resolved]| -> ArrayRef { Arc::new(Int64Array::from(r.iter().map(|x| x.sk()).collect::<Vec<_>>())) };
    let keys_of = |d: &[Option<i32>]| -> ArrayRef {
        Arc::new(Int32Array::from(d.iter().map(|x| date::date_key_of_days(*x)).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        claim_schema(),
        vec![
            Arc::new(claim_ids),
            Arc::new(source_system.clone()),
            Arc::new(feed),
            Arc::new(member_keys.clone()),
            sks(m),
            sks(p),
            Arc::new(provider_keys.clone()),
            sks(v),
            keys_of(service_days),
            keys_of(claim_days),
            Arc::new(status),
            decimal(t, amount.iter().collect())?,
            decimal(t, paid)?,
            Arc::new(string_col(S, rows, "claim_type")?),
            Arc::new(string_col(S, rows, "submission_channel")?),
            Arc::new(Int32Array::from((0..n).map(|i| list_len(&icd, i)).collect::<Vec<_>>())),
            Arc::new(Int32Array::from((0..n).map(|i| list_len(&cpt, i)).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(primary)),
            Arc::new(Int32Array::from(adjudication)),
            Arc::new(Int32Array::from(payment)),
            Arc::new(BooleanArray::from(clean)),
            Arc::new(Int32Array::from(months.clone())),
        ],
    )
    .map_err(|e| Error::arrow(t, e))
}
