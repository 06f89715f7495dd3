#!/usr/bin/env bash
# Fraud scoring side by side: gold, scikit-learn's IsolationForest on the
# same features, and the seed notebooks' CASE WHEN rule, on one landing.
#
#   bash benches/fraud_baseline.sh [MEMBERS] [DAYS] [SEED]
#   NIGHTLY=1 bash benches/fraud_baseline.sh ...   # one build per day
#   GOLD=target/debug/gold bash benches/fraud_baseline.sh ...   # that binary
#
# Generates a landing (default 20,000 members, 30 days, seed 7) into
# $OUT/landing, builds it through the score stage (which trains the model),
# exports the features and prints one table of metrics. Needs a release
# gold (built here if missing) and python3; scikit-learn goes into a venv
# under $HOME/.cache/gold. Nothing is downloaded except the PyPI packages.
set -euo pipefail
MEMBERS=${1:-20000}
DAYS=${2:-30}
SEED=${3:-7}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/gold-fraud-$MEMBERS-$DAYS-$SEED}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gold/target}
VENV=$HOME/.cache/gold/venv-fraud

# GOLD=path/to/gold runs that binary instead of building the release one.
if [ -z "${GOLD:-}" ]; then
  GOLD=$CARGO_TARGET_DIR/release/gold
  (cd "$ROOT" && cargo build --release -p gold-cli -j 2 -q)
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'scikit-learn>=1.4' numpy
fi

rm -rf "$OUT/warehouse" "$OUT/export"
if [ ! -f "$OUT/landing/_truth/fraud_labels.csv" ]; then
  "$GOLD" -q generate --out "$OUT/landing" --members "$MEMBERS" --days "$DAYS" --seed "$SEED" --force
fi
DAYS_FOUND=$(ls "$OUT/landing" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort)
LAST=$(echo "$DAYS_FOUND" | tail -1)
if [ "${NIGHTLY:-0}" = 1 ]; then
  # As the nightly job runs: one build per day, so the score stage retrains
  # as the window grows. (A single build replays silver and the dimensions
  # day by day too, so dim_members has the same history either way; it
  # trains one model, on the whole window.)
  for DAY in $DAYS_FOUND; do
    "$GOLD" -q --warehouse "$OUT/warehouse" build --landing "$OUT/landing" --date "$DAY" > "$OUT/build.txt"
  done
else
  "$GOLD" -q --warehouse "$OUT/warehouse" build --landing "$OUT/landing" --date "$LAST" > "$OUT/build.txt"
fi
grep -A4 '^score:' "$OUT/build.txt" || true
"$GOLD" -q --warehouse "$OUT/warehouse" evaluate --labels "$OUT/landing/_truth/fraud_labels.csv" \
  --export-features "$OUT/export" --date "$LAST" > "$OUT/evaluate.txt"
cat "$OUT/evaluate.txt"
echo
"$VENV/bin/python" "$ROOT/benches/fraud_baseline.py" "$OUT/export"
