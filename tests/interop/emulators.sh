#!/usr/bin/env bash
# The object-store emulators for gold's object-storage tests, on loopback:
# moto_server (S3) and Azurite (Azure Blob). Idempotent: installs what is
# missing, starts what is not listening, creates what does not exist.
#
#   eval "$(bash tests/interop/emulators.sh)"          # bucket + container "gold"
#   eval "$(bash tests/interop/emulators.sh a b)"      # "a" and "b", each both
#   kill $(cat /tmp/gold-emulators/*.pid)               # stop both
#
# 1. moto[server] and azure-storage-blob, pinned in requirements.txt, in the
#    venv $GOLD_VENV (default ~/.cache/gold/venv, as tests/run.sh);
# 2. Azurite 3.35.0 from npm under $GOLD_NODE (default ~/.cache/gold/node):
#    the last release that runs on Debian's Node 20 (3.36 wants Node 21+);
# 3. both started in the background if their port is free, logs and data in
#    $GOLD_EMULATORS (default /tmp/gold-emulators), and left running;
# 4. each NAME created as an S3 bucket and as an Azure container;
# 5. the exports a test needs printed on stdout (all else goes to stderr).
#    Credentials are the emulators' fixed test ones. AWS_ENDPOINT_URL and the
#    static keys keep delta-rs and every reader off the EC2 metadata service;
#    object_store takes Azurite's address from AZURITE_BLOB_STORAGE_URL when
#    azure_storage_use_emulator=true (it is not a storage option).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

log() { printf 'tests/interop/emulators.sh: %s\n' "$*" >&2; }

VENV="${GOLD_VENV:-$HOME/.cache/gold/venv}"
NODE_PREFIX="${GOLD_NODE:-$HOME/.cache/gold/node}"
STATE="${GOLD_EMULATORS:-/tmp/gold-emulators}"
S3_PORT="${GOLD_MOTO_PORT:-5555}"
AZ_PORT="${GOLD_AZURITE_PORT:-10000}"
NAMES=("${@:-gold}")
mkdir -p "$STATE/azurite"

# 1. moto and the Azure client, at the versions of requirements.txt.
if ! "$VENV/bin/python" -c 'import moto.server, boto3, azure.storage.blob' 2>/dev/null; then
  log "installing moto[server] and azure-storage-blob into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC2046 # one word per pinned requirement
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    $(grep -E '^(moto\[server\]|azure-storage-blob)==' requirements.txt) >&2
fi

# 2. Azurite.
AZURITE="$NODE_PREFIX/node_modules/.bin/azurite-blob"
if [ ! -x "$AZURITE" ]; then
  log "installing azurite@3.35.0 under $NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --loglevel=error azurite@3.35.0 >&2
fi

# 3. The servers (setsid: they outlive this script and its shell).
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! up "$S3_PORT"; then
  log "starting moto_server on 127.0.0.1:$S3_PORT"
  setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto.log" 2>&1 </dev/null &
  echo $! >"$STATE/moto.pid"
fi
if ! up "$AZ_PORT"; then
  log "starting Azurite (blob) on 127.0.0.1:$AZ_PORT"
  setsid "$AZURITE" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --location "$STATE/azurite" \
    --skipApiVersionCheck --loose --disableTelemetry --silent >"$STATE/azurite.log" 2>&1 </dev/null &
  echo $! >"$STATE/azurite.pid"
fi
for _ in $(seq 1 60); do
  up "$S3_PORT" && up "$AZ_PORT" && break
  sleep 0.5
done
up "$S3_PORT" || { log "moto_server did not come up (see $STATE/moto.log)"; exit 1; }
up "$AZ_PORT" || { log "Azurite did not come up (see $STATE/azurite.log)"; exit 1; }

# 4. Buckets and containers (object_store cannot create either).
S3_URL="http://127.0.0.1:$S3_PORT"
AZ_URL="http://127.0.0.1:$AZ_PORT"
AZ_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_CONN="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZ_KEY;BlobEndpoint=$AZ_URL/devstoreaccount1;"
S3_URL="$S3_URL" AZ_CONN="$AZ_CONN" "$VENV/bin/python" - "${NAMES[@]}" >&2 <<'EOF'
import os, sys
import boto3
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
s3 = boto3.client("s3", endpoint_url=os.environ["S3_URL"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
blob = BlobServiceClient.from_connection_string(os.environ["AZ_CONN"])
for name in sys.argv[1:]:
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    try:
        blob.create_container(name)
    except ResourceExistsError:
        pass
EOF

# 5. What a test needs.
cat <<EOF
export GOLD_TEST_S3_ENDPOINT=$S3_URL
export GOLD_TEST_S3_BUCKET=${NAMES[0]}
export AWS_ENDPOINT_URL=$S3_URL
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export AWS_EC2_METADATA_DISABLED=true
export GOLD_TEST_AZURITE=1
export GOLD_TEST_AZURE_CONTAINER=${NAMES[0]}
export AZURITE_BLOB_STORAGE_URL=$AZ_URL
export AZURE_STORAGE_USE_EMULATOR=true
export GOLD_TEST_AZURE_CONNECTION_STRING='$AZ_CONN'
EOF
