-- gold_dq_scorecard: data-quality pass rates per run, silver table and
-- rule, from dq_results.
--
-- Grain: one row per run, silver table and rule (every batch of the run
-- added up).
--
-- Columns:
--   run_id, logical_date, table_name, rule, action (warn, drop,
--   quarantine, fail, or count for the duplicate counters)
--   batches           batches evaluated
--   rows_evaluated, rows_failed
--   pass_rate         1 - rows_failed / rows_evaluated (NULL when none)
SELECT
  run_id,
  logical_date,
  "table" AS table_name,
  rule,
  action,
  count(DISTINCT batch_id) AS batches,
  sum(rows_evaluated) AS rows_evaluated,
  sum(rows_failed) AS rows_failed,
  1.0 - CAST(sum(rows_failed) AS DOUBLE) / CAST(nullif(sum(rows_evaluated), 0) AS DOUBLE) AS pass_rate
FROM dq_results
GROUP BY run_id, logical_date, "table", rule, action
ORDER BY run_id, table_name, rule, action
