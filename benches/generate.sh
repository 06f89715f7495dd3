#!/usr/bin/env bash
# Benchmark of `gold generate`: rows per second and peak RSS.
#
#   bash benches/generate.sh [MEMBERS] [DAYS]     (defaults: 1000000 members, 7 days)
#
# Builds the release binary, generates into a scratch folder (removed
# afterwards) and prints one JSON line per run with wall time, rows/s and
# the generator's peak RSS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MEMBERS="${1:-1000000}"
DAYS="${2:-7}"
SCRATCH="${GOLD_BENCH_DIR:-/tmp/gold-bench}/generate-$MEMBERS"
cargo build --release -p gold-cli -j 2 >&2
BIN="${CARGO_TARGET_DIR:-target}/release/gold"
rm -rf "$SCRATCH"
python3 benches/measure.py "generate members=$MEMBERS days=$DAYS" -- \
  "$BIN" -q --output-format json generate --out "$SCRATCH" --members "$MEMBERS" --days "$DAYS" \
  | python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
r = m.pop("result") or {}
s = r.get("summary", {})
m.update(rows=s.get("rows"), files=len(s.get("files", {})), defects=s.get("defects"), fraud_labels=s.get("fraud_labels"),
         rows_per_s=round((s.get("rows") or 0) / m["wall_s"]))
print(json.dumps(m))
'
du -sh "$SCRATCH" >&2
rm -rf "$SCRATCH"
