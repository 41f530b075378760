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
import os
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

__all__ = ["BundleRecord", "Quarantined", "SyntheticPool"]

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
    added REAL NOT NULL,
    companion TEXT
);
CREATE INDEX IF NOT EXISTS images_site ON images(site);
CREATE TABLE IF NOT EXISTS quarantine (
    digest TEXT NOT NULL,
    site TEXT NOT NULL,
    bundle_id TEXT,
    reason TEXT NOT NULL,
    moved REAL NOT NULL
);
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


@dataclass(frozen=True)
class Quarantined:
    """A pooled image taken out of use by :meth:`SyntheticPool.check`, and why."""

    digest: str
    site: str
    reason: str


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
            if "companion" not in {r[1] for r in db.execute("PRAGMA table_info(images)")}:
                db.execute("ALTER TABLE images ADD COLUMN companion TEXT")  # a pool made before companions

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
        companions: np.ndarray | None = None,
    ) -> BundleRecord:
        """Verify a site's bundle and add its images; raise :class:`GateError` if it fails.

        ``companions``: per image, its companion (the same sample untextured),
        each of which must be the one the certificate names for that image
        (certified by the same gate); stored beside the image for
        :meth:`companions`.

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
            comp_digests = _check_companions(site, cert, stack, companions)
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
            if digest not in known:
                self._store(digest, img)
        for digest, img in zip(comp_digests or [], companions if comp_digests else [], strict=True):
            self._store(digest, img)
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO bundles VALUES (?,?,?,?,?,?,?,?)",
                (bundle_id, site, cert_json, _signature_of(signed_certificate), 1, None, len(stack), now),
            )
            db.execute(
                "UPDATE bundles SET verified = 1, reason = NULL WHERE id = ?", (bundle_id,)
            )
            for i, digest in enumerate(digests):
                comp = comp_digests[i] if comp_digests else None
                cur = db.execute(
                    "INSERT OR IGNORE INTO images VALUES (?,?,?,?,?)", (digest, site, bundle_id, now, comp)
                )
                new += cur.rowcount
                if comp is not None and not cur.rowcount:
                    db.execute("UPDATE images SET companion = ? WHERE digest = ? AND companion IS NULL", (comp, digest))
        log.info(
            "pool: accepted bundle %s from %s: %d images (%d new)", bundle_id[:12], site, len(stack), new
        )
        return BundleRecord(bundle_id, site, True, len(stack), new)

    def _store(self, digest: str, img: np.ndarray) -> None:
        path = self.objects / f"{digest}.npy"
        if not path.exists():
            buf = io.BytesIO()
            np.save(buf, img, allow_pickle=False)
            write_bytes_atomic(path, buf.getvalue())

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
        return [str(d) for d in self._pooled("i.digest", site)]

    def _pooled(self, column: str, site: str | None) -> list[Any]:
        """One column (``i.*`` image or ``b.*`` bundle) per pooled image of verified bundles, in digests order."""
        q = (f"SELECT {column} FROM images i JOIN bundles b ON b.id = i.bundle_id "  # noqa: S608 - internal names
             "WHERE b.verified = 1 AND b.site = i.site")
        args: tuple = ()
        if site is not None:
            q += " AND i.site = ?"
            args = (site,)
        with self._connect() as db:
            return [r[0] for r in db.execute(q + " ORDER BY i.site, i.added, i.rowid", args)]

    def images(self, site: str | None = None) -> np.ndarray:
        """The pooled images, ``(n, H, W)`` float32, in :meth:`digests` order (one-line GateError if unreadable)."""
        digests = self.digests(site)
        if not digests:
            return np.zeros((0, 0, 0), dtype=np.float32)
        try:
            return np.stack([self._load(d) for d in digests])
        except ValueError as err:  # shapes differ: check() quarantines the odd ones out
            raise GateError(f"pool: {err}; run SyntheticPool.check() (the study does on every run)") from None

    def companions(self, site: str | None = None) -> np.ndarray:
        """Each pooled image's certified companion (its untextured sample), in :meth:`digests` order.

        GateError in one line if an image came without one (its site was not
        asked for companions): the untextured arm needs every image's.
        """
        comps = self._pooled("i.companion", site)
        if not comps:
            return np.zeros((0, 0, 0), dtype=np.float32)
        if any(c is None for c in comps):
            raise GateError(f"pool: {sum(c is None for c in comps)} of {len(comps)} images have no certified "
                            "companion (published without companions); re-run the publish phase")
        return np.stack([self._load(c) for c in comps])

    def pixel_mm(self, site: str | None = None) -> np.ndarray:
        """Pixel edge (mm) of each pooled image, in :meth:`digests` order, from its bundle's signed certificate.

        NaN where the certificate states none (written before sites sent it):
        the low-dose CT task then refuses the images with a one-line error.
        """
        out: list[float] = []
        seen: dict[str, float] = {}
        for cert in self._pooled("b.certificate", site):
            if cert not in seen:
                value = (json.loads(cert).get("certificate") or {}).get("pixel_mm")
                seen[cert] = float(value) if isinstance(value, int | float) and value > 0 else float("nan")
            out.append(seen[cert])
        return np.asarray(out, dtype=np.float64)

    def _load(self, digest: str) -> np.ndarray:
        path = self.objects / f"{digest}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise GateError(f"pool object {digest[:12]} is missing or unreadable ({type(err).__name__})") from None

    # ------------------------------------------------------------------- check
    def check(self, public_key_for: Callable[[str], Any], study_id: str | None = None) -> list[Quarantined]:
        """Re-verify everything in the pool; quarantine what fails; return what was quarantined now.

        Why: the pool is what the central network is trained on, and a file
        on disk can be altered, truncated or deleted after it was verified,
        and a manifest row can be edited or inserted. This checks the SQLite
        file itself (``PRAGMA integrity_check``: a corrupt manifest is a
        GateError, the study stops), re-verifies every verified bundle's
        certificate against the site's registered key (``public_key_for(site)``,
        None when the site has none) and, with ``study_id``, that it is bound
        to this study and site; then every image row must belong to its
        site's verified bundle, be listed in that certificate, and its object
        must load as float32 of the certified shape and re-hash to its digest.
        Whatever fails is moved to ``quarantine/`` and recorded with the
        reason, never trained on.
        """
        from fedsynth.privacy import verify_signature

        try:
            with self._connect() as db:
                status = db.execute("PRAGMA integrity_check").fetchone()[0]
                if status != "ok":
                    raise sqlite3.DatabaseError(str(status).splitlines()[0])
                bundles = {r[0]: (r[1], r[2]) for r in db.execute(
                    "SELECT id, site, certificate FROM bundles WHERE verified = 1")}
                rows = db.execute("SELECT digest, site, bundle_id, companion FROM images ORDER BY rowid").fetchall()
        except sqlite3.DatabaseError as err:
            raise GateError(f"pool manifest {self.db_path.name} is corrupt ({err}); nothing is trained on it") from None
        certified: dict[str, Any] = {}
        bad_bundles: dict[str, str] = {}
        for bid, (site, cert_json) in bundles.items():
            try:
                signed = json.loads(cert_json)
                key = public_key_for(site)
                if key is None:
                    raise GateError(f"no registered public key for {site}")
                cert = verify_signature(signed, key)  # its images are re-checked one by one below
                if cert.binding is not None and cert.binding.site_id != site:
                    raise GateError(f"certificate is bound to {cert.binding.site_id}, pooled as {site}")
                if study_id is not None and (cert.binding is None or cert.binding.study_id != study_id):
                    raise GateError("certificate is not bound to this study")
                certified[bid] = cert
            except (GateError, ValueError) as err:
                bad_bundles[bid] = str(err)
        out: list[Quarantined] = []
        for digest, site, bid, comp in rows:
            reason = bad_bundles.get(bid)
            cert = certified.get(bid)
            if reason is None and cert is None:
                reason = "not part of a verified bundle"
            elif reason is None and bundles[bid][0] != site:
                reason = f"row says {site}, its bundle is {bundles[bid][0]}'s"
            elif reason is None and digest not in set(cert.published):
                reason = "not among the bundle's certified images"
            if reason is None:
                reason = self._object_problem(digest, cert)
            if reason is None and comp is not None:
                certified_comp = dict(zip(cert.published, cert.published_companions(), strict=True)).get(digest)
                reason = ("companion is not the one certified for this image" if comp != certified_comp
                          else self._object_problem(comp, cert))
                reason = None if reason is None else f"companion: {reason}"
            if reason is not None:
                out.append(self._quarantine(digest, site, bid, reason, comp))
        for bid, why in bad_bundles.items():
            with self._connect() as db:
                db.execute("UPDATE bundles SET verified = 0, reason = ? WHERE id = ?", (f"quarantined: {why}", bid))
        if out:
            log.error("pool: quarantined %d image(s): %s", len(out),
                      "; ".join(sorted({f"{q.site}: {q.reason}" for q in out})))
        return out

    def _object_problem(self, digest: str, cert: Any) -> str | None:
        try:
            img = self._load(digest)
        except GateError as err:
            return str(err)
        if img.dtype != np.float32 or list(img.shape) != list(cert.reference.image_shape):
            return f"object is {img.dtype} {list(img.shape)}, certified float32 {cert.reference.image_shape}"
        if array_digest(img) != digest:
            return "object does not hash to its certified digest (altered on disk)"
        return None

    def _quarantine(self, digest: str, site: str, bundle_id: str | None, reason: str,
                    companion: str | None = None) -> Quarantined:
        for d in (digest, companion):
            src = self.objects / f"{d}.npy"
            if d is not None and src.exists():
                dest = self.root / "quarantine" / f"{d}.npy"
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
        with self._connect() as db:
            db.execute("DELETE FROM images WHERE digest = ?", (digest,))
            db.execute("INSERT INTO quarantine VALUES (?,?,?,?,?)", (digest, site, bundle_id, reason, time.time()))
        return Quarantined(digest, site, reason)

    def quarantined(self) -> list[Quarantined]:
        """Everything ever quarantined in this pool, oldest first."""
        with self._connect() as db:
            return [Quarantined(*r) for r in db.execute(
                "SELECT digest, site, reason FROM quarantine ORDER BY moved, rowid")]

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


def _check_companions(site: str, cert: Any, stack: np.ndarray, companions: np.ndarray | None) -> list[str] | None:
    """The companions' digests if each is the one ``cert`` certifies for its image (in order); GateError otherwise."""
    if companions is None:
        return None
    comps = np.ascontiguousarray(np.asarray(companions, dtype=np.float32))
    if comps.shape != stack.shape or not np.isfinite(comps).all():
        raise GateError(f"bundle from {site}: companions of shape {comps.shape} for images {stack.shape}, or not finite")
    digests = [array_digest(c) for c in comps]
    if digests != cert.published_companions():
        raise GateError(f"bundle from {site}: the companions are not the ones its certificate certifies")
    return digests


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

