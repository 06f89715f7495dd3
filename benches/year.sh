#!/usr/bin/env bash
# A year of nightly builds: does the nightly job stay flat as history grows?
#
#   bash benches/year.sh MEMBERS NIGHTS [CLAIMS_PER_MEMBER_YEAR]
#   GOLD=path/to/gold bash benches/year.sh 100000 365     # that binary, no build
#   SCRATCH=/data/year bash benches/year.sh 1000000 30    # keep the landing and warehouse there
#
# 1. generates a steady-flow landing (gold generate --claims-per-member-year,
#    default 12, seed 42, from 2025-01-01) with the release binary;
# 2. builds it night by night, one `gold build --date D` process per night;
# 3. after each night prints one JSON line: the night's wall time and peak
#    RSS, each stage's seconds, and the layout of the warehouse read from
#    the Delta logs themselves (benches/delta_layout.py, every 30th night
#    and the last): the most active files of any table, and the most
#    commits since a table's last checkpoint;
# 4. at the end prints the per-stage medians and the slope: the median wall
#    time of the last 10 nights against that of nights 21 to 30, in this
#    same run (needs 30 nights or more).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MEMBERS="${1:?usage: benches/year.sh MEMBERS NIGHTS [CLAIMS_PER_MEMBER_YEAR]}"
NIGHTS="${2:?usage: benches/year.sh MEMBERS NIGHTS [CLAIMS_PER_MEMBER_YEAR]}"
RATE="${3:-12}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gold/target}
if [ -n "${GOLD:-}" ]; then
  BIN="$GOLD"
else
  cargo build --release -p gold-cli -j 2 -q >&2
  BIN="$CARGO_TARGET_DIR/release/gold"
fi
# delta_layout.py reads checkpoints with pyarrow, from a venv of its own.
VENV="${GOLD_BENCH_VENV:-$HOME/.cache/gold/bench-venv}"
if ! "$VENV/bin/python" -c 'import pyarrow' 2>/dev/null; then
  python3 -m venv "$VENV"
  timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check pyarrow==26.0.1 >&2
fi
PY="$VENV/bin/python"
if [ -z "${SCRATCH:-}" ]; then
  SCRATCH="$(mktemp -d)"
  trap 'rm -rf "$SCRATCH"' EXIT
fi
mkdir -p "$SCRATCH"
OUT="$SCRATCH/nights.jsonl"
: >"$OUT"

echo "generating $MEMBERS members, $NIGHTS nights, $RATE claims per member-year into $SCRATCH/land" >&2
python3 benches/measure.py generate -- "$BIN" -q --output-format json generate --out "$SCRATCH/land" --force \
  --members "$MEMBERS" --days "$NIGHTS" --seed 42 --start-date 2025-01-01 --claims-per-member-year "$RATE" \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); r=m.pop("result") or {}; m["rows"]=(r.get("summary") or {}).get("rows"); print(json.dumps(m))' >&2

n=0
for day in $(ls "$SCRATCH/land" | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' | sort); do
  n=$((n + 1))
  line=$(set +o pipefail; python3 benches/measure.py "$day" -- "$BIN" -q --output-format json --warehouse "$SCRATCH/wh" \
    build --landing "$SCRATCH/land" --date "$day" 2>"$SCRATCH/stderr.log" \
    | "$PY" -c '
import json, subprocess, sys
night, wh, py, last = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
m = json.loads(sys.stdin.read())
r = m.pop("result") or {}
m["night"] = night
m["stages"] = {s["stage"]: round(s.get("seconds", 0), 3) for s in r.get("stages", [])}
warnings = [w for s in r.get("stages", []) for w in (s.get("warnings") or [])]
if warnings:
    m["warnings"] = warnings
if night % 30 == 0 or night == last:
    # Reading every log takes a second or two: every 30th night and the last.
    layout = json.loads(subprocess.run([py, "benches/delta_layout.py", wh], capture_output=True, text=True, check=True).stdout)["tables"]
    files = max(layout.items(), key=lambda t: t[1]["active_files"])
    since = max(layout.items(), key=lambda t: t[1]["since_checkpoint"])
    m["max_active_files"] = [files[0], files[1]["active_files"]]
    m["max_since_checkpoint"] = [since[0], since[1]["since_checkpoint"]]
    m["tables"] = len(layout)
    m["warehouse_mb"] = round(sum(t["bytes"] for t in layout.values()) / 1e6, 1)
print(json.dumps(m))' "$n" "$SCRATCH/wh" "$PY" "$NIGHTS")
  echo "$line" | tee -a "$OUT"
  if ! grep -q '"exit_code": 0' <<<"$line"; then
    echo "night $n ($day) failed:" >&2
    tail -n 5 "$SCRATCH/stderr.log" >&2
    exit 1
  fi
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
nights = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
walls = [n["wall_s"] for n in nights]
stages = sorted({s for n in nights for s in n["stages"]})
print(f"\nnights {len(nights)}; first night {walls[0]:.2f} s; total {sum(walls) / 60:.1f} min; "
      f"slowest night after the first {max(walls[1:] or [0]):.2f} s; peak RSS {max(n['peak_rss_mb'] for n in nights):.0f} MB")
laid = [n for n in nights if "max_active_files" in n]
print(f"most active files of a table: {max(n['max_active_files'][1] for n in laid)}; "
      f"most commits since a checkpoint: {max(n['max_since_checkpoint'][1] for n in laid)} "
      f"(every 30th night and the last)")
if len(nights) >= 30:
    early, late = nights[20:30], nights[-10:]
    print(f"{'stage':<12} {'median 21-30 s':>15} {'median last 10 s':>17}")
    for s in stages + ["wall"]:
        get = (lambda n: n["wall_s"]) if s == "wall" else (lambda n: n["stages"].get(s, 0.0))
        print(f"{s:<12} {med([get(n) for n in early]):>15.3f} {med([get(n) for n in late]):>17.3f}")
    print(f"slope (median of the last 10 nights / median of nights 21-30): "
          f"{med([n['wall_s'] for n in late]) / med([n['wall_s'] for n in early]):.2f}")
PY

# 5. The insurer's economics over the whole landing, from gold's own
#    aggregates: medical loss ratio, denial rate, clean claims paid within
#    30 days (what a real plan shows: 75-95%, 5-20%, at least 90%).
echo "economics over $n nights (gold_loss_ratio, gold_claim_outcomes, gold_prompt_pay):"
"$BIN" -q --warehouse "$SCRATCH/wh" sql --format table "
  SELECT
    (SELECT round(sum(paid_amount) / sum(premium_earned), 3) FROM gold_loss_ratio) AS medical_loss_ratio,
    (SELECT round(sum(denied) * 1.0 / sum(decided), 3) FROM gold_claim_outcomes) AS denial_rate,
    (SELECT round(sum(paid_within_30) * 1.0 / sum(due_30), 3) FROM gold_prompt_pay) AS clean_paid_within_30"
