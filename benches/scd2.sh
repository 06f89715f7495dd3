#!/usr/bin/env bash
# SCD2 benchmark: gold snapshot side by side with today's tools, in one run.
#
#   bash benches/scd2.sh ROWS [REPEATS]      e.g. bash benches/scd2.sh 1000000 2
#
# 1. builds the release gold binary;
# 2. runs the peer harness (../shared/peers/run_all.sh: floor, DuckDB SQL,
#    Delta MERGE recipes, dbt snapshot) on /tmp/peers/data-ROWS;
# 3. runs benches/peers/run_gold.py on the same files: day2 (the peers'
#    case), noop (day2 = day1), noop-crlf (day1's rows again with CRLF
#    line ends) and, with GOLD_SCD2_HISTORY_DAYS=N, the
#    history-growth case (day N+1 after N alternating snapshots); day2
#    and history run again with --no-deletion-vectors (tools *_no_dv),
#    where every touched current file is rewritten.
# Every line is JSON on stdout ({"tool", "rows", "day2_wall_s",
# "peak_rss_mb", "counts_ok", ...}), and a table closes the run.
# PEERS_TOOLS narrows the peers (default: all of them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS="${1:?usage: benches/scd2.sh ROWS [REPEATS]}"
REPEATS="${2:-1}"
PEERS_DIR="${GOLD_PEERS_DIR:-$(cd ../shared/peers && pwd)}"
export GOLD_PEERS_DIR="$PEERS_DIR"
cargo build --release -p gold-cli -j 2 >&2
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/gold"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

bash "$PEERS_DIR/run_all.sh" "$ROWS" "$REPEATS" | tee -a "$OUT"
PY="${PEERS_VENV:-/tmp/peers/venv}/bin/python"
for run in $(seq 1 "$REPEATS"); do
  export PEERS_RUN="$run"
  for mode in day2 noop noop-crlf; do
    "$PY" benches/peers/run_gold.py "/tmp/peers/data-$ROWS" --gold "$BIN" --mode "$mode" | tee -a "$OUT" || true
  done
  "$PY" benches/peers/run_gold.py "/tmp/peers/data-$ROWS" --gold "$BIN" --mode day2 --no-deletion-vectors \
    | tee -a "$OUT" || true
  if [[ -n "${GOLD_SCD2_HISTORY_DAYS:-}" ]]; then
    for dv in "" --no-deletion-vectors; do
      "$PY" benches/peers/run_gold.py "/tmp/peers/data-$ROWS" --gold "$BIN" --mode history \
        --days "$GOLD_SCD2_HISTORY_DAYS" $dv | tee -a "$OUT" || true
    done
  fi
done

"$PY" - "$OUT" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"\n{'tool':28} {'rows':>10} {'run':>4} {'day2 wall s':>12} {'peak RSS MiB':>13} {'counts ok':>10}")
for l in lines:
    wall = l.get("day2_wall_s")
    print(f"{l['tool']:28} {l['rows']:>10,} {l.get('run', 1):>4} {wall if wall is not None else '-':>12} "
          f"{l.get('peak_rss_mb') or '-':>13} {str(l.get('counts_ok')):>10}")
def walls(tool):
    return [l["day2_wall_s"] for l in lines if l["tool"] == tool and l.get("day2_wall_s")]
floor, read = walls("floor_write_delta"), walls("floor_read_csv_arrow")
gold, noop, crlf = walls("gold_snapshot"), walls("gold_snapshot_noop"), walls("gold_snapshot_noop_crlf")
if floor and gold:
    print(f"\ngold day2 / floor_write_delta: {min(gold) / min(floor):.2f}x (best of each)")
if floor and walls("gold_snapshot_no_dv"):
    print(f"gold day2 without deletion vectors / floor_write_delta: "
          f"{min(walls('gold_snapshot_no_dv')) / min(floor):.2f}x (best of each)")
if read and noop:
    print(f"gold no-op day / floor_read_csv_arrow: {min(noop) / min(read):.2f}x (best of each)")
if read and crlf:
    print(f"gold no-op day, CRLF / floor_read_csv_arrow: {min(crlf) / min(read):.2f}x (best of each)")
PY
