-- gold_provider_monthly_summary: claim counts and amounts by provider,
-- service month and status.
--
-- Grain: one row per billing provider, service month and claim status.
-- Claims without a provider (care-management claims) are left out.
--
-- Columns:
--   provider_id      the billing provider's NPI
--   service_month    yyyymm of the service date; -1 when it is unknown
--   status           submitted, pending, approved, rejected or paid
--   claims           claims in the group
--   missing_amount   claims that arrived without an amount
--   billed_amount    sum of the billed amounts, decimal
--   paid_amount      sum of the paid amounts (0 unless the claim is paid)
SELECT
  provider_id,
  service_month,
  status,
  count(*) AS claims,
  count(*) - count(billed_amount) AS missing_amount,
  coalesce(sum(billed_amount), 0) AS billed_amount,
  coalesce(sum(paid_amount), 0) AS paid_amount
FROM fact_claims
WHERE provider_id IS NOT NULL AND provider_id <> ''
GROUP BY provider_id, service_month, status
ORDER BY provider_id, service_month, status
