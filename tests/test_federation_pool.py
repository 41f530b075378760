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


def _pool_with_two_sites(tmp_path):
    a = signed_bundle(tmp_path / "a", seed=1)
    b = signed_bundle(tmp_path / "b", seed=2)
    pool = SyntheticPool(tmp_path / "pool")
    pool.add_bundle("site-1", a[0], a[1], a[2])
    pool.add_bundle("site-2", b[0], b[1], b[2])
    from fedsynth.privacy import load_public_key

    keys = {"site-1": load_public_key(a[2]), "site-2": load_public_key(b[2])}
    return pool, a, b, keys.get


def test_check_quarantines_altered_truncated_and_missing_objects(tmp_path):
    pool, a, b, keys = _pool_with_two_sites(tmp_path)
    assert pool.check(keys) == []  # an untouched pool checks out
    d1, d2, d3 = pool.digests("site-1")[:3]
    obj = pool.objects
    np.save(obj / f"{d1}.npy", np.zeros_like(a[0][0]))  # zeroed pixels
    (obj / f"{d2}.npy").write_bytes((obj / f"{d2}.npy").read_bytes()[:100])  # truncated
    (obj / f"{d3}.npy").unlink()  # deleted
    bad = pool.check(keys)
    assert {q.digest for q in bad} == {d1, d2, d3}
    reasons = {q.digest: q.reason for q in bad}
    assert "hash" in reasons[d1] and "unreadable" in reasons[d2] and "missing" in reasons[d3]
    assert pool.count("site-1") == len(a[0]) - 3 and len(pool.images()) == len(a[0]) + len(b[0]) - 3
    assert (tmp_path / "pool" / "quarantine" / f"{d1}.npy").is_file()
    assert {q.digest for q in pool.quarantined()} == {d1, d2, d3}
    assert pool.check(keys) == []  # nothing left to quarantine


def test_check_quarantines_rows_that_no_certificate_covers(tmp_path):
    import sqlite3

    pool, a, b, keys = _pool_with_two_sites(tmp_path)
    moved = pool.digests("site-2")[0]
    db = sqlite3.connect(pool.db_path)
    with db:
        db.execute("UPDATE images SET site = 'site-1' WHERE digest = ?", (moved,))  # a row moved to another site
        # an unsigned image inserted as a "site-9" bundle
        fake = np.random.default_rng(0).random(a[0].shape[1:]).astype(np.float32)
        from fedsynth.digests import array_digest

        np.save(pool.objects / f"{array_digest(fake)}.npy", fake)
        db.execute("INSERT INTO bundles VALUES ('b9', 'site-9', '{}', NULL, 1, NULL, 1, 0)")
        db.execute("INSERT INTO images VALUES (?, 'site-9', 'b9', 0, NULL)", (array_digest(fake),))
    db.close()
    bad = {q.digest: q for q in pool.check(keys)}
    assert set(bad) == {moved, array_digest(fake)}
    assert moved not in pool.digests() and array_digest(fake) not in pool.digests()  # never trained on
    assert "site-2's" in bad[moved].reason and "no registered public key" in bad[array_digest(fake)].reason


def test_a_corrupt_manifest_stops_the_check(tmp_path):
    pool, a, b, keys = _pool_with_two_sites(tmp_path)
    raw = bytearray(pool.db_path.read_bytes())
    assert len(raw) >= 3 * 4096
    raw[4096:] = np.random.default_rng(0).integers(0, 256, len(raw) - 4096, dtype=np.uint8).tobytes()
    pool.db_path.write_bytes(bytes(raw))  # every page but the header garbled
    with pytest.raises(GateError, match="corrupt") as err:
        pool.check(keys)
    assert "\n" not in str(err.value)


def _bundle_with_companions(keydir, n: int = 5):
    """A real gate run that requires companions (each candidate's companion: a dimmed copy), signed."""
    from fixtures.images import smooth_noise

    from fedsynth.privacy import (
        GateConfig,
        PrivacyGate,
        generate_site_key,
        load_private_key,
        sign_certificate,
    )

    priv, pub = generate_site_key(keydir)
    cands = smooth_noise(2 * n, 32, seed=3)
    gate = PrivacyGate(smooth_noise(12, 32, seed=103), GateConfig(
        metrics=["pixel_rmse"], mode="absolute", thresholds={"pixel_rmse": 1e-3}, require_companions=True))
    batches = iter([(cands, 0.9 * cands + 0.05)])
    res = gate.run(lambda k: next(batches, (None, None)), quota=n, max_attempts=len(cands))
    assert res.companions is not None and len(res.companions) == len(res.accepted) == n
    return res.accepted, res.companions, sign_certificate(res.certificate, load_private_key(priv)), pub


def test_companions_are_pooled_only_as_certified(tmp_path):
    images, comps, signed, pub = _bundle_with_companions(tmp_path / "k")
    assert signed.parsed().published_companions() == [array_digest(c) for c in comps]
    pool = SyntheticPool(tmp_path / "pool")
    swapped = comps[::-1].copy()  # certified images, each beside another image's companion
    with pytest.raises(GateError, match="companions are not the ones"):
        pool.add_bundle("site-1", images, signed, pub, companions=swapped)
    assert pool.count() == 0
    pool.add_bundle("site-1", images, signed, pub, companions=comps)
    np.testing.assert_array_equal(pool.companions(), comps)
    np.testing.assert_array_equal(pool.images(), images)


def test_an_image_without_its_companion_fails_the_untextured_arm_in_one_line(tmp_path):
    images, signed, pub, _ = signed_bundle(tmp_path / "k")
    pool = SyntheticPool(tmp_path / "pool")
    pool.add_bundle("site-1", images, signed, pub)
    with pytest.raises(GateError, match="no certified companion"):
        pool.companions()


def test_check_quarantines_an_altered_companion_with_its_image(tmp_path):
    from fedsynth.privacy import load_public_key

    images, comps, signed, pub = _bundle_with_companions(tmp_path / "k")
    pool = SyntheticPool(tmp_path / "pool")
    pool.add_bundle("site-1", images, signed, pub, companions=comps)
    key = load_public_key(pub)
    assert pool.check(lambda s: key) == []
    target = array_digest(comps[1])
    np.save(pool.objects / f"{target}.npy", np.zeros_like(comps[1]))
    bad = pool.check(lambda s: key)
    assert [q.digest for q in bad] == [array_digest(images[1])] and bad[0].reason.startswith("companion:")
    assert len(pool.companions()) == len(images) - 1
