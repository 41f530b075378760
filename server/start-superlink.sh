#!/usr/bin/env bash
# Start the coordinator's SuperLink with TLS and SuperNode authentication.
#   server/start-superlink.sh KEYS_DIR [HOST] [PORT]
# KEYS_DIR is what `fedsynth certs --out KEYS_DIR` wrote (ca.crt, server.pem, server.key).
set -euo pipefail
keys=$(realpath "$1"); host=${2:-127.0.0.1}; port=${3:-8000}
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-superlink \
  --ssl-ca-certfile "$keys/ca.crt" \
  --ssl-certfile "$keys/server.pem" \
  --ssl-keyfile "$keys/server.key" \
  --enable-supernode-auth \
  --disable-runtime-dependency-installation \
  --host "$host" --port "$port"
