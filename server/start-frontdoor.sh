#!/usr/bin/env bash
# Start the coordinator's front door (nginx, Debian package `nginx`): TLS with the study's
# server certificate, forwarding only the Fleet routes to the SuperLink on 127.0.0.1.
#   server/start-frontdoor.sh KEYS_DIR [LISTEN] [SUPERLINK_PORT] [RUN_DIR]
# LISTEN is ADDRESS:PORT (default 127.0.0.1:8443). Bind a public interface only by naming it,
# e.g. 203.0.113.7:8443; nothing here binds 0.0.0.0 by itself.
# KEYS_DIR is what `fedsynth certs --out KEYS_DIR` wrote (ca.crt, server.pem, server.key).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keys=$(realpath "$1"); listen=${2:-127.0.0.1:8443}; upstream=${3:-8000}
run=$(realpath -m "${4:-$keys/frontdoor}")
command -v nginx >/dev/null || { echo "nginx not found: apt-get install -y nginx" >&2; exit 2; }
case "$listen" in *:*) ;; *) echo "LISTEN must be ADDRESS:PORT, got '$listen'" >&2; exit 2;; esac
mkdir -p "$run/tmp"
chmod 0700 "$run"
# nginx started as root hands requests to unprivileged workers; they may need the temp dirs.
if [ "$(id -u)" = 0 ]; then chown nobody "$run/tmp"; chmod 0711 "$run"; fi
sed -e "s#@RUN@#$run#g" -e "s#@LISTEN@#$listen#g" -e "s#@UPSTREAM_PORT@#$upstream#g" \
    -e "s#@CERT@#$keys/server.pem#g" -e "s#@KEY@#$keys/server.key#g" -e "s#@CA@#$keys/ca.crt#g" \
    "$here/frontdoor.conf.template" >"$run/nginx.conf"
nginx -t -q -p "$run" -c "$run/nginx.conf"
exec nginx -p "$run" -c "$run/nginx.conf" -g "daemon off;"
