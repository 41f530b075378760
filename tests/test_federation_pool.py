"""The synthetic pool: content addressing, idempotent re-publish, rejected bundles."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.federation import signed_bundle

from fedsynth.digests import array_digest
from fedsynth.errors import GateError
from fedsynth.federation.pool import SyntheticPool


def test_bundle_is_verified_and_content_addressed(tmp_path):
    images, signed, pub, _ = signed_bundle(tmp_path / "k")
    pool = SyntheticPool(tmp_path / "pool")
    rec = pool.add_bundle("site-1", images, signed, pub)
    assert rec.verified and rec.n_images == len(images) == rec.n_new
    assert pool.count() == len(images) == pool.count("site-1")
    names = sorted(p.stem for p in (tmp_path / "pool" / "objects").glob("*.npy"))
    # the pool's address is the digest the site certified
    assert names == sorted(signed.parsed().published)
    assert sorted(array_digest(i) for i in images) == names
    np.testing.assert_array_equal(pool.images(), images)
    assert pool.bundles(verified=True)[0]["signature"] == signed.signature


def test_republishing_the_same_images_is_idempotent(tmp_path):
    images, signed, pub, _ = signed_bundle(tmp_path / "k")
    pool = SyntheticPool(tmp_path / "pool")
    pool.add_bundle("site-1", images, signed, pub)
    again = SyntheticPool(tmp_path / "pool").add_bundle("site-1", images, signed.model_dump(mode="json"), pub)
    assert again.n_new == 0
    assert pool.count() == len(images)
    assert len(pool.bundles()) == 1


def test_tampered_pixels_are_rejected_and_logged(tmp_path, caplog):
    images, signed, pub, _ = signed_bundle(tmp_path / "k")
    pool = SyntheticPool(tmp_path / "pool")
    bad = images.copy()
    bad[0, 3, 3] += 0.01
    with pytest.raises(GateError, match="digest"):
        pool.add_bundle("site-1", bad, signed, pub)
    assert pool.count() == 0
    assert not list((tmp_path / "pool" / "objects").glob("*.npy"))
    rows = pool.bundles()
    assert len(rows) == 1 and rows[0]["verified"] is False and "digest" in rows[0]["reason"]
    assert "REJECTED" in caplog.text


def test_tampered_certificate_unsigned_and_foreign_key_are_rejected(tmp_path):
    images, signed, pub, _ = signed_bundle(tmp_path / "k")
    _, _, other_pub, _ = signed_bundle(tmp_path / "other", seed=5)
    pool = SyntheticPool(tmp_path / "pool")
    edited = signed.model_dump(mode="json")
    edited["certificate"]["summary"]["quota"] = 999
    with pytest.raises(GateError, match="signature"):
        pool.add_bundle("site-1", images, edited, pub)
    unsigned = {k: v for k, v in signed.model_dump(mode="json").items() if k != "signature"}
    with pytest.raises(GateError, match="not signed"):
        pool.add_bundle("site-1", images, unsigned, pub)
    with pytest.raises(GateError, match="signature"):
        pool.add_bundle("site-1", images, signed, other_pub)
    assert pool.count() == 0
    assert len(pool.bundles(verified=False)) == 3
    # the genuine bundle still gets in afterwards
    assert pool.add_bundle("site-1", images, signed, pub).n_new == len(images)


def test_nan_images_never_enter(tmp_path):
    images, signed, pub, _ = signed_bundle(tmp_path / "k")
    bad = images.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(GateError, match="NaN"):
        SyntheticPool(tmp_path / "pool").add_bundle("site-1", bad, signed, pub)


def test_pool_order_does_not_depend_on_which_site_answered_first(tmp_path):
    """The pooled network sees the same image sequence whatever order the bundles arrived in."""
    a = signed_bundle(tmp_path / "a", seed=1)
    b = signed_bundle(tmp_path / "b", seed=2)
    first = SyntheticPool(tmp_path / "p1")
    first.add_bundle("site-1", a[0], a[1], a[2])
    first.add_bundle("site-2", b[0], b[1], b[2])
    second = SyntheticPool(tmp_path / "p2")
    second.add_bundle("site-2", b[0], b[1], b[2])
    second.add_bundle("site-1", a[0], a[1], a[2])
    np.testing.assert_array_equal(first.images(), second.images())
    np.testing.assert_array_equal(second.images()[: len(a[0])], a[0])  # site-1 first, in its certified order
