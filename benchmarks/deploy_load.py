"""Load benchmark: publish-sized image chunks through the Deployment Engine, with and without the front door.

Starts, on 127.0.0.1 only, what docs/deployment.md describes — a SuperLink with
TLS and node authentication (loopback), the nginx front door, the app registry
with a signed app package, two SuperNodes that run only signed packages — and
runs ``benchmarks/deploy_load`` (a Flower app moving fedsynth's own publish
messages: ``PublishRequest`` out, ``PublishChunk`` of ``chunk`` float32 images
back, reassembled per site and written as one object). The same run is repeated
with the SuperNodes connected straight to the SuperLink: the front door's cost
is the ratio. Prints a table (images/s, MB/s, peak memory of the ServerApp,
SuperLink, nginx and one SuperNode).

    python benchmarks/deploy_load.py                       # 2 sites x 10,000 images of 128x128, chunks of 256
    python benchmarks/deploy_load.py --images-per-site 1000 --paths door

Needs the flwr CLI (the project's venv on PATH) and nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedsynth.federation.app_registry import AppRegistry, make_app_key, sign_app  # noqa: E402
from fedsynth.federation.certs import make_supernode_key, provision  # noqa: E402
from fedsynth.runtime import apply_loopback_env  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not open 127.0.0.1:{port} within {timeout:.0f} s")


def _peak_rss(pid: int) -> int:
    """VmHWM of a live process and its children (bytes): the peak resident set each reached."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                  text=True).stdout.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return total


def _run_path(work: Path, keys: Path, node_keys: list[Path], trusted: Path, spec: str, registry_url: str,
              via_door: bool, args: argparse.Namespace, env: dict[str, str]) -> dict:
    name = "door" if via_door else "direct"
    d = work / name
    d.mkdir()
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], log: str, extra: dict[str, str] | None = None) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=open(d / log, "w"), stderr=subprocess.STDOUT, env={**env, **(extra or {})})
        procs.append(p)
        return p

    try:
        link_port = _free_port()
        link = start([str(REPO / "server/start-superlink.sh"), str(keys), str(link_port), str(d / "state.db")],
                     "superlink.log", {"FEDSYNTH_APP_REGISTRY": registry_url})
        _wait_port(link_port, link, "SuperLink")
        home = d / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "admin"\n[superlink.admin]\naddress = "127.0.0.1:{link_port}"\n'
            f'root-certificates = "{keys / "ca.crt"}"\n')
        env_run = {**env, "FLWR_HOME": str(home)}
        for k, key in enumerate(node_keys, 1):
            subprocess.run(["flwr", "supernode", "register", str(key) + ".pub", "admin", "--name", f"site-{k}"],
                           check=True, capture_output=True, env=env_run)
        target = link_port
        door = None
        if via_door:
            target = _free_port()
            door = start([str(REPO / "server/start-frontdoor.sh"), str(keys), f"127.0.0.1:{target}", str(link_port),
                          str(d / "frontdoor")], "frontdoor.log")
            _wait_port(target, door, "front door")
        site_toml = d / "site.toml"
        site_toml.write_text("# the load app reads no site config\n")
        nodes = [start([str(REPO / "sites/start-supernode.sh"), str(site_toml), f"127.0.0.1:{target}",
                        str(keys / "ca.crt"), str(key), str(trusted), str(_free_port())], f"supernode-{k}.log")
                 for k, key in enumerate(node_keys, 1)]
        out = d / "out"
        out.mkdir()
        t0 = time.perf_counter()
        res = subprocess.run(
            ["flwr", "run", spec, "admin", "--stream", "--run-config",
             f'out="{out}" images-per-site={args.images_per_site} size={args.size} '
             f'chunk-images={args.chunk} sites={len(node_keys)}'],
            capture_output=True, text=True, env=env_run, cwd=d, timeout=args.timeout)
        wall = time.perf_counter() - t0
        if not (out / "result.json").is_file():
            raise SystemExit(f"{name}: the load run failed (exit {res.returncode}):\n{res.stdout[-3000:]}")
        result = json.loads((out / "result.json").read_text())
        result.update(path=name, run_wall_s=wall, superlink_peak_rss_bytes=_peak_rss(link.pid),
                      supernode_peak_rss_bytes=_peak_rss(nodes[0].pid),
                      nginx_peak_rss_bytes=_peak_rss(door.pid) if door else 0)
        for f in out.glob("bundle-*.npy"):
            f.unlink()
        return result
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images-per-site", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=256, help="images per publish message (publish.chunk_images)")
    ap.add_argument("--paths", default="door,direct", help="door, direct or both (default)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    for tool in ("flwr", "flower-superlink", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (activate the project's venv; apt-get install nginx)")
    apply_loopback_env()
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedsynth-load-") as tmp:
        work = Path(tmp)
        keys = provision(work / "keys").ca_cert.parent
        _, _, trusted = make_app_key(work / "app-key")
        node_keys = [make_supernode_key(work / f"site-{k}" / "supernode")[0] for k in (1, 2)]
        signed = sign_app(work / "app-key" / "app-signing.key", work / "apps", app=REPO / "benchmarks" / "deploy_load")
        reg = AppRegistry(work / "apps", port=0).start()
        try:
            for path in args.paths.split(","):
                rows.append(_run_path(work, keys, node_keys, trusted, signed.spec, reg.url, path == "door", args, env))
        finally:
            reg.close()
    mb = 1 << 20
    print(f"\n{rows[0]['sites']} sites x {args.images_per_site} images of {args.size}x{args.size} float32, "
          f"chunks of {args.chunk} images ({args.chunk * args.size ** 2 * 4 / mb:.0f} MiB per message)\n")
    print("| path | images | payload MiB | wire MiB | fetch s | images/s | MB/s | ServerApp peak | SuperLink peak "
          "| SuperNode peak | nginx peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['path']} | {r['images']} | {r['payload_bytes'] / mb:.0f} | {r['wire_bytes'] / mb:.0f} "
              f"| {r['fetch_s']:.1f} | {r['images'] / r['fetch_s']:.0f} | {r['payload_bytes'] / 1e6 / r['fetch_s']:.1f} "
              f"| {r['serverapp_peak_rss_bytes'] / mb:.0f} MiB | {r['superlink_peak_rss_bytes'] / mb:.0f} MiB "
              f"| {r['supernode_peak_rss_bytes'] / mb:.0f} MiB | {r['nginx_peak_rss_bytes'] / mb:.0f} MiB |")
    by = {r["path"]: r for r in rows}
    if {"door", "direct"} <= set(by):
        print(f"\nfront door / direct throughput: {by['direct']['fetch_s'] / by['door']['fetch_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
