#!/usr/bin/env bash
# Deployment Engine smoke and attack test on 127.0.0.1: a SuperLink with TLS and SuperNode
# authentication on loopback, the nginx front door forwarding only Fleet routes, the study's
# signed app package served by the app registry, two SuperNodes that run only signed packages.
# It then plays an outsider (holding only ca.crt) and a registered site against the front door,
# starts an unsigned and a foreign-signed run (both must be refused by the sites), runs the
# signed tiny study and checks the pool and the report.
#   server/smoke-deploy.sh [WORKDIR] [SCENARIO] [PORT]   (defaults: a temp dir, simulations/tiny.toml, 8100)
# Ports: PORT SuperLink (loopback), PORT+1 front door, PORT+2 app registry, PORT+11.. SuperNodes.
# Everything listens on 127.0.0.1 only. Processes started here are stopped by PID on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${1:-$(mktemp -d /tmp/fedsynth-deploy.XXXXXX)}")
scenario=$(realpath "${2:-$repo/simulations/tiny.toml}")
port=${3:-8100}; door=$((port + 1)); regport=$((port + 2))
mkdir -p "$work"
export FLWR_HOME="$work/flwr-home" FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 \
       FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
mkdir -p "$FLWR_HOME"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. keys, each made where it is used: the coordinator's CA + SuperLink certificate + registry and
#    its app-signing key; each site's own SuperNode and signing keys (private halves stay in site-k/keys)
fedsynth certs --out "$work/keys" --force >/dev/null
fedsynth app-key --out "$work/keys/app" --force >/dev/null
for k in 1 2; do fedsynth site-keys --out "$work/site-$k/keys" --force >/dev/null; done
# each site operator installs the coordinator's trusted-entities.yaml (received out of band, like ca.crt)
for k in 1 2; do cp "$work/keys/app/trusted-entities.yaml" "$work/site-$k/keys/trusted-entities.yaml"; done
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
for name in study refused; do
  cat > "$work/coordinator-$name.toml" <<TOML
scenario = "$scenario"
out = "$work/$name"
site_keys = "$work/keys/coordinator/site-keys"
expected_sites = 2
min_sites = 2
connect_timeout_s = 300
TOML
done
# admin: the coordinator operator on loopback; outsider: anyone who reaches the front door with ca.crt
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "admin"
[superlink.admin]
address = "127.0.0.1:$port"
root-certificates = "$work/keys/ca.crt"
[superlink.outsider]
address = "127.0.0.1:$door"
root-certificates = "$work/keys/ca.crt"
TOML
# 2b. enrolment: each site hands the coordinator its public signing key and policy digest (out of band)
for k in 1 2; do
  digest=$(fedsynth -q policy "$work/site-$k.toml" | awk '/policy digest/ {print $NF}')
  fedsynth -q enrol --registry "$work/keys/coordinator/site-keys" --site "site-$k" \
    --signing-key "$work/site-$k/keys/signing/site.pub" --policy-digest "$digest" >/dev/null
done
# 3. the signed app package, its registry, the SuperLink (loopback) and the front door
spec=$(fedsynth -q app-sign --key "$work/keys/app/app-signing.key" --registry "$work/keys/apps" --app "$repo" \
       | awk '/^signed/ {print $2}')
echo "signed app package: $spec"
fedsynth -q app-registry --registry "$work/keys/apps" --port "$regport" >"$work/app-registry.log" 2>&1 &
pids+=($!)
FEDSYNTH_APP_REGISTRY="http://127.0.0.1:$regport/v1" \
  "$repo/server/start-superlink.sh" "$work/keys" "$port" >"$work/superlink.log" 2>&1 &
pids+=($!)
"$repo/server/start-frontdoor.sh" "$work/keys" "127.0.0.1:$door" "$port" "$work/frontdoor" >"$work/frontdoor.log" 2>&1 &
pids+=($!)
sleep 8
# 4. register the two enrolled sites (admin, loopback), then start their SuperNodes through the front door
for k in 1 2; do flwr supernode register "$work/site-$k/keys/supernode.pub" admin --name "site-$k"; done
for k in 1 2; do
  "$repo/sites/start-supernode.sh" "$work/site-$k.toml" "127.0.0.1:$door" "$work/keys/ca.crt" \
    "$work/site-$k/keys/supernode" "$work/site-$k/keys/trusted-entities.yaml" $((port + 10 + k)) \
    >"$work/supernode-$k.log" 2>&1 &
  pids+=($!)
