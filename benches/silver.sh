#!/usr/bin/env bash
# Benchmark of the silver and dims stages on a generated landing.
#
#   bash benches/silver.sh LANDING      (a landing from: gold generate --out LANDING --members 1000000)
#
# Builds the release binary, ingests the whole landing into a scratch
# warehouse (timed too, for reference), then times, each in its own process
# with its own peak RSS (benches/measure.py):
#   silver   gold build --only silver: every bronze row typed, checked,
#            de-duplicated and written to silver, quarantine and dq_results
#   dims     gold build --only dims: dim_members, dim_patients, dim_providers
#   rerun    gold build --only silver,dims again: nothing new to do
# and prints bronze rows per second of the silver stage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LANDING="$(cd "${1:?usage: benches/silver.sh LANDING}" && pwd)"
cargo build --release -p gold-cli -j 2 >&2
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/gold"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
DATE="$(ls "$LANDING" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort | tail -n1)"
GOLD=("$BIN" -q --output-format json --warehouse "$SCRATCH/wh" build --landing "$LANDING" --date "$DATE")

summarise() { # LABEL: reads measure.py's line on stdin
  python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
r = m.pop("result") or {}
for st in r.get("stages", []):
    if st["stage"] == "ingest":
        m.update(rows=st["rows_written"])
    if st["stage"] == "silver":
        m.update(bronze_rows=st["bronze_rows"], accepted=st["accepted"], duplicates=st["duplicates"],
                 quarantined=st["quarantined"], dropped=st["dropped"],
                 bronze_rows_per_s=round(st["bronze_rows"] / max(m["wall_s"], 1e-9)),
                 tables={t["table"]: t["rows"] for t in st["tables"]})
    if st["stage"] == "dims":
        m.update(dims={d["table"]: d["current_rows"] for d in st["dims"]})
m.update(tables_written=len(r.get("tables", [])))
print(json.dumps(m))'
}
python3 benches/measure.py ingest -- "${GOLD[@]}" --only ingest 2>/dev/null | summarise
python3 benches/measure.py silver -- "${GOLD[@]}" --only silver 2>/dev/null | summarise
python3 benches/measure.py dims -- "${GOLD[@]}" --only dims 2>/dev/null | summarise
python3 benches/measure.py rerun -- "${GOLD[@]}" --only silver,dims 2>/dev/null | summarise
