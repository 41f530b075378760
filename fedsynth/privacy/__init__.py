"""The privacy gate: exact, transform-robust, calibrated, signed, fail-closed.

>>> gate = PrivacyGate(store.train_images(), GateConfig(), reference_groups=store.train_patient_ids())
>>> res = gate.run(lambda n: generator.sample(n), quota=200, max_attempts=1000, generator_hash=gen.checkpoint_hash)
>>> signed = sign_certificate(res.certificate, load_private_key("keys/site.key"))
>>> verify_certificate(signed, load_public_key("keys/site.pub"), res.accepted)   # raises GateError if tampered

See ``docs/privacy.md`` for the definitions and what the gate does not promise.
"""

from fedsynth.privacy.config import METRICS, GateConfig
from fedsynth.privacy.gate import CheckResult, GateResult, PrivacyGate
from fedsynth.privacy.metrics import ncc_robust, pixel_rmse
from fedsynth.privacy.search import ReferenceIndex, fingerprint
from fedsynth.privacy.signing import (
    canonical_json,
    generate_site_key,
    image_digest,
    load_private_key,
    load_public_key,
    public_key_id,
    sign_certificate,
    verify_certificate,
)

__all__ = [
    "METRICS",
    "CheckResult",
    "GateConfig",
    "GateResult",
    "PrivacyGate",
    "ReferenceIndex",
    "canonical_json",
    "fingerprint",
    "generate_site_key",
    "image_digest",
    "load_private_key",
    "load_public_key",
    "ncc_robust",
    "pixel_rmse",
    "public_key_id",
    "sign_certificate",
    "verify_certificate",
]