done
sleep 5
# 5. attacks. 5a: a SuperNode whose key was never registered is refused (Flower's code 305)
python -c "from pathlib import Path; from fedsynth.federation.certs import make_supernode_key; make_supernode_key(Path('$work/intruder'))"
set +e
timeout 90 "$repo/sites/start-supernode.sh" "$work/site-1.toml" "127.0.0.1:$door" "$work/keys/ca.crt" \
  "$work/intruder" "$work/site-1/keys/trusted-entities.yaml" $((port + 20)) >"$work/intruder.log" 2>&1
rc=$?
set -e
# (Flower reports code 305; the process exit status is not that number, so read its log)
[ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q "Exit Code: 305" "$work/intruder.log" \
  && grep -q "Failed to activate SuperNode" "$work/intruder.log" \
  || fail "unregistered SuperNode was not refused with Flower's code 305 (exit $rc)"
echo "unregistered SuperNode refused (Flower code 305, 'Failed to activate SuperNode')"
# 5b: an outsider with only ca.crt, through the front door: register a node key, list, run, stop
set +e
flwr supernode register "$work/intruder.pub" outsider --name site-9 >"$work/outsider-register.log" 2>&1; r1=$?
flwr ls outsider >"$work/outsider-ls.log" 2>&1; r2=$?
(cd "$repo" && flwr run . outsider >"$work/outsider-run.log" 2>&1); r3=$?
flwr supernode list admin --format json >"$work/nodes.json" 2>/dev/null
flwr ls admin --format json >"$work/runs-before.json" 2>/dev/null
set -e
[ "$r1" != 0 ] && [ "$r2" != 0 ] && [ "$r3" != 0 ] || fail "outsider register/ls/run exits $r1/$r2/$r3 (all must fail)"
python -c "import json,sys; sys.exit(len(json.load(open('$work/nodes.json'))['nodes']) != 2)" \
  || fail "the outsider's node key was registered (more than the two sites' nodes)"
python - "$work/runs-before.json" <<'PY' || fail "a run exists before the study started"
import json, sys
runs = json.load(open(sys.argv[1])).get("runs", [])
sys.exit(1 if runs else 0)
PY
echo "outsider: register, ls, run refused at the front door (exits $r1/$r2/$r3); no node, no run"
# 5c: every non-Fleet route is closed at the door, for an outsider and for a registered site
python - "$door" "$work/keys/ca.crt" "$work/site-1/keys/supernode" "$work/nodes.json" <<'PY' || fail "front door route check"
import json
import sys
from base64 import b64encode

import httpx
from cryptography.hazmat.primitives import serialization
from flwr.common.constant import TIMESTAMP_HEADER
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest
from flwr.proto.node_pb2 import Node
from flwr.proto.run_pb2 import GetRunRequest
from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
from flwr.supercore.date import now
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, sign_message

door, ca, key_path, nodes = sys.argv[1:5]
key = serialization.load_ssh_private_key(open(key_path, "rb").read(), password=None)
PB = {"content-type": "application/protobuf"}

def site_headers() -> dict:  # what a registered SuperNode signs on every Fleet request
    ts = now().isoformat()
    return {**PB, FLEET_HTTP_PUBLIC_KEY_HEADER: b64encode(public_key_to_bytes(key.public_key())).decode(),
            TIMESTAMP_HEADER: ts, FLEET_HTTP_SIGNATURE_HEADER: b64encode(sign_message(key, ts.encode())).decode()}

def at_door(r: httpx.Response) -> bool:  # answered by nginx itself, not forwarded to the SuperLink
    return r.headers.get("server") == "nginx"

closed = ["/v1/control/start-run", "/v1/control/list-runs", "/v1/control/register-node", "/v1/control/list-nodes",
          "/v1/control/stop-run", "/v1/control/stream-logs", "/v1/control/add-app",
          "/v1/runtime/acquire-task", "/v1/runtime/pull-task-input", "/v1/runtime/push-messages",
          "/v1/runtime/get-nodes", "/v1/fleet/register-node", "/v1/fleet/unregister-node",
          "/v1/fleet/../control/list-runs", "/v1/fleet/pull-messages/../../control/list-runs",
          "/v1/fleet/%2e%2e/control/list-runs", "/V1/CONTROL/list-runs", "/v1//control/list-runs",
          "/health", "/docs", "/openapi.json", "/"]
bad = []
with httpx.Client(base_url=f"https://127.0.0.1:{door}", verify=ca) as c:
    for who in ("outsider", "registered site"):
        for path in closed:
            r = c.post(path, headers=PB if who == "outsider" else site_headers(), content=b"")
            if not (r.status_code == 404 and at_door(r)):
                bad.append(f"{who} POST {path}: {r.status_code} from {r.headers.get('server')}")
    r = c.get("/v1/fleet/get-run")
    if not (r.status_code == 403 and at_door(r)):
        bad.append(f"GET on a Fleet route: {r.status_code}")
    anon = c.post("/v1/fleet/get-run", headers=PB, content=GetRunRequest(run_id=1).SerializeToString())
    if anon.status_code != 401 or at_door(anon):
        bad.append(f"anonymous Fleet call: {anon.status_code} from {anon.headers.get('server')} (expected the SuperLink's 401)")
    ok = 0
    for n in json.load(open(nodes))["nodes"]:
        req = SendNodeHeartbeatRequest(node=Node(node_id=int(n["node-id"])), heartbeat_interval=30)
        r = c.post("/v1/fleet/send-node-heartbeat", headers=site_headers(), content=req.SerializeToString())
        ok += r.status_code == 200 and not at_door(r)
    if ok != 1:
        bad.append(f"site-1's signed heartbeat accepted for {ok} node ids (expected exactly its own)")
print(f"front door: {2 * len(closed)} non-Fleet requests answered 404 by nginx; an anonymous Fleet call reached "
      f"the SuperLink and got {anon.status_code}; site-1's signed heartbeat accepted for its own node only")
sys.exit("\n".join(bad) if bad else 0)
PY
# 5d: runs whose app package no site trusts are refused by every SuperNode: unsigned (flwr run .) and
#     signed by a key no site lists (another version put into the registry)
cd "$repo"
set +e
timeout 300 flwr run . admin --stream --run-config "coordinator=\"$work/coordinator-refused.toml\"" \
  >"$work/unsigned-run.log" 2>&1
rogue=$(mktemp -d); tar -C "$repo" --exclude=.venv --exclude=.git -cf - . | tar -C "$rogue" -xf -
sed -i 's/^version = "\(.*\)"/version = "9.9.9"/' "$rogue/pyproject.toml"
fedsynth -q app-key --out "$work/rogue-key" >/dev/null
fedsynth -q app-sign --key "$work/rogue-key/app-signing.key" --registry "$work/keys/apps" --app "$rogue" >/dev/null
rm -rf "$rogue"
timeout 300 flwr run @fedsynth/fedsynth==9.9.9 admin --stream \
  --run-config "coordinator=\"$work/coordinator-refused.toml\"" >"$work/rogue-run.log" 2>&1
set -e
n_refused=$(cat "$work"/supernode-*.log | grep -c "FAB verification failed\|App verification is not supported" || true)
[ "$n_refused" -ge 4 ] || fail "expected 2 sites x 2 runs refused by FAB verification, saw $n_refused"
[ -e "$work/refused/report.json" ] && fail "a refused run produced a report"
if [ -f "$work/refused/pool/manifest.sqlite" ]; then
  python - "$work/refused" <<'PY' || fail "a refused run pooled images"
import sqlite3, sys
n = sqlite3.connect(f"{sys.argv[1]}/pool/manifest.sqlite").execute("SELECT COUNT(*) FROM bundles").fetchone()[0]
sys.exit(1 if n else 0)
PY
fi
echo "unsigned and foreign-signed runs refused by both sites ($n_refused refusals); nothing pooled"
# 6. the study, from the signed package
flwr run "$spec" admin --stream --run-config "coordinator=\"$work/coordinator-study.toml\""
# 7. checks: every site's bundle verified in the pool, a report with the methods
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
