#!/usr/bin/env bash
# Start this site's daemon: a Flower SuperNode with TLS, SuperNode authentication and
# signed app packages only.
#   sites/start-supernode.sh SITE_TOML FRONT_DOOR_ADDR CA_CERT NODE_AUTH_KEY TRUSTED_ENTITIES [PORT]
# e.g. sites/start-supernode.sh sites/site-1.toml coordinator.example.org:8443 \
#        /etc/fedsynth/keys/ca.crt /etc/fedsynth/keys/supernode /etc/fedsynth/trusted-entities.yaml 9094
# TRUSTED_ENTITIES is the app-signing public key(s) this site's operator trusts (the coordinator's
# trusted-entities.yaml, received out of band): a run whose app package no listed key signed is refused.
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: $0 SITE_TOML FRONT_DOOR_ADDR CA_CERT NODE_AUTH_KEY TRUSTED_ENTITIES [PORT]" >&2; exit 2; }
site_toml=$(realpath "$1"); superlink=$2; ca=$(realpath "$3"); key=$(realpath "$4"); trusted=$(realpath "$5")
port=${6:-9094}
[ -s "$trusted" ] || { echo "$trusted: no trusted app-signing keys; this site would refuse every run" >&2; exit 2; }
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-supernode \
  --superlink "$superlink" \
  --root-certificates "$ca" \
  --auth-supernode-private-key "$key" \
  --trusted-entities "$trusted" \
  --host 127.0.0.1 --port "$port" \
  --node-config "site-config=\"$site_toml\""
