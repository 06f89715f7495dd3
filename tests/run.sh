#!/usr/bin/env bash
# gold's test command: sets up what the tests need on a fresh machine, then
# runs every test of the workspace.
#
#   bash tests/run.sh            # extra arguments go to `cargo test`
#
# 1. a Python venv with the independent Delta readers (polars-deltalake,
#    DuckDB, chdb, Sail) and the emulators' clients, at $GOLD_VENV (default
#    ~/.cache/gold/venv), refilled when tests/interop/requirements.txt changes;
# 2. PostgreSQL and MariaDB on 127.0.0.1, started if they are down, and
#    GOLD_TEST_POSTGRES_URL / GOLD_TEST_MYSQL_URL pointing at them
#    (already-set variables are kept);
# 3. Debian's chromium for the report test, installed when missing;
# 4. moto (S3) and Azurite (Azure Blob) on loopback (tests/interop/emulators.sh);
# 5. cargo test over the workspace, two jobs at a time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'tests/run.sh: %s\n' "$*" >&2; }

# 1. The independent readers, and the emulators' Python clients: the venv
#    is (re)filled whenever tests/interop/requirements.txt changes.
VENV="${GOLD_VENV:-$HOME/.cache/gold/venv}"
WANT="$(sha256sum tests/interop/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$WANT" ]; then
  log "installing tests/interop/requirements.txt into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
  echo "$WANT" >"$VENV/.requirements"
fi
export GOLD_TEST_PYTHON="$VENV/bin/python"

# 2. The database servers.
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
my_up() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! my_up && [ -x /usr/sbin/mariadbd ]; then
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
for _ in $(seq 1 30); do
  pg_up && my_up && break
  sleep 1
done
pg_up || log "PostgreSQL is not reachable on 127.0.0.1:5432"
my_up || log "MariaDB is not reachable on 127.0.0.1:3306"
export GOLD_TEST_POSTGRES_URL="${GOLD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export GOLD_TEST_MYSQL_URL="${GOLD_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"

# 3. Headless Chromium for the report test: Debian's package, installed
#    when missing (as root, as on CI).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  log "installing Debian's chromium for the report test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >&2 \
    || log "could not install chromium"
fi
if command -v chromium >/dev/null; then
  export GOLD_TEST_CHROMIUM="${GOLD_TEST_CHROMIUM:-$(command -v chromium)}"
else
  log "chromium is not installed: the report test skips its browser check"
fi

# 4. The object-store emulators (moto for S3, Azurite for Azure Blob), on
#    loopback, with the exports the object-store tests read.
EMULATORS="$(GOLD_VENV="$VENV" bash tests/interop/emulators.sh)" || { log "the emulators did not start"; exit 1; }
eval "$EMULATORS"

# 5. The tests.
log "cargo test (target: ${CARGO_TARGET_DIR:-target})"
cargo test --workspace -j 2 "$@"
