#!/usr/bin/env bash
# Start the coordinator's SuperLink with TLS and SuperNode authentication, on 127.0.0.1 only.
#   server/start-superlink.sh KEYS_DIR [PORT] [STATE_DB]
# KEYS_DIR is what `fedsynth certs --out KEYS_DIR` wrote (ca.crt, server.pem, server.key).
# STATE_DB (default KEYS_DIR/superlink-state.db) keeps registered SuperNodes and runs across restarts.
# Flower 1.42 serves Fleet, Control and Runtime on this one port and does not authenticate
# Control requests in its open-source build, so the port stays on loopback: sites reach the
# Fleet routes through the front door (server/start-frontdoor.sh), nothing else reaches it.
# Signed app packages come from the study's app registry (fedsynth app-registry), at
# FEDSYNTH_APP_REGISTRY (default http://127.0.0.1:8300/v1); the SuperLink never calls out.
set -euo pipefail
keys=$(realpath "$1"); port=${2:-8000}; db=$(realpath -m "${3:-$keys/superlink-state.db}")
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_SUPERGRID_API_URL=${FEDSYNTH_APP_REGISTRY:-http://127.0.0.1:8300/v1}
exec flower-superlink \
  --ssl-ca-certfile "$keys/ca.crt" \
  --ssl-certfile "$keys/server.pem" \
  --ssl-keyfile "$keys/server.key" \
  --enable-supernode-auth \
  --disable-runtime-dependency-installation \
  --database "$db" \
  --host 127.0.0.1 --port "$port"
