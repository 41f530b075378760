"""The front door forwards exactly the Fleet routes a SuperNode calls; everything else ends at nginx.

A stand-in upstream (HTTPS with the study's server certificate, answering every
path) plays the SuperLink, so this checks the door's routing itself; the slow
deployment test (``server/smoke-deploy.sh``) repeats the attacks against a real
SuperLink. Needs the Debian ``nginx`` package (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from fedsynth.federation.certs import provision

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (apt-get install nginx)")

FLEET = ["activate-node", "deactivate-node", "send-node-heartbeat", "pull-messages", "push-messages", "get-run",
         "get-fab", "push-object", "pull-object", "confirm-message-received"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Upstream(BaseHTTPRequestHandler):
    server_version = "fake-superlink"
    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        body = f"upstream {self.path} {n}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    keys = provision(tmp_path_factory.mktemp("keys")).ca_cert.parent
    up_port, door_port = _free_port(), _free_port()
    upstream = ThreadingHTTPServer(("127.0.0.1", up_port), _Upstream)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(keys / "server.pem", keys / "server.key")
    upstream.socket = ctx.wrap_socket(upstream.socket, server_side=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    run = tmp_path_factory.mktemp("door")
    proc = subprocess.Popen([str(REPO / "server" / "start-frontdoor.sh"), str(keys), f"127.0.0.1:{door_port}",
                             str(up_port), str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"https://127.0.0.1:{door_port}", verify=str(keys / "ca.crt"), timeout=20)
    for _ in range(100):
        try:
            client.get("/")
            break
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(proc.stdout.read().decode()[-2000:])
            time.sleep(0.1)
    yield client, run, door_port
    client.close()
    proc.terminate()
    proc.wait(timeout=20)
    upstream.shutdown()


def test_every_fleet_route_is_forwarded_to_the_superlink(door):
    client, _, _ = door
    for route in FLEET:
        r = client.post(f"/v1/fleet/{route}", content=b"x" * 10)
        assert r.status_code == 200 and r.text == f"upstream /v1/fleet/{route} 10", route
        assert r.headers["server"].startswith("fake-superlink")


@pytest.mark.parametrize("path", [
    "/v1/control/start-run", "/v1/control/list-runs", "/v1/control/register-node", "/v1/control/add-app",
    "/v1/runtime/acquire-task", "/v1/runtime/push-messages", "/v1/fleet/register-node",
    "/v1/fleet/unregister-node", "/v1/fleet/pull-messages/x", "/v1/fleet/../control/list-runs",
    "/v1/fleet/%2e%2e/control/list-runs", "/v1//control/list-runs", "/V1/FLEET/pull-messages",
    "/v1/fleet/pull-messages%00", "/health", "/docs", "/openapi.json", "/",
])
def test_everything_else_ends_at_the_door(door, path):
    client, _, _ = door
    r = client.post(path, content=b"")
    assert r.status_code in (400, 404), (path, r.status_code)
    assert r.headers.get("server") == "nginx" and "upstream" not in r.text


def test_only_post_and_bounded_bodies(door):
    client, _, _ = door
    assert client.get("/v1/fleet/pull-messages").status_code == 403
    assert client.request("PUT", "/v1/fleet/push-object", content=b"x").status_code == 403
    assert client.post("/v1/fleet/push-object", content=b"x" * (17 << 20)).status_code == 413


def test_the_door_listens_only_where_it_was_told(door):
    _, run, port = door
    assert f"listen 127.0.0.1:{port} ssl;" in (run / "nginx.conf").read_text()
    with pytest.raises(OSError):  # not on any other local address
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


def test_a_listen_address_without_a_port_is_refused(tmp_path):
    res = subprocess.run([str(REPO / "server" / "start-frontdoor.sh"), str(tmp_path), "0.0.0.0"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "ADDRESS:PORT" in res.stderr
