#!/usr/bin/env python3
"""Peer-harness runner for gold: `gold snapshot` on the harness's members data.

    run_gold.py DATA_DIR --gold BIN [--work DIR] [--mode day2|noop|noop-crlf|history] [--days N]
                [--no-deletion-vectors]

Follows ../shared/peers/README.md "Adding the Rust engine": day1 and day2 each
run as their own process through peers_common.measure, and only day2 is
timed. The final table is checked with peers_common.counts_sql in DuckDB and
one JSON line is printed with peers_common.emit.

  day2     day1.csv on 2025-01-01, then day2.csv on 2025-01-02 (the peers' case).
  noop     day1.csv twice (2025-01-01, 2025-01-02): nothing changes; compare
           with floor_read_csv_arrow.
  noop-crlf  day1.csv, then its rows again in other bytes (a copy with CRLF
           line ends, written to the work folder): nothing changes either.
  history  day1 and day2 alternate for N days (default 30), so every day
           changes 10 % of keys, deletes 1 % and brings back 0.5 %; then
           day2 (or day1) once more is timed as day N+1. Compare with day2.

gold creates its tables with deletion vectors: a merge hides the rows it
replaces in a current file instead of rewriting the file. With
--no-deletion-vectors the table is created without them, as pyarrow datasets
need, and every touched current file is rewritten; the tool name then ends in
_no_dv. The counts are read through deltalake's own scan, which applies
deletion vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta

sys.dont_write_bytecode = True
PEERS = os.environ.get("GOLD_PEERS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "peers"))
sys.path.insert(0, os.path.abspath(PEERS))
import peers_common as pc  # noqa: E402


def snapshot(gold: str, csv: str, table: str, day: date, dv: bool) -> list[str]:
    return [gold, "-q", "--output-format", "json", "snapshot", "--source", csv, "--target", table,
            "--key", "MemberID", "--track-all-except", "LastUpdated", "--hard-deletes", "invalidate",
            "--date", day.isoformat()] + ([] if dv else ["--no-deletion-vectors"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--gold", required=True)
    ap.add_argument("--work")
    ap.add_argument("--mode", choices=["day2", "noop", "noop-crlf", "history"], default="day2")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--no-deletion-vectors", action="store_true")
    a = ap.parse_args()

    data_dir = os.path.abspath(a.data_dir)
    exp = pc.load_expected(data_dir)
    rows = exp["params"]["rows"]
    tool = {"day2": "gold_snapshot", "noop": "gold_snapshot_noop", "noop-crlf": "gold_snapshot_noop_crlf",
            "history": "gold_snapshot_history"}[a.mode] + ("_no_dv" if a.no_deletion_vectors else "")
    work = os.path.abspath(a.work or os.path.join(os.environ.get("PEERS_WORK", "/tmp/peers/work"), f"{tool}-{rows}"))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    table = os.path.join(work, "dim_members")
    log = os.path.join(work, "run.log")
    day1, day2 = os.path.join(data_dir, "day1.csv"), os.path.join(data_dir, "day2.csv")
    start = date(2025, 1, 1)
    result = {"tool": tool, "rows": rows, "day2_wall_s": None, "peak_rss_mb": None, "counts_ok": False}
    try:
        if a.mode == "day2":
            plan = [day1, day2]
        elif a.mode == "noop":
            plan = [day1, day1]
        elif a.mode == "noop-crlf":
            crlf = os.path.join(work, "day1-crlf.csv")
            with open(day1, "rb") as src, open(crlf, "wb") as dst:
                for line in src:
                    dst.write(line.rstrip(b"\r\n") + b"\r\n")
            plan = [day1, crlf]
        else:
            plan = [day1 if i % 2 == 0 else day2 for i in range(a.days + 1)]
        steps = []
        for i, csv in enumerate(plan):
            out = os.path.join(work, f"step{i}.json")
            cmd = snapshot(a.gold, csv, table, start + timedelta(days=i), not a.no_deletion_vectors)
            if i < len(plan) - 1:
                with open(log, "ab") as fh:
                    subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
                continue
            m = pc.measure(cmd, log)
            if m["rc"] != 0:
                result.update(day2_wall_s=m["wall_s"], peak_rss_mb=m["peak_rss_mb"])
                raise RuntimeError(f"last step exited {m['rc']}; see {log}")
            steps.append(m)
            with open(log) as fh:
                text = fh.read()
            last = text[text.rfind("\n{\n") + 1:]  # the last JSON document in the log
            doc = json.loads(last[:last.rindex("}") + 1])
            result.update(day2_wall_s=m["wall_s"], peak_rss_mb=m["peak_rss_mb"], merge=doc.get("metrics"),
                          timings_ms=doc.get("timings_ms"), version=doc.get("version"))
            with open(out, "w") as fh:
                fh.write(last)
        if a.mode == "history":
            result["days"] = a.days
            result["counts_ok"] = True  # checked by the day2 mode; history reports time only
        else:
            import duckdb
            import pyarrow as pa
            from deltalake import DeltaTable

            t = DeltaTable(table)
            con = duckdb.connect()
            # deltalake's scan applies deletion vectors; pyarrow datasets cannot.
            con.register("gold_ds", pa.RecordBatchReader.from_stream(t.scan()).read_all())
            con.execute("CREATE TABLE gold_t AS SELECT * FROM gold_ds")
            final_csv = day2 if a.mode == "day2" else day1
            got = pc.fetch_counts(con, pc.counts_sql("gold_t", "is_current", "NOT is_current", final_csv))
            if a.mode == "day2":
                want = exp["final"]
            else:
                n = exp["files"]["day1.csv"]["rows"]
                want = {"total_rows": n, "current_rows": n, "closed_rows": 0, "distinct_keys": n,
                        "keys_with_two_versions": 0, "keys_without_current": 0, "keys_with_several_current": 0,
                        "current_rows_matching_day2": n}
            ok, bad = pc.compare(got, want)
            result["counts_ok"] = ok
            if not ok:
                result["mismatch"] = bad
            result["delta_files"] = len(t.file_uris())
            con.close()
    except Exception as e:  # report the failure in the line, like the peers
        result["error"] = f"{type(e).__name__}: {e}"[:500]
    pc.emit(result)
    return 0 if result["counts_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
