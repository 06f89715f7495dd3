-- gold_prompt_pay: prompt-pay compliance, the share of clean claims paid
-- within 30 and within 90 days of receipt, by month of receipt and line of
-- business, against the regulatory thresholds.
--
-- Grain: one row per line of business and claim (receipt) month.
--
-- Definitions:
--   A clean claim is one fact_claims marks is_clean_claim (no data-quality
--   warning, a known member and provider, a diagnosis and an amount).
--   The line of business is the member's plan as of the service date:
--   Medicaid, Medicare Advantage, or Commercial (every other plan).
--   The report is as of the latest claim date in fact_claims. A clean
--   claim is due for the N-day measure once it is paid, or once N days
--   have passed since its receipt; a claim still inside its window is not
--   counted late. Rejected clean claims and paid claims whose payment day
--   is not known are left out of the shares and counted on their own.
--   Thresholds: Medicaid 90% within 30 days and 99% within 90 days;
--   Medicare Advantage 95% within 30 days; Commercial has no federal
--   threshold here (state prompt-pay laws vary), so its flags are NULL.
--
-- Columns:
--   line_of_business, claim_month (yyyymm), as_of_date
--   clean_claims          clean claims received in the month
--   rejected              of them, rejected
--   paid_date_unknown     of them, paid with no known payment day
--   due_30, paid_within_30, share_within_30, threshold_30, met_30
--   due_90, paid_within_90, share_within_90, threshold_90, met_90
--   met                   every threshold that applies is met (NULL if none applies)
WITH as_of AS (
  SELECT d.date AS as_of_date, CAST(d.date AS INT) AS as_of_day
  FROM dim_date d
  WHERE d.date_key = (SELECT max(claim_date_key) FROM fact_claims WHERE claim_date_key > 0)
),
thresholds (line_of_business, threshold_30, threshold_90) AS (
  VALUES
    ('Medicaid', CAST(0.90 AS DOUBLE), CAST(0.99 AS DOUBLE)),
    ('Medicare Advantage', CAST(0.95 AS DOUBLE), CAST(NULL AS DOUBLE)),
    ('Commercial', CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE))
),
clean AS (
  SELECT
    CASE m.plan_type
      WHEN 'Medicaid' THEN 'Medicaid'
      WHEN 'Medicare Advantage' THEN 'Medicare Advantage'
      ELSE 'Commercial'
    END AS line_of_business,
    f.claim_date_key / 100 AS claim_month,
    a.as_of_date,
    a.as_of_day - CAST(d.date AS INT) AS age_days,
    f.status,
    f.days_to_payment
  FROM fact_claims f
  JOIN dim_date d ON d.date_key = f.claim_date_key
  CROSS JOIN as_of a
  LEFT JOIN dim_members m ON m.member_sk = f.member_sk
  WHERE f.is_clean_claim AND f.claim_date_key > 0
),
measured AS (
  SELECT
    *,
    status = 'paid' AND days_to_payment IS NOT NULL AS paid_known,
    status <> 'rejected' AND NOT (status = 'paid' AND days_to_payment IS NULL) AS measured
  FROM clean
),
g AS (
  SELECT
    line_of_business,
    claim_month,
    max(as_of_date) AS as_of_date,
    count(*) AS clean_claims,
    sum(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS rejected,
    sum(CASE WHEN status = 'paid' AND days_to_payment IS NULL THEN 1 ELSE 0 END) AS paid_date_unknown,
    sum(CASE WHEN measured AND (paid_known OR age_days >= 30) THEN 1 ELSE 0 END) AS due_30,
    sum(CASE WHEN paid_known AND days_to_payment <= 30 THEN 1 ELSE 0 END) AS paid_within_30,
    sum(CASE WHEN measured AND (paid_known OR age_days >= 90) THEN 1 ELSE 0 END) AS due_90,
    sum(CASE WHEN paid_known AND days_to_payment <= 90 THEN 1 ELSE 0 END) AS paid_within_90
  FROM measured
  GROUP BY line_of_business, claim_month
),
shares AS (
  SELECT
    g.*,
    CAST(paid_within_30 AS DOUBLE) / CAST(nullif(due_30, 0) AS DOUBLE) AS share_within_30,
    CAST(paid_within_90 AS DOUBLE) / CAST(nullif(due_90, 0) AS DOUBLE) AS share_within_90,
    t.threshold_30,
    t.threshold_90
  FROM g
  JOIN thresholds t ON t.line_of_business = g.line_of_business
),
flags AS (
  SELECT
    *,
    CASE WHEN threshold_30 IS NULL OR share_within_30 IS NULL THEN NULL ELSE share_within_30 >= threshold_30 END AS met_30,
    CASE WHEN threshold_90 IS NULL OR share_within_90 IS NULL THEN NULL ELSE share_within_90 >= threshold_90 END AS met_90
  FROM shares
)
SELECT
  line_of_business,
  claim_month,
  as_of_date,
  clean_claims,
  rejected,
  paid_date_unknown,
  due_30,
  paid_within_30,
  share_within_30,
  threshold_30,
  met_30,
  due_90,
  paid_within_90,
  share_within_90,
  threshold_90,
  met_90,
  CASE
    WHEN met_30 IS NULL AND met_90 IS NULL THEN NULL
    ELSE coalesce(met_30, true) AND coalesce(met_90, true)
  END AS met
FROM flags
ORDER BY line_of_business, claim_month
