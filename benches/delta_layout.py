#!/usr/bin/env python3
"""The layout of every Delta table under a warehouse folder, read from the
Delta log itself (no delta-rs code): active data files, commits, and
commits since the last checkpoint.

Usage: delta_layout.py WAREHOUSE_DIR

Prints one JSON document: {"tables": {name: {"active_files", "bytes",
"commits", "since_checkpoint", "checkpoint"}}}.
"""
import json
import os
import sys

import pyarrow.parquet as pq


def replay(log_dir):
    names = os.listdir(log_dir)
    commits = sorted(int(n[:20]) for n in names if n.endswith(".json") and n[:20].isdigit())
    checkpoint = None
    last = os.path.join(log_dir, "_last_checkpoint")
    if os.path.exists(last):
        with open(last) as f:
            checkpoint = json.load(f)["version"]
    active = {}
    if checkpoint is not None:
        parts = sorted(n for n in names if n.startswith(f"{checkpoint:020d}.checkpoint") and n.endswith(".parquet"))
        for part in parts:
            table = pq.read_table(os.path.join(log_dir, part), columns=["add"]).column("add").to_pylist()
            for add in table:
                if add is not None:
                    active[add["path"]] = add.get("size") or 0
    for v in commits:
        if checkpoint is not None and v <= checkpoint:
            continue
        with open(os.path.join(log_dir, f"{v:020d}.json")) as f:
            for line in f:
                action = json.loads(line)
                if "add" in action:
                    active[action["add"]["path"]] = action["add"].get("size") or 0
                elif "remove" in action:
                    active.pop(action["remove"]["path"], None)
    latest = commits[-1] if commits else checkpoint
    since = latest - checkpoint if checkpoint is not None else (latest + 1 if latest is not None else 0)
    return {
        "active_files": len(active),
        "bytes": sum(active.values()),
        "commits": (latest + 1) if latest is not None else 0,
        "commit_files": len(commits),
        "since_checkpoint": since,
        "checkpoint": checkpoint,
    }


def main():
    root = sys.argv[1]
    tables = {}
    for name in sorted(os.listdir(root)):
        log = os.path.join(root, name, "_delta_log")
        if os.path.isdir(log):
            tables[name] = replay(log)
    print(json.dumps({"tables": tables}))


if __name__ == "__main__":
    main()
