#!/usr/bin/env bash
# Benchmark of bronze ingestion against the floor, side by side in one run.
#
#   bash benches/ingest.sh LANDING      (a landing from: gold generate --out LANDING --members 1000000)
#
# Each step is its own process, timed with its own peak RSS (benches/measure.py):
#   floor      benches/ingest_floor.py: the CSV sources read into Arrow with
#              pyarrow and written as plain Delta tables (pyarrow + deltalake,
#              in a venv at ${GOLD_BENCH_VENV:-~/.cache/gold/bench-venv})
#   gold csv   gold ingest of the same CSV sources (typed, rescued,
#              checkpointed, metadata columns, partitioned)
#   gold json  gold ingest of the NDJSON and nested JSON sources
#   gold sql   gold ingest of the member table from the landing's legacy.db
# and closes with the ratio of gold csv to the floor.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LANDING="$(cd "${1:?usage: benches/ingest.sh LANDING}" && pwd)"
VENV="${GOLD_BENCH_VENV:-$HOME/.cache/gold/bench-venv}"
if ! "$VENV/bin/python" -c 'import pyarrow, deltalake' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check pyarrow deltalake >&2
fi
cargo build --release -p gold-cli -j 2 >&2
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/gold"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
DATE="$(ls "$LANDING" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort | tail -n1)"

python3 benches/measure.py floor -- "$VENV/bin/python" benches/ingest_floor.py "$LANDING" "$SCRATCH/floor" | tee "$SCRATCH/floor.json"

# One models folder per source kind, from the shipped sources.toml.
project() { # NAME KINDS...
  local dir="$SCRATCH/$1"; shift
  mkdir -p "$dir/models"
  python3 - "$dir/models/sources.toml" "$@" <<'PY'
import re, sys
out, kinds = sys.argv[1], set(sys.argv[2:])
text = open("models/sources.toml").read()
head, *blocks = text.split("\n[[source]]\n")
kept = []
for b in blocks:
    kind = re.search(r'^kind = "(\w+)"', b, re.M).group(1)
    b = re.sub(r'^active = \w+\n', '', b, flags=re.M)
    kept.append(re.sub(r'^kind =', 'active = %s\nkind =' % ("true" if kind in kinds else "false"), b, count=1, flags=re.M))
open(out, "w").write(head + "".join("\n[[source]]\n" + b for b in kept))
PY
  printf '[warehouse]\nroot = "wh"\n[models]\ndir = "models"\n' > "$dir/gold.toml"
}
project csv csv
project json ndjson json
project sql sql
for kind in csv json sql; do
  python3 benches/measure.py "gold $kind" -- env -u GOLD_MEMBERS_DB_URL "$BIN" -q --output-format json --config "$SCRATCH/$kind/gold.toml" ingest --landing "$LANDING" --date "$DATE" \
    | python3 -c '
import json, sys
m = json.loads(sys.stdin.read())
r = m.pop("result") or {}
st = (r.get("stages") or [{}])[0]
m.update(rows=st.get("rows_written"), rows_rescued=st.get("rows_rescued"), seconds=st.get("seconds"),
         rows_per_s=round((st.get("rows_written") or 0) / max(m["wall_s"], 1e-9)),
         sources={s["source"]: s["rows_written"] for s in st.get("sources", []) if s["rows_written"]})
print(json.dumps(m))' | tee "$SCRATCH/$kind.json"
done
python3 - "$SCRATCH/floor.json" "$SCRATCH/csv.json" <<'PY'
import json, sys
floor, gold = (json.load(open(p)) for p in sys.argv[1:3])
print(json.dumps({"gold_csv_wall_over_floor_wall": round(gold["wall_s"] / floor["wall_s"], 2),
                  "floor_rows": floor["result"]["rows"], "gold_csv_rows": gold["rows"],
                  "floor_peak_rss_mb": floor["peak_rss_mb"], "gold_csv_peak_rss_mb": gold["peak_rss_mb"]}))
PY
