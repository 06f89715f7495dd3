#!/usr/bin/env bash
# The nightly build, stage by stage: the first day of a landing, then the
# next day incrementally, each stage in its own process (`gold build --only
# STAGE`), so each has its own wall time and peak RSS (benches/measure.py).
#
#   bash benches/build.sh LANDING      (e.g. gold generate --out LANDING --members 1000000 --days 2)
#   GOLD=path/to/gold bash benches/build.sh LANDING   # that binary, not a fresh release build
#
# After the last day it also times `gold report` over the warehouse.
#
# Prints one JSON line per stage and day, then one per day with the totals
# (wall s summed over the stages, peak RSS the largest stage's). Targets
# (issue 9): day 1 within 5 minutes, an incremental day within 1 minute.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LANDING="$(cd "${1:?usage: benches/build.sh LANDING}" && pwd)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gold/target}
# GOLD=path/to/gold runs that binary instead of building the release one.
if [ -n "${GOLD:-}" ]; then
  BIN="$GOLD"
else
  cargo build --release -p gold-cli -j 2 -q >&2
  BIN="$CARGO_TARGET_DIR/release/gold"
fi
# The scratch warehouse: $SCRATCH if set (kept), else a temporary folder.
if [ -z "${SCRATCH:-}" ]; then
  SCRATCH="$(mktemp -d)"
  trap 'rm -rf "$SCRATCH"' EXIT
fi
mkdir -p "$SCRATCH"
DAYS=($(ls "$LANDING" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort))
[ "${#DAYS[@]}" -ge 2 ] || { echo "the landing needs two days at least" >&2; exit 1; }
for day in "${DAYS[0]}" "${DAYS[1]}"; do
  lines=""
  for stage in ingest silver dims facts score aggregates; do
    line=$(set +o pipefail; python3 benches/measure.py "$day $stage" -- "$BIN" -q --output-format json --warehouse "$SCRATCH/wh" \
      build --landing "$LANDING" --date "$day" --only "$stage" 2>"$SCRATCH/stderr.log" \
      | python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
r = m.pop("result") or {}
st = (r.get("stages") or [{}])[0]
m["stage_s"] = round(st.get("seconds", 0), 2)
for k in ("rows_read", "rows_written", "accepted", "quarantined"):
    if k in st:
        m[k] = st[k]
if "score" in st:
    s = st["score"]
    m.update(claims_scored=s["claims_scored"], claims_per_second=round(s["claims_per_second"]),
             trained_s=round((s.get("trained") or {}).get("seconds", 0), 1))
if "aggregates" in st:
    m["aggregates_written"] = sum(1 for a in st["aggregates"] if a["version"] is not None)
print(json.dumps(m))')
    echo "$line"
    if ! grep -q '"exit_code": 0' <<<"$line"; then
      echo "stage $stage of $day failed:" >&2
      tail -n 5 "$SCRATCH/stderr.log" >&2
      exit 1
    fi
    lines+="$line"$'\n'
  done
  printf '%s' "$lines" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(json.dumps({"label": "'"$day"' total", "wall_s": round(sum(r["wall_s"] for r in rows), 1),
                  "peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}))'
done
python3 benches/measure.py "report" -- "$BIN" -q --output-format json --warehouse "$SCRATCH/wh" \
  report --out "$SCRATCH/report.html" 2>"$SCRATCH/stderr.log" \
  | python3 -c 'import json, sys; m = json.loads(sys.stdin.read()); m.pop("result", None); print(json.dumps(m))'
