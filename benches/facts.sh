#!/usr/bin/env bash
# Benchmark of the facts stage on a generated landing.
#
#   bash benches/facts.sh LANDING      (a landing from: gold generate --out LANDING --members 1000000)
#
# Builds the release binary and a scratch warehouse: ingest, silver and dims
# of every landing day but the last (untimed here; benches/silver.sh times
# them), then times, each in its own process with its own peak RSS
# (benches/measure.py):
#   facts_first        the first facts build: every fact, dim_date, dim_diagnosis
#   facts_incremental  after ingest, silver and dims of the last day: the
#                      facts of the changed claims, events and dimension intervals
#   facts_rerun        the same again: nothing to do
#   facts_full         --full-refresh: every fact rebuilt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LANDING="$(cd "${1:?usage: benches/facts.sh LANDING}" && pwd)"
cargo build --release -p gold-cli -j 2 >&2
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/gold"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
DAYS=($(ls "$LANDING" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort))
LAST="${DAYS[-1]}"
PREV="${DAYS[-2]:?the landing needs two days at least}"
gold() { # DATE ARGS..
  local date="$1"; shift
  "$BIN" -q --output-format json --warehouse "$SCRATCH/wh" build --landing "$LANDING" --date "$date" "$@"
}

summarise() { # reads measure.py's line on stdin
  python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
r = m.pop("result") or {}
for st in r.get("stages", []):
    if st["stage"] == "facts":
        f = st["facts"]
        m.update(stage_s=round(st["seconds"], 2),
                 rebuilt={t["table"]: t["rebuilt"] for t in f["tables"] if t["rebuilt"]},
                 restated=sum(t["restated"] for t in f["tables"]),
                 months_rewritten=sum(t["months_rewritten"] for t in f["tables"]),
                 inferred={k: v for k, v in f["inferred"].items() if v},
                 unknown_keys=f["unknown_keys"])
m.update(tables_written=len(r.get("tables", [])))
print(json.dumps(m))'
}
echo "setup: ingest, silver, dims up to $PREV" >&2
gold "$PREV" --only ingest,silver,dims >/dev/null
python3 benches/measure.py facts_first -- "$BIN" -q --output-format json --warehouse "$SCRATCH/wh" build --landing "$LANDING" --date "$PREV" --only facts 2>/dev/null | summarise
echo "setup: ingest, silver, dims of $LAST" >&2
gold "$LAST" --only ingest,silver,dims >/dev/null
for step in "facts_incremental" "facts_rerun" "facts_full --full-refresh"; do
  set -- $step
  name="$1"; shift
  python3 benches/measure.py "$name" -- "$BIN" -q --output-format json --warehouse "$SCRATCH/wh" build --landing "$LANDING" --date "$LAST" --only facts "$@" 2>/dev/null | summarise
done
