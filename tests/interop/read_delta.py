#!/usr/bin/env python3
"""Read a Delta table with a reader that shares no code with delta-rs.

Usage: read_delta.py TABLE_PATH [VERSION]

Reads TABLE_PATH with polars-deltalake (built on delta-kernel-rs), at
VERSION when given, and prints one JSON document on stdout:
{"reader", "version", "rows", "columns", "dtypes", "data"}, where data holds
every row with values rendered as strings. Used by gold's integration tests
to check that what gold writes is standard Delta.
"""
import json
import sys

import polars_deltalake as pdl


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    version = int(sys.argv[2]) if len(sys.argv) == 3 else None
    frame = pdl.read_delta(path, version=version)
    data = [{k: (None if v is None else str(v)) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    print(json.dumps({
        "reader": "polars-deltalake",
        "version": version,
        "rows": frame.height,
        "columns": frame.columns,
        "dtypes": [str(t) for t in frame.dtypes],
        "data": data,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
