-- gold_fwa_referrals: fraud, waste and abuse referrals, the claims whose
-- fraud score is at or above the referral threshold, by provider and
-- pattern of reasons.
--
-- Grain: one row per provider and pattern. Claims without a provider
-- (care-management claims) have a NULL provider_id.
--
-- Definitions:
--   The threshold is scoring.toml's scores.referral_threshold, given to
--   this model as ${referral_threshold}.
--   The pattern is the claim's top reason; reasons lists its top three
--   reasons in order, without their figures ("code_overuse_at_provider
--   (z=9.7)" becomes "code_overuse_at_provider").
--
-- Columns:
--   provider_id, pattern, reasons
--   referred_claims       claims referred
--   referred_amount       sum of their billed amounts, decimal
--   mean_score, max_score
--   model_version         the model that scored them
WITH referred AS (
  SELECT
    s.provider_id,
    s.score,
    s.model_version,
    coalesce(split_part(s.reason_1, ' (', 1), 'none') AS pattern,
    concat_ws(' + ', split_part(s.reason_1, ' (', 1), split_part(s.reason_2, ' (', 1), split_part(s.reason_3, ' (', 1))
      AS reasons,
    f.billed_amount
  FROM gold_fraud_scores s
  LEFT JOIN fact_claims f ON f.claim_id = s.claim_id
  WHERE s.score >= ${referral_threshold}
)
SELECT
  provider_id,
  pattern,
  reasons,
  count(*) AS referred_claims,
  coalesce(sum(billed_amount), 0) AS referred_amount,
  avg(score) AS mean_score,
  max(score) AS max_score,
  max(model_version) AS model_version
FROM referred
GROUP BY provider_id, pattern, reasons
ORDER BY referred_claims DESC, provider_id, pattern, reasons
