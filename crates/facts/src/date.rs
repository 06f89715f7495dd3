//! `dim_date`: one row per day, keyed `yyyymmdd`, with US federal holidays.

use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use deltalake::arrow::array::{BooleanArray, Date32Array, Int32Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Schema};

use crate::{Error, Result, UNKNOWN_DATE_KEY};

/// The date key of `date`: `yyyymmdd`.
pub fn date_key(date: NaiveDate) -> i32 {
    date.year() * 10_000 + date.month() as i32 * 100 + date.day() as i32
}

/// The years `dim_date` may cover; a date outside them is as good as none.
pub(crate) const YEARS: std::ops::RangeInclusive<i32> = 1900..=2100;

/// The date key of a `Date32` value (days since 1970-01-01), or the
/// unknown key for NULL or a date outside [`YEARS`].
pub(crate) fn date_key_of_days(days: Option<i32>) -> i32 {
    days.and_then(Date32Type::to_naive_date_opt)
        .filter(|d| YEARS.contains(&d.year()))
        .map_or(UNKNOWN_DATE_KEY, date_key)
}

/// The `n`-th (1-based) `weekday` of a month.
fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u32) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n as u8)
}

/// The last `weekday` of a month.
fn last_weekday(year: i32, month: u32, weekday: Weekday) -> Option<NaiveDate> {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }?;
    let mut d = next - Duration::days(1);
    while d.weekday() != weekday {
        d -= Duration::days(1);
    }
    Some(d)
}

/// A fixed-date holiday moved to the Friday before when it falls on a
/// Saturday, and to the Monday after on a Sunday (5 U.S.C. 6103).
fn observed(date: NaiveDate) -> NaiveDate {
    match date.weekday() {
        Weekday::Sat => date - Duration::days(1),
        Weekday::Sun => date + Duration::days(1),
        _ => date,
    }
}

/// The observed US federal holidays of `year`, by name (5 U.S.C. 6103;
/// Juneteenth from 2021).
pub fn federal_holidays(year: i32) -> Vec<(NaiveDate, &'static str)> {
    let fixed = |m: u32, d: u32| NaiveDate::from_ymd_opt(year, m, d).map(observed);
    let mut out: Vec<(Option<NaiveDate>, &'static str)> = vec![
        (fixed(1, 1), "New Year's Day"),
        (nth_weekday(year, 1, Weekday::Mon, 3), "Birthday of Martin Luther King, Jr."),
        (nth_weekday(year, 2, Weekday::Mon, 3), "Washington's Birthday"),
        (last_weekday(year, 5, Weekday::Mon), "Memorial Day"),
        (fixed(7, 4), "Independence Day"),
        (nth_weekday(year, 9, Weekday::Mon, 1), "Labor Day"),
        (nth_weekday(year, 10, Weekday::Mon, 2), "Columbus Day"),
        (fixed(11, 11), "Veterans Day"),
        (nth_weekday(year, 11, Weekday::Thu, 4), "Thanksgiving Day"),
        (fixed(12, 25), "Christmas Day"),
    ];
    if year >= 2021 {
        out.push((fixed(6, 19), "Juneteenth National Independence Day"));
    }
    let mut out: Vec<(NaiveDate, &'static str)> = out.into_iter().filter_map(|(d, n)| d.map(|d| (d, n))).collect();
    out.sort();
    out
}

pub(crate) fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("date_key", DataType::Int32, false),
        Field::new("date", DataType::Date32, true),
        Field::new("day_of_week", DataType::Int32, true),
        Field::new("day_name", DataType::Utf8, true),
        Field::new("is_weekend", DataType::Boolean, true),
        Field::new("is_federal_holiday", DataType::Boolean, true),
        Field::new("holiday_name", DataType::Utf8, true),
        Field::new("month", DataType::Int32, true),
        Field::new("quarter", DataType::Int32, true),
        Field::new("year", DataType::Int32, true),
    ]))
}

