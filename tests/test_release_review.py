"""The site's release review: nothing leaves before a person at the site released it, and the page shows why.

The real ClientApp (as a SuperNode calls it) with a tiny trained generator;
the review page in headless Chromium; the decision posted as its script does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fixtures.federation import site_toml
from flwr.app import Context, Message, RecordDict

from fedsynth.federation import protocol as P
from fedsynth.federation.client_app import build_client_app
from fedsynth.federation.site_session import resolve_site
from fedsynth.privacy import GateConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = pytest.mark.usefixtures("flower_message_context")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A site whose policy requires review, with a tiny generator trained through its ClientApp."""
    tmp = tmp_path_factory.mktemp("review")
    toml = site_toml(tmp, n_patients=6, site_keys="val_fraction = 0.2", tables="[privacy]\nreview = true\n")
    return {"toml": toml, "work": tmp / "work"}


def _ask(app, ctx, content: RecordDict, kind: str) -> Message:
    return app(Message(content, dst_node_id=3, message_type=kind), ctx)


def _context(toml: Path) -> Context:
    return Context(run_id=7, node_id=3, node_config={"site-config": str(toml)}, state=RecordDict(), run_config={})


def _post(url: str, body: dict, content_type: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - the loopback page this test started
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_bundle_leaves_only_as_its_reviewer_released_it(site: dict) -> None:
    from fedsynth.federation.live_page import LoopbackServer
    from fedsynth.federation.release_review import build_review_app, pending_reviews
    from fedsynth.privacy import load_public_key, verify_certificate

    app = build_client_app(audit=False)
    ctx = _context(site["toml"])
    trained = _ask(app, ctx, P.GeneratorRequest(profile="tiny", overrides={"image_size": 32}).to_content(),
                   P.MSG_TRAIN_GENERATOR)
    assert not trained.has_error(), trained.error.reason if trained.has_error() else ""
    request = P.PublishRequest(gate=GateConfig(), quota=4, max_attempts=60, study_id="study-1", nonce="n" * 32)
    first = P.PublishChunk.from_content(_ask(app, ctx, request.to_content(), P.MSG_PUBLISH).content)
    assert first.pending and first.n_total == 0 and first.signed is None and len(first.images) == 0
    again = P.PublishChunk.from_content(_ask(app, ctx, request.to_content(), P.MSG_PUBLISH).content)
    assert again.pending  # asked again before anyone decided: still nothing leaves
    assert not (site["work"] / "published").joinpath("bundle").exists()
    (review,) = pending_reviews(site["work"])

    server = LoopbackServer(build_review_app(resolve_site({"site-config": str(site["toml"])})))
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        if CHROMIUM is not None:  # what the privacy officer sees
            res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                                 capture_output=True, timeout=120)
            dom = res.stdout.decode()
            assert res.returncode == 0 and "Release review at hospital-a" in dom
            assert dom.count('alt="candidate') == 4 and dom.count("nearest real slice by pixel_rmse") == 4
            assert dom.count('class="release"') == 4 and "threshold" in dom
            assert not re.search(r"""(src|href)=["']https?://""", dom)
        page = urllib.request.urlopen(url, timeout=30).read().decode()  # noqa: S310
        token = re.search(r'data-token="([^"]+)"', page).group(1)
        digests = re.findall(r'class="release" value="([0-9a-f:sha]+)"', page)
        assert len(digests) == 4
        decide = url + "decide"
        body = {"review": review.name, "token": token, "reviewer": "Dr. A. Officer", "release": digests[1:]}
        assert _post(decide, {**body, "token": "forged"})[0] == 400
        assert _post(decide, body, content_type="text/plain")[0] == 415
        code, out = _post(decide, body)
        assert code == 200 and out["ok"] and "released 3 image(s)" in out["message"]
        code, out = _post(decide, {**body, "reject": True})
        assert code == 400 and "final" in out["message"]
    finally:
        server.stop()

    chunk = P.PublishChunk.from_content(_ask(app, ctx, request.to_content(), P.MSG_PUBLISH).content)
    assert not chunk.pending and chunk.n_total == 3
    key = load_public_key(next((site["work"] / "keys").rglob("*.pub")))
    cert = verify_certificate(chunk.signed.model_dump(mode="json"), public_key=key, images=chunk.images)
    assert cert.review.reviewer == "Dr. A. Officer" and cert.review.withheld == [digests[0]]
    assert cert.summary.n_published == 3 and digests[0] not in cert.published
    log = [json.loads(line) for line in (site["work"] / "review" / "audit.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["reviewer"] == "Dr. A. Officer" and log[0]["withheld"] == [digests[0]]
    assert log[0]["study_id"] == "study-1" and len(log[0]["released"]) == 3
    assert pending_reviews(site["work"]) == []
    np.testing.assert_array_equal(  # the same images the reviewer saw, minus the withheld one
        chunk.images, np.load(review / "candidates.npy")[1:])
