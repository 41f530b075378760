#!/usr/bin/env bash
# Start this site's daemon: a Flower SuperNode with TLS and SuperNode authentication.
#   sites/start-supernode.sh SITE_TOML SUPERLINK_ADDR CA_CERT NODE_AUTH_KEY [PORT]
# e.g. sites/start-supernode.sh sites/site-1.toml coordinator.example.org:8000 \
#        /etc/fedsynth/keys/ca.crt /etc/fedsynth/keys/supernode 9094
set -euo pipefail
site_toml=$(realpath "$1"); superlink=$2; ca=$(realpath "$3"); key=$(realpath "$4"); port=${5:-9094}
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-supernode \
  --superlink "$superlink" \
  --root-certificates "$ca" \
  --auth-supernode-private-key "$key" \
  --host 127.0.0.1 --port "$port" \
  --node-config "site-config=\"$site_toml\""
