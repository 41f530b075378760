#!/usr/bin/env bash
# Deployment Engine smoke test on 127.0.0.1: TLS + SuperNode authentication,
# one SuperLink, two SuperNodes, a tiny study, then checks the pool and report.
#   server/smoke-deploy.sh [WORKDIR] [SCENARIO] [PORT]   (defaults: a temp dir, simulations/tiny.toml, 8100)
# Everything listens on 127.0.0.1 only. Processes started here are stopped by PID on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${1:-$(mktemp -d /tmp/fedsynth-deploy.XXXXXX)}")
scenario=$(realpath "${2:-$repo/simulations/tiny.toml}")
port=${3:-8100}
mkdir -p "$work"
export FLWR_HOME="$work/flwr-home" FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 \
       FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
mkdir -p "$FLWR_HOME"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# 1. keys, each made where it is used: the coordinator's CA + SuperLink certificate + registry;
#    each site's own SuperNode and signing keys (private halves never leave "$work/site-k/keys")
fedsynth certs --out "$work/keys" --force >/dev/null
for k in 1 2; do fedsynth site-keys --out "$work/site-$k/keys" --force >/dev/null; done
# 2. data: each site gets its own NIfTI folder (the bundled cohort stands in for hospital archives)
size=$(python - "$scenario" <<'PY'
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb")).get("cohort", {})
print(c.get("size", 64), c.get("patients", 6), c.get("slices", 16), c.get("modality", "ct"))
PY
)
read -r sz npat nsl mod <<<"$size"
[ -d "$work/cohort" ] || fedsynth -q data make-cohort --modality "$mod" --sites 2 --patients "$npat" \
  --slices "$nsl" --size "$sz" --out "$work/cohort"
for k in 1 2; do
  cat > "$work/site-$k.toml" <<TOML
[site]
id = "site-$k"
modality = "$mod"
data_dir = "$work/cohort/site-$k"
workdir = "$work/sites/site-$k"
image_size = $sz
train_fraction = 0.5
val_fraction = 0.25
[daemon]
signing_key = "$work/site-$k/keys/signing/site.key"
[privacy]
min_max_shift = 2   # the tiny scenario's gate searches shifts up to 2 px (the default floor is 4)
TOML
done
cat > "$work/coordinator.toml" <<TOML
scenario = "$scenario"
out = "$work/study"
site_keys = "$work/keys/coordinator/site-keys"
expected_sites = 2
min_sites = 2
connect_timeout_s = 300
TOML
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "deploy"
[superlink.deploy]
address = "127.0.0.1:$port"
root-certificates = "$work/keys/ca.crt"
TOML
# 2b. enrolment: each site hands the coordinator its public signing key and policy digest (out of band)
for k in 1 2; do
  digest=$(fedsynth -q policy "$work/site-$k.toml" | awk '/policy digest/ {print $NF}')
  fedsynth -q enrol --registry "$work/keys/coordinator/site-keys" --site "site-$k" \
    --signing-key "$work/site-$k/keys/signing/site.pub" --policy-digest "$digest" >/dev/null
done
# 3. SuperLink with TLS and node authentication
"$repo/server/start-superlink.sh" "$work/keys" 127.0.0.1 "$port" >"$work/superlink.log" 2>&1 &
pids+=($!)
sleep 8
# 4. register the two enrolled sites, then start their SuperNodes
for k in 1 2; do flwr supernode register "$work/site-$k/keys/supernode.pub" deploy --name "site-$k"; done
for k in 1 2; do
  "$repo/sites/start-supernode.sh" "$work/site-$k.toml" "127.0.0.1:$port" "$work/keys/ca.crt" \
    "$work/site-$k/keys/supernode" $((port + 10 + k)) >"$work/supernode-$k.log" 2>&1 &
  pids+=($!)
done
sleep 5
# 4b. a SuperNode whose key was never registered must be refused
python -c "from pathlib import Path; from fedsynth.federation.certs import make_supernode_key; make_supernode_key(Path('$work/intruder'))"
set +e
timeout 90 "$repo/sites/start-supernode.sh" "$work/site-1.toml" "127.0.0.1:$port" "$work/keys/ca.crt" \
  "$work/intruder" $((port + 20)) >"$work/intruder.log" 2>&1
rc=$?
set -e
if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then echo "unregistered SuperNode was NOT refused (exit $rc)"; exit 1; fi
echo "unregistered SuperNode refused (exit $rc)"
# 5. the study
cd "$repo"
flwr run . deploy --stream --run-config "coordinator=\"$work/coordinator.toml\""
# 6. checks: every site's bundle verified in the pool, a report with the methods
python - "$work/study" <<'PY'
import json, sqlite3, sys
out = sys.argv[1]
db = sqlite3.connect(f"{out}/pool/manifest.sqlite")
sites = {r[0] for r in db.execute("SELECT site FROM bundles WHERE verified = 1")}
assert sites == {"site-1", "site-2"}, sites
rep = json.load(open(f"{out}/report.json"))
assert {"synthetic-pool", "fedavg"} <= set(rep["methods"]), rep["methods"].keys()
print("deployment smoke OK:", {m: v["pooled"] for m, v in rep["methods"].items()})
PY
