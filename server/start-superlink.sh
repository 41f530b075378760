#!/usr/bin/env bash
# Start the coordinator's SuperLink with TLS and SuperNode authentication.
#   server/start-superlink.sh KEYS_DIR [HOST] [PORT] [STATE_DB]
# KEYS_DIR is what `fedsynth certs --out KEYS_DIR` wrote (ca.crt, server.pem, server.key).
# STATE_DB (default KEYS_DIR/superlink-state.db) keeps registered SuperNodes and runs across restarts.
set -euo pipefail
keys=$(realpath "$1"); host=${2:-127.0.0.1}; port=${3:-8000}; db=$(realpath -m "${4:-$keys/superlink-state.db}")
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-superlink \
  --ssl-ca-certfile "$keys/ca.crt" \
  --ssl-certfile "$keys/server.pem" \
  --ssl-keyfile "$keys/server.key" \
  --enable-supernode-auth \
  --disable-runtime-dependency-installation \
  --database "$db" \
  --host "$host" --port "$port"
