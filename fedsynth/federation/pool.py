"""The coordinator's pool of certified synthetic images.

Content-addressed on disk: every image is stored once as
``objects/<sha256>.npy`` where the digest is :func:`fedsynth.digests.array_digest`
(SHA-256 of its shape and float32 bytes), the same binding the site's signed
certificate uses. A SQLite
manifest (``manifest.sqlite``, stdlib ``sqlite3``, nothing to run) records per
image the site and bundle it came from, and per bundle the signed certificate,
its signature, whether it verified, and when it arrived.

A bundle enters the pool only after :func:`fedsynth.privacy.verify_certificate`
accepted it against the site's *registered* public key and the exact images;
otherwise it is rejected, logged, and recorded as rejected with the reason,
and nothing of it is stored. Re-publishing the same images is a no-op (same
digests), so a coordinator that crashed mid-study can ask again safely.

Usage::

    pool = SyntheticPool(out / "pool")
    rec = pool.add_bundle("site-1", images, signed_cert, public_key)
    stack = pool.images()            # (n, H, W) float32, every accepted image
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.digests import array_digest
from fedsynth.errors import GateError
from fedsynth.io_utils import write_bytes_atomic

__all__ = ["BundleRecord", "SyntheticPool"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    certificate TEXT NOT NULL,
    signature TEXT,
    verified INTEGER NOT NULL,
    reason TEXT,
    n_images INTEGER NOT NULL,
    received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    digest TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    bundle_id TEXT NOT NULL REFERENCES bundles(id),
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_site ON images(site);
"""


@dataclass(frozen=True)
class BundleRecord:
    """What happened to one published bundle."""

    bundle_id: str
    site: str
    verified: bool
    n_images: int
    n_new: int
    reason: str | None = None


def _bundle_id(site: str, signed: Any, stack: np.ndarray) -> str:
    # The id covers the images too, so a tampered copy of an accepted bundle
    # (same certificate, altered pixels) is a different, rejected bundle.
    h = hashlib.sha256(f"{site}\n".encode())
    h.update(json.dumps(signed, sort_keys=True, separators=(",", ":"), default=str).encode())
    h.update(np.ascontiguousarray(stack, dtype=np.float32).tobytes())
    return h.hexdigest()


def _signature_of(signed: Any) -> str | None:
    if isinstance(signed, dict):
        for key in ("signature", "sig"):
            if isinstance(signed.get(key), str):
                return signed[key]
    return None


def _default_verifier() -> Callable[..., Any]:
    from fedsynth.privacy import verify_certificate

    return verify_certificate


