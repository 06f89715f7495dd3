-- gold_claim_outcomes: claim approval and denial rates by plan, region and
-- month of receipt.
--
-- Grain: one row per plan type, region and claim month. The plan and
-- region are the member's as of the service date (the dim_members version
-- the claim points at); an inferred or unknown member counts as 'unknown'.
--
-- Columns:
--   plan_type        HMO, PPO, EPO, Medicaid, Medicare Advantage, or unknown
--   region           the member's region, or unknown
--   claim_month      yyyymm of the claim (receipt) date; -1 when unknown
--   claims           claims received
--   approved         claims approved or paid
--   denied           claims rejected (denied)
--   open             claims still submitted or pending
--   decided          approved + denied
--   approval_rate    approved / decided (NULL when nothing is decided)
--   denial_rate      denied / decided (NULL when nothing is decided)
WITH c AS (
  SELECT
    coalesce(m.plan_type, 'unknown') AS plan_type,
    coalesce(m.region, 'unknown') AS region,
    CASE WHEN f.claim_date_key > 0 THEN f.claim_date_key / 100 ELSE -1 END AS claim_month,
    f.status
  FROM fact_claims f
  LEFT JOIN dim_members m ON m.member_sk = f.member_sk
),
g AS (
  SELECT
    plan_type,
    region,
    claim_month,
    count(*) AS claims,
    sum(CASE WHEN status IN ('approved', 'paid') THEN 1 ELSE 0 END) AS approved,
    sum(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS denied,
    sum(CASE WHEN status IN ('submitted', 'pending') THEN 1 ELSE 0 END) AS open
  FROM c
  GROUP BY plan_type, region, claim_month
)
SELECT
  plan_type,
  region,
  claim_month,
  claims,
  approved,
  denied,
  open,
  approved + denied AS decided,
  CAST(approved AS DOUBLE) / CAST(nullif(approved + denied, 0) AS DOUBLE) AS approval_rate,
  CAST(denied AS DOUBLE) / CAST(nullif(approved + denied, 0) AS DOUBLE) AS denial_rate
FROM g
ORDER BY plan_type, region, claim_month