/// Every day of the years `first..=last`, plus the unknown row
/// ([`UNKNOWN_DATE_KEY`], all attributes NULL) that facts with no date
/// point at. Day of week is ISO: Monday 1 to Sunday 7.
pub(crate) fn dim_date(first: i32, last: i32) -> Result<RecordBatch> {
    let mut keys = vec![UNKNOWN_DATE_KEY];
    let mut dates = vec![None];
    let mut dow = vec![None];
    let mut names: Vec<Option<String>> = vec![None];
    let mut weekend = vec![None];
    let mut holiday = vec![None];
    let mut holiday_name: Vec<Option<&str>> = vec![None];
    let (mut month, mut quarter, mut year) = (vec![None], vec![None], vec![None]);
    for y in first..=last {
        // New Year's Day on a Saturday is observed on 31 December before.
        let mut holidays = federal_holidays(y);
        holidays.extend(federal_holidays(y + 1));
        let (Some(mut d), Some(end)) = (NaiveDate::from_ymd_opt(y, 1, 1), NaiveDate::from_ymd_opt(y, 12, 31)) else {
            continue;
        };
        while d <= end {
            let h = holidays.iter().find(|(hd, _)| *hd == d).map(|(_, n)| *n);
            keys.push(date_key(d));
            dates.push(Some(Date32Type::from_naive_date(d)));
            dow.push(Some(d.weekday().number_from_monday() as i32));
            names.push(Some(d.format("%A").to_string()));
            weekend.push(Some(matches!(d.weekday(), Weekday::Sat | Weekday::Sun)));
            holiday.push(Some(h.is_some()));
            holiday_name.push(h);
            month.push(Some(d.month() as i32));
            quarter.push(Some(d.month0() as i32 / 3 + 1));
            year.push(Some(y));
            d += Duration::days(1);
        }
    }
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int32Array::from(keys)),
            Arc::new(Date32Array::from(dates)),
            Arc::new(Int32Array::from(dow)),
            Arc::new(StringArray::from(names)),
            Arc::new(BooleanArray::from(weekend)),
            Arc::new(BooleanArray::from(holiday)),
            Arc::new(StringArray::from(holiday_name)),
            Arc::new(Int32Array::from(month)),
            Arc::new(Int32Array::from(quarter)),
            Arc::new(Int32Array::from(year)),
        ],
    )
    .map_err(|e| Error::arrow("dim_date", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn federal_holidays_of_2025_and_2026_are_the_opm_list() {
        // OPM's published federal holiday lists.
        let days: Vec<NaiveDate> = federal_holidays(2025).into_iter().map(|(d, _)| d).collect();
        let want: Vec<NaiveDate> = [
            "2025-01-01",
            "2025-01-20",
            "2025-02-17",
            "2025-05-26",
            "2025-06-19",
            "2025-07-04",
            "2025-09-01",
            "2025-10-13",
            "2025-11-11",
            "2025-11-27",
            "2025-12-25",
        ]
        .iter()
        .map(|s| d(s))
        .collect();
        assert_eq!(days, want);
        // 2026: Independence Day is a Saturday, observed Friday 3 July.
        let days: Vec<NaiveDate> = federal_holidays(2026).into_iter().map(|(d, _)| d).collect();
        assert!(days.contains(&d("2026-07-03")) && !days.contains(&d("2026-07-04")));
        // 2021 had no Juneteenth before its first observance; 2020 none at all.
        assert_eq!(federal_holidays(2020).len(), 10);
    }

    #[test]
    fn dim_date_has_every_day_and_the_unknown_row() {
        let b = dim_date(2024, 2024).unwrap();
        assert_eq!(b.num_rows(), 366 + 1, "a leap year plus the unknown row");
        let keys = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(keys.value(0), UNKNOWN_DATE_KEY);
        assert_eq!(keys.value(1), 20240101);
        assert_eq!(date_key(d("2024-12-31")), 20241231);
        assert_eq!(date_key_of_days(None), UNKNOWN_DATE_KEY);
        let year_1850 = Date32Type::from_naive_date(d("1850-06-01"));
        assert_eq!(date_key_of_days(Some(year_1850)), UNKNOWN_DATE_KEY, "outside dim_date's years");
    }
}
