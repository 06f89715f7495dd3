-- gold_utilization: medical events and claims per 1,000 enrolled members,
-- per month.
--
-- Grain: one row per month with claims or medical events.
--
-- Definitions:
--   Claims are counted in their service month, events in their event
--   month; members are the month's enrolled members (gold_member_months).
--
-- Columns:
--   month (yyyymm)
--   members               enrolled members
--   claims, events        counts in the month
--   claims_per_1000       claims * 1000 / members (NULL without members)
--   events_per_1000       events * 1000 / members (NULL without members)
WITH members AS (
  SELECT month, sum(members) AS members FROM gold_member_months GROUP BY month
),
claims AS (
  SELECT service_month AS month, count(*) AS claims FROM fact_claims WHERE service_month > 0 GROUP BY service_month
),
events AS (
  SELECT event_month AS month, count(*) AS events FROM fact_medical_events WHERE event_month > 0 GROUP BY event_month
),
months AS (
  SELECT month FROM members UNION SELECT month FROM claims UNION SELECT month FROM events
)
SELECT
  mo.month,
  coalesce(m.members, 0) AS members,
  coalesce(c.claims, 0) AS claims,
  coalesce(e.events, 0) AS events,
  CAST(coalesce(c.claims, 0) AS DOUBLE) * 1000.0 / CAST(nullif(m.members, 0) AS DOUBLE) AS claims_per_1000,
  CAST(coalesce(e.events, 0) AS DOUBLE) * 1000.0 / CAST(nullif(m.members, 0) AS DOUBLE) AS events_per_1000
FROM months mo
LEFT JOIN members m ON m.month = mo.month
LEFT JOIN claims c ON c.month = mo.month
LEFT JOIN events e ON e.month = mo.month
ORDER BY mo.month