class SyntheticPool:
    """Content-addressed image store plus SQLite manifest; see the module docstring."""

    def __init__(self, root: str | Path, verifier: Callable[..., Any] | None = None) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "manifest.sqlite"
        self._verify = verifier
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30.0)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    # ------------------------------------------------------------------ writes
    def add_bundle(
        self,
        site: str,
        images: np.ndarray,
        signed_certificate: Any,
        public_key: Any,
        expected: Any = None,
        conforms: Callable[[Any], None] | None = None,
    ) -> BundleRecord:
        """Verify a site's bundle and add its images; raise :class:`GateError` if it fails.

        ``expected`` (:class:`fedsynth.privacy.Expected`): the certificate must
        be bound to this site, study and request nonce (a replay from another
        study or request is rejected). ``conforms(certificate)``: a further
        check of the verified certificate against the request (raises GateError).
        The rejection is recorded in the manifest (``verified = 0`` and the
        reason) before the error is raised, so an operator can audit it.
        """
        if hasattr(signed_certificate, "model_dump"):  # a SignedCertificate: judge the dict it travels as
            signed_certificate = signed_certificate.model_dump(mode="json")
        stack = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        bundle_id = _bundle_id(site, signed_certificate, stack)
        cert_json = json.dumps(signed_certificate, sort_keys=True, default=str)
        try:
            if stack.ndim != 3 or len(stack) == 0:
                raise GateError(f"bundle from {site}: expected a non-empty (n, H, W) stack")
            if not np.isfinite(stack).all():
                raise GateError(f"bundle from {site}: images contain NaN or infinity")
            if not isinstance(signed_certificate, dict) or _signature_of(signed_certificate) is None:
                raise GateError(f"bundle from {site}: certificate is not signed")
            verify = self._verify or _default_verifier()
            cert = verify(signed_certificate, public_key=public_key, images=stack, expected=expected)
            if conforms is not None:
                conforms(cert)
        except GateError as err:
            self._record_bundle(bundle_id, site, cert_json, signed_certificate, False, str(err), len(stack))
            log.warning("pool: REJECTED bundle %s from %s: %s", bundle_id[:12], site, err)
            raise
        digests = [array_digest(img) for img in stack]
        now = time.time()
        new = 0
        with self._connect() as db:
            known = {
                row[0]
                for chunk in _chunks(digests, 500)
                for row in db.execute(
                    f"SELECT digest FROM images WHERE digest IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            }
        # Objects first (atomic files), manifest rows second in one transaction:
        # a crash in between leaves only unreferenced files, never dangling rows.
        for digest, img in zip(digests, stack, strict=True):
            if digest in known:
                continue
            path = self.objects / f"{digest}.npy"
            if not path.exists():
                buf = io.BytesIO()
                np.save(buf, img, allow_pickle=False)
                write_bytes_atomic(path, buf.getvalue())
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO bundles VALUES (?,?,?,?,?,?,?,?)",
                (bundle_id, site, cert_json, _signature_of(signed_certificate), 1, None, len(stack), now),
            )
            db.execute(
                "UPDATE bundles SET verified = 1, reason = NULL WHERE id = ?", (bundle_id,)
            )
            for digest in digests:
                cur = db.execute(
                    "INSERT OR IGNORE INTO images VALUES (?,?,?,?)", (digest, site, bundle_id, now)
                )
                new += cur.rowcount
        log.info(
            "pool: accepted bundle %s from %s: %d images (%d new)", bundle_id[:12], site, len(stack), new
        )
        return BundleRecord(bundle_id, site, True, len(stack), new)

    def _record_bundle(
        self, bundle_id: str, site: str, cert_json: str, signed: Any, ok: bool, reason: str, n: int
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO bundles VALUES (?,?,?,?,?,?,?,?)",
                (bundle_id, site, cert_json, _signature_of(signed), int(ok), reason, n, time.time()),
            )

    # ------------------------------------------------------------------- reads
    def digests(self, site: str | None = None) -> list[str]:
        """Digests of pooled images (optionally of one site), by site id, then in arrival order within a site.

        Why by site first: sites answer in whatever order the network makes,
        and a network trained on the pool sees its images in this order; the
        pooled model must not depend on which site happened to answer first.
        """
        q = "SELECT digest FROM images"
        args: tuple = ()
        if site is not None:
            q += " WHERE site = ?"
            args = (site,)
        with self._connect() as db:
            return [r[0] for r in db.execute(q + " ORDER BY site, added, rowid", args)]

    def images(self, site: str | None = None) -> np.ndarray:
        """The pooled images, ``(n, H, W)`` float32, in :meth:`digests` order."""
        digests = self.digests(site)
        if not digests:
            return np.zeros((0, 0, 0), dtype=np.float32)
        return np.stack([np.load(self.objects / f"{d}.npy", allow_pickle=False) for d in digests])

    def count(self, site: str | None = None) -> int:
        """Number of distinct pooled images (optionally of one site)."""
        with self._connect() as db:
            if site is None:
                return int(db.execute("SELECT COUNT(*) FROM images").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM images WHERE site = ?", (site,)).fetchone()[0])

    def sites(self) -> list[str]:
        """Sites with at least one pooled image."""
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT site FROM images ORDER BY site")]

    def bundles(self, site: str | None = None, verified: bool | None = None) -> list[dict[str, Any]]:
        """Manifest rows of bundles (accepted and rejected), oldest first."""
        q = "SELECT id, site, certificate, signature, verified, reason, n_images, received FROM bundles"
        cond, args = [], []
        if site is not None:
            cond.append("site = ?")
            args.append(site)
        if verified is not None:
            cond.append("verified = ?")
            args.append(int(verified))
        if cond:
            q += " WHERE " + " AND ".join(cond)
        with self._connect() as db:
            rows = db.execute(q + " ORDER BY received", args).fetchall()
        keys = ("id", "site", "certificate", "signature", "verified", "reason", "n_images", "received")
        out = []
        for row in rows:
            rec = dict(zip(keys, row, strict=True))
            rec["certificate"] = json.loads(rec["certificate"])
            rec["verified"] = bool(rec["verified"])
            out.append(rec)
        return out


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
