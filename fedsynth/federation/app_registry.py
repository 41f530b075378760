"""Signed app packages: the coordinator signs the study's FAB, every SuperNode checks it.

Why this exists: every hospital's SuperNode executes the code inside the app
package (FAB) a run ships. Flower 1.42 lets a SuperNode refuse any FAB not
signed by a key in its ``--trusted-entities`` file, but its SuperLink attaches
signatures only to FABs it fetches from an app hub (``flwr run
@publisher/app==x.y.z``; ``flwr run .`` ships none, so such runs are refused).
The hub's address is ``FLWR_SUPERGRID_API_URL``. This module is that hub for
one study, kept on the coordinator's loopback (docs/deployment.md, "Signed
app packages"):

- :func:`make_app_key` — the coordinator's Ed25519 app-signing key (OpenSSH)
  and the ``trusted-entities.yaml`` each site operator installs;
- :func:`sign_app` — build the FAB with Flower's own builder, sign
  ``timestamp ‖ sha256(FAB)`` with Flower's own signing primitives, store FAB
  and signature under ``registry/<publisher>/<app>/<version>.fab|.sig.json``;
- :class:`AppRegistry` — serves ``POST /v1/hub/fetch-fab`` and
  ``GET /v1/fabs/<sha256>.fab`` from that directory (no private key there).

A run the sites accept therefore needs the registry *and* a signature by a
key each site trusts; the private key can stay off the coordinator machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fedsynth.errors import ConfigError
from fedsynth.io_utils import write_bytes_atomic

__all__ = ["AppRegistry", "SignedApp", "app_key_id", "make_app_key", "sign_app", "signed_apps"]

log = logging.getLogger(__name__)

_APP_ID = re.compile(r"^@([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)$")  # Flower's APP_ID_PATTERN
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")  # Flower's APP_VERSION_PATTERN
_FAB_URL = re.compile(r"^/v1/fabs/([0-9a-f]{64})\.fab$")
_MAX_REQUEST = 4096


@dataclass(frozen=True)
class SignedApp:
    """One signed FAB in the registry."""

    app_id: str  # "@publisher/name"
    version: str
    fab: Path
    sha256: str
    verifications: tuple[dict, ...]

    @property
    def spec(self) -> str:
        """What ``flwr run`` takes: ``@publisher/name==x.y.z``."""
        return f"{self.app_id}=={self.version}"


def _ed25519():
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def app_key_id(public_openssh: bytes) -> str:
    """Stable id of an app-signing public key: ``fpk_`` + 32 hex of SHA-256 of its OpenSSH line."""
    body = public_openssh.split()[1] if len(public_openssh.split()) > 1 else public_openssh
    return "fpk_" + hashlib.sha256(body).hexdigest()[:32]


def make_app_key(out: str | Path, force: bool = False) -> tuple[Path, Path, Path]:
    """Ed25519 app-signing key under ``out``; returns ``(private, public, trusted-entities.yaml)``.

    Run where packages are signed (the coordinator's release step). The YAML
    is what a site operator passes to ``flower-supernode --trusted-entities``
    after receiving it out of band, like ``ca.crt``.
    """
    from cryptography.hazmat.primitives import serialization

    out = Path(out)
    priv = out / "app-signing.key"
    if priv.exists() and not force:
        raise ConfigError(f"{priv}: already exists; use --force to replace it (sites must trust the new key)")
    out.mkdir(parents=True, exist_ok=True)
    key = _ed25519().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_bytes_atomic(priv, pem)
    os.chmod(priv, 0o600)
    pub_path = out / "app-signing.pub"
    write_bytes_atomic(pub_path, pub + b"\n")
    yaml_path = out / "trusted-entities.yaml"
    write_bytes_atomic(yaml_path, f"{app_key_id(pub)}: '{pub.decode()}'\n".encode())
    return priv, pub_path, yaml_path


def _load_private(path: Path):
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable OpenSSH private key ({type(exc).__name__})") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise ConfigError(f"{path}: the app-signing key must be Ed25519 (Flower's trusted entities are)")
    return key


def _metadata(fab: bytes) -> tuple[str, str, str]:
    """``(publisher, name, version)`` read from the FAB's pyproject.toml."""
    import io
    import tomllib
    import zipfile

    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        cfg = tomllib.loads(z.read("pyproject.toml").decode())
    return cfg["tool"]["flwr"]["app"]["publisher"], cfg["project"]["name"], cfg["project"]["version"]


def _dir_of(registry: Path, publisher: str, name: str) -> Path:
    return registry / publisher / name


def sign_app(key: str | Path, registry: str | Path, app: str | Path = ".", fab: str | Path | None = None) -> SignedApp:
    """Build the app at ``app`` (or take the built ``fab``), sign it, store it in ``registry``.

    Signing an already stored FAB again with another key adds a verification
    (several parties may sign the same bytes); a different FAB under the same
    version is refused — a version names one package.
    """
    from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign, sign_message

    private = _load_private(Path(key))
    if fab is not None:
        data = Path(fab).read_bytes()
    else:
        from flwr.cli.build import build_fab_from_disk

        data = build_fab_from_disk(Path(app))
    publisher, name, version = _metadata(data)
    digest = hashlib.sha256(data).hexdigest()
    where = _dir_of(Path(registry), publisher, name)
    fab_path, sig_path = where / f"{version}.fab", where / f"{version}.sig.json"
    verifications: list[dict] = []
    if fab_path.exists():
        if hashlib.sha256(fab_path.read_bytes()).hexdigest() != digest:
            raise ConfigError(f"{fab_path}: version {version} is already a different package; bump the version")
        verifications = json.loads(sig_path.read_text()) if sig_path.exists() else []
    from cryptography.hazmat.primitives import serialization

    pub = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kid = app_key_id(pub)
    signed_at = int(time.time())
    signature = sign_message(private, create_message_to_sign(bytes.fromhex(digest), signed_at))
    import base64

    entry = {"public_key_id": kid, "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
             "signed_at": signed_at}
    verifications = [v for v in verifications if v.get("public_key_id") != kid] + [entry]
    where.mkdir(parents=True, exist_ok=True)
    if not fab_path.exists():
        write_bytes_atomic(fab_path, data)
    write_bytes_atomic(sig_path, json.dumps(verifications, indent=1).encode())
    log.info("signed @%s/%s==%s (sha256 %s) with %s", publisher, name, version, digest[:12], kid)
    return SignedApp(f"@{publisher}/{name}", version, fab_path, digest, tuple(verifications))


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def signed_apps(registry: str | Path) -> list[SignedApp]:
    """Every signed FAB stored under ``registry`` (unsigned ones are not served)."""
    out = []
    for sig in sorted(Path(registry).glob("*/*/*.sig.json")):
        version = sig.name.removesuffix(".sig.json")
        fab = sig.with_name(f"{version}.fab")
        if not (_VERSION.match(version) and fab.is_file()):
            continue
        data = fab.read_bytes()
        out.append(SignedApp(f"@{sig.parent.parent.name}/{sig.parent.name}", version, fab,
                             hashlib.sha256(data).hexdigest(), tuple(json.loads(sig.read_text()))))
    return out


class AppRegistry:
    """A loopback app hub serving the signed FABs of ``registry`` to the SuperLink.

    Start the SuperLink with ``FLWR_SUPERGRID_API_URL=<url>`` (``url`` below);
    ``flwr run @publisher/name==x.y.z`` then makes the SuperLink fetch the FAB
    and its signatures here, and each SuperNode checks them against its own
    trusted entities. Binds 127.0.0.1 unless told otherwise; read-only.
    """

    def __init__(self, registry: str | Path, host: str = "127.0.0.1", port: int = 8300) -> None:
        self.registry = Path(registry)
        if not self.registry.is_dir():
            raise ConfigError(f"{registry}: no such app registry directory (fedsynth app-sign creates it)")
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL for ``FLWR_SUPERGRID_API_URL``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def lookup(self, app_id: str, version: str | None) -> SignedApp | None:
        """The signed app for ``app_id`` at ``version`` (the newest when ``None``)."""
        apps = [a for a in signed_apps(self.registry) if a.app_id == app_id and (version is None or a.version == version)]
        return max(apps, key=lambda a: _version_key(a.version)) if apps else None

    def by_digest(self, digest: str) -> SignedApp | None:
        """The signed app whose FAB has this SHA-256."""
        return next((a for a in signed_apps(self.registry) if a.sha256 == digest), None)

    def start(self) -> AppRegistry:
        """Serve in a background thread (tests, embedding); see :meth:`serve_forever`."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until interrupted (``fedsynth app-registry``)."""
        self._server.serve_forever()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def _make_handler(reg: AppRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fedsynth-app-registry"

        def log_message(self, fmt: str, *args) -> None:  # noqa: ANN002 - BaseHTTPRequestHandler API
            log.info("%s %s", self.address_string(), fmt % args)

        def _json(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler API
            if self.path != "/v1/hub/fetch-fab":
                return self._json(HTTPStatus.NOT_FOUND, {"detail": "not found"})
            n = int(self.headers.get("Content-Length") or 0)
            if not 0 < n <= _MAX_REQUEST:
                return self._json(HTTPStatus.BAD_REQUEST, {"detail": "bad request size"})
            try:
                body = json.loads(self.rfile.read(n))
                app_id, version = str(body["app_id"]), body.get("app_version")
            except (ValueError, KeyError, TypeError):
                return self._json(HTTPStatus.BAD_REQUEST, {"detail": "malformed request"})
            if not _APP_ID.match(app_id) or (version is not None and not _VERSION.match(str(version))):
                return self._json(HTTPStatus.BAD_REQUEST, {"detail": "malformed app id or version"})
            app = reg.lookup(app_id, None if version is None else str(version))
            if app is None:
                return self._json(HTTPStatus.NOT_FOUND, {"detail": f"{app_id} {version or ''} is not signed here"})
            host, port = self.server.server_address[:2]
            self._json(HTTPStatus.OK, {"fab_url": f"http://{host}:{port}/v1/fabs/{app.sha256}.fab",
                                       "verifications": list(app.verifications)})

        def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler API
            m = _FAB_URL.match(self.path)
            app = reg.by_digest(m.group(1)) if m else None
            if app is None:
                return self._json(HTTPStatus.NOT_FOUND, {"detail": "not found"})
            data = app.fab.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
