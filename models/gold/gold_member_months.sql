-- gold_member_months: enrolled members and earned premium by month, plan
-- and region: the denominator of the loss ratio and of utilization.
--
-- Grain: one row per month with claims or medical events, plan type and
-- region.
--
-- Definitions:
--   A member is enrolled in a month when the dim_members version valid on
--   the month's last day (valid_from <= day < valid_to, the day at 00:00
--   UTC) is a real member (not inferred) whose is_active is not false.
--   Plan and region are that version's.
--   The earned premium is a twelfth of the yearly premium (the patient's
--   charges, in dim_patients, patient_id = member_id) of each enrolled
--   member whose coverage had started by the month's last day.
--
-- Columns:
--   month                 yyyymm
--   plan_type, region
--   members               members enrolled
--   members_with_premium  of them, with a premium on file
--   premium_earned        sum of monthly premiums, decimal
WITH months AS (
  SELECT year * 100 + month AS month, max(date) AS month_end
  FROM dim_date
  WHERE date_key > 0
  GROUP BY year * 100 + month
),
active_months AS (
  SELECT service_month AS month FROM fact_claims WHERE service_month > 0
  UNION
  SELECT event_month AS month FROM fact_medical_events WHERE event_month > 0
),
month_ends AS (
  -- The day's first instant in UTC, in microseconds like valid_from and
  -- valid_to (whose open end, 9999-12-31, nanoseconds cannot hold).
  SELECT m.month, m.month_end, arrow_cast(m.month_end, 'Timestamp(Microsecond, Some("UTC"))') AS at
  FROM months m
  WHERE m.month IN (SELECT month FROM active_months)
),
enrolled AS (
  SELECT e.month, e.month_end, e.at, d.member_id, d.plan_type, d.region
  FROM month_ends e
  JOIN dim_members d ON d.valid_from <= e.at AND e.at < d.valid_to
  WHERE NOT d.is_inferred AND coalesce(d.is_active, true) AND d.member_id IS NOT NULL
),
premiums AS (
  SELECT e.month, e.member_id, p.charges
  FROM enrolled e
  JOIN dim_patients p
    ON p.patient_id = e.member_id AND p.valid_from <= e.at AND e.at < p.valid_to
  WHERE NOT p.is_inferred AND p.charges IS NOT NULL
    AND (p.coverage_start_date IS NULL OR p.coverage_start_date <= e.month_end)
)
SELECT
  e.month,
  coalesce(e.plan_type, 'unknown') AS plan_type,
  coalesce(e.region, 'unknown') AS region,
  count(*) AS members,
  count(p.charges) AS members_with_premium,
  CAST(coalesce(sum(p.charges), 0) / 12 AS DECIMAL(18, 2)) AS premium_earned
FROM enrolled e
LEFT JOIN premiums p ON p.month = e.month AND p.member_id = e.member_id
GROUP BY e.month, coalesce(e.plan_type, 'unknown'), coalesce(e.region, 'unknown')
ORDER BY month, plan_type, region
