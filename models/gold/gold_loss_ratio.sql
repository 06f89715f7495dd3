-- gold_loss_ratio: a medical-loss-ratio style figure, paid claims over
-- earned premiums, by plan, region and month, against the MLR minimums.
--
-- Grain: one row per plan type, region and month.
--
-- Definitions:
--   Paid claims are the paid amounts of claims serviced in the month,
--   grouped by the member's plan and region as of the service date.
--   Earned premium comes from gold_member_months.
--   Minimums: 85% for Medicaid and Medicare Advantage (CMS) and for large
--   group; 80% for the individual and small-group market, which the
--   commercial plans (HMO, PPO, EPO) are taken to be.
--
-- Columns:
--   month (yyyymm), plan_type, region
--   members           enrolled members (gold_member_months)
--   paid_claims       claims paid, count
--   paid_amount       sum of paid amounts, decimal
--   premium_earned    decimal
--   loss_ratio        paid_amount / premium_earned (NULL without premium)
--   minimum_ratio     0.85 or 0.80
--   meets_minimum     loss_ratio >= minimum_ratio (NULL without premium)
WITH paid AS (
  SELECT
    f.service_month AS month,
    coalesce(m.plan_type, 'unknown') AS plan_type,
    coalesce(m.region, 'unknown') AS region,
    sum(CASE WHEN f.status = 'paid' THEN 1 ELSE 0 END) AS paid_claims,
    coalesce(sum(f.paid_amount), 0) AS paid_amount
  FROM fact_claims f
  LEFT JOIN dim_members m ON m.member_sk = f.member_sk
  WHERE f.service_month > 0
  GROUP BY f.service_month, coalesce(m.plan_type, 'unknown'), coalesce(m.region, 'unknown')
),
joined AS (
  SELECT
    coalesce(p.month, mm.month) AS month,
    coalesce(p.plan_type, mm.plan_type) AS plan_type,
    coalesce(p.region, mm.region) AS region,
    coalesce(mm.members, 0) AS members,
    coalesce(p.paid_claims, 0) AS paid_claims,
    CAST(coalesce(p.paid_amount, 0) AS DECIMAL(18, 2)) AS paid_amount,
    CAST(coalesce(mm.premium_earned, 0) AS DECIMAL(18, 2)) AS premium_earned
  FROM paid p
  FULL OUTER JOIN gold_member_months mm
    ON mm.month = p.month AND mm.plan_type = p.plan_type AND mm.region = p.region
),
ratios AS (
  SELECT
    *,
    CAST(paid_amount AS DOUBLE) / CAST(nullif(premium_earned, 0) AS DOUBLE) AS loss_ratio,
    CASE WHEN plan_type IN ('Medicaid', 'Medicare Advantage') THEN CAST(0.85 AS DOUBLE) ELSE CAST(0.80 AS DOUBLE) END
      AS minimum_ratio
  FROM joined
)
SELECT
  month,
  plan_type,
  region,
  members,
  paid_claims,
  paid_amount,
  premium_earned,
  loss_ratio,
  minimum_ratio,
  CASE WHEN loss_ratio IS NULL THEN NULL ELSE loss_ratio >= minimum_ratio END AS meets_minimum
FROM ratios
ORDER BY month, plan_type, region
