#!/usr/bin/env python3
"""Run a command, then print its wall time and peak RSS as one JSON line.

Usage: measure.py LABEL -- COMMAND [ARGS...]

The peak RSS is the child's own ru_maxrss (os.wait4), so nothing of this
script mixes in. The command's stdout goes to stderr, so that stdout holds
only the measurement; if the command prints a JSON document, it is included
under "result".
"""
import json
import os
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    label, cmd = sys.argv[1], sys.argv[3:]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    sys.stderr.write(out.decode(errors="replace"))
    try:
        result = json.loads(out)
    except ValueError:
        result = None
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({"label": label, "exit_code": code, "wall_s": round(wall, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "result": result}))
    return code


if __name__ == "__main__":
    sys.exit(main())
