"""The privacy gate: exact, transform-robust, calibrated, signed, fail-closed.

>>> res = PrivacyGate(train, GateConfig(), reference_groups=patients).run(gen.sample, 200, 1000)
>>> signed = sign_certificate(res.certificate, load_private_key("keys/site.key"))  # + res.accepted

``image_digest`` (one published image) and ``fingerprint`` (the reference
set) are both :func:`fedsynth.digests.array_digest`, under the names the
certificate uses. Names are imported on first use (:func:`fedsynth.lazy.lazy_exports`).
See ``docs/privacy.md`` for the definitions and what the gate does not promise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedsynth.lazy import lazy_exports

exports = {
    "METRICS": "fedsynth.privacy.config",
    "Binding": "fedsynth.privacy.certificate",
    "Certificate": "fedsynth.privacy.certificate",
    "CheckResult": "fedsynth.privacy.gate",
    "Expected": "fedsynth.privacy.signing",
    "GateConfig": "fedsynth.privacy.config",
    "GatePolicy": "fedsynth.privacy.policy",
    "GateResult": "fedsynth.privacy.gate",
    "PolicyRefusal": "fedsynth.privacy.policy",
    "PrivacyGate": "fedsynth.privacy.gate",
    "ReferenceIndex": "fedsynth.privacy.search",
    "SignedCertificate": "fedsynth.privacy.certificate",
    "ReleaseReview": "fedsynth.privacy.certificate",
    "canonical_json": "fedsynth.privacy.signing",
    "fingerprint": "fedsynth.digests:array_digest",
    "generate_site_key": "fedsynth.privacy.signing",
    "image_digest": "fedsynth.digests:array_digest",
    "load_private_key": "fedsynth.privacy.signing",
    "load_public_key": "fedsynth.privacy.signing",
    "ncc_robust": "fedsynth.privacy.metrics",
    "parse_certificate": "fedsynth.privacy.certificate",
    "pixel_rmse": "fedsynth.privacy.metrics",
    "public_key_id": "fedsynth.privacy.signing",
    "sign_certificate": "fedsynth.privacy.signing",
    "verify_certificate": "fedsynth.privacy.signing",
    "verify_signature": "fedsynth.privacy.signing",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, exports)

if TYPE_CHECKING:  # pragma: no cover
    from fedsynth.digests import array_digest as fingerprint  # noqa: F401
    from fedsynth.digests import array_digest as image_digest  # noqa: F401
    from fedsynth.privacy.certificate import (  # noqa: F401
        Binding,
        Certificate,
        SignedCertificate,
        parse_certificate,
    )
    from fedsynth.privacy.config import METRICS, GateConfig  # noqa: F401
    from fedsynth.privacy.gate import CheckResult, GateResult, PrivacyGate  # noqa: F401
    from fedsynth.privacy.metrics import ncc_robust, pixel_rmse  # noqa: F401
    from fedsynth.privacy.policy import GatePolicy, PolicyRefusal  # noqa: F401
    from fedsynth.privacy.search import ReferenceIndex  # noqa: F401
    from fedsynth.privacy.signing import (  # noqa: F401
        Expected,
        canonical_json,
        generate_site_key,
        load_private_key,
        load_public_key,
        public_key_id,
        sign_certificate,
        verify_certificate,
        verify_signature,
    )
