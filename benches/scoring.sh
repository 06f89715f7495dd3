#!/usr/bin/env bash
# Fraud scoring on a large landing: training time and scoring throughput
# (apply only: the detectors on features already computed), with wall time
# and peak RSS of each command.
#
#   bash benches/scoring.sh LANDING [DATE]
#
# LANDING is a `gold generate` output (e.g. --members 1000000). Builds a
# warehouse through the facts in $OUT (default /tmp/gold-scoring-bench)
# unless one is there, then times `gold train` and `gold score` (each
# prints its own split: features, apply, claims/s).
set -euo pipefail
LANDING=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/gold-scoring-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gold/target}
GOLD=$CARGO_TARGET_DIR/release/gold
DATE=${2:-$(ls "$LANDING" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort | tail -1)}
(cd "$ROOT" && cargo build --release -p gold-cli -j 2 -q)
if [ ! -d "$OUT/warehouse/fact_claims" ]; then
  "$GOLD" -q --warehouse "$OUT/warehouse" build --landing "$LANDING" --date "$DATE" --only ingest,silver,dims,facts > /dev/null
fi
python3 "$ROOT/benches/measure.py" train -- "$GOLD" --warehouse "$OUT/warehouse" train --date "$DATE"
python3 "$ROOT/benches/measure.py" score -- "$GOLD" --warehouse "$OUT/warehouse" score --date "$DATE"
