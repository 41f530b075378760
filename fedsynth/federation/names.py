"""The study's vocabulary: method and phase names, one set of constants.

Why one module: the same names key ``report.json`` (``methods``,
``communication_bytes``, ``wall_seconds``), ``coordinator/state.json`` (the
finished phases) and the model files (``models/<method>.pt``). A phase that
trains a method *is* named for that method, so there is no second spelling
(the older state files wrote ``synthetic_pool``; :func:`canonical_phase`
reads them).

    >>> Method.SYNTHETIC_POOL.value, Phase.SETUP.value
    ('synthetic-pool', 'setup')
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEGRADED_INPUT", "METHOD_LABELS", "Method", "Phase", "canonical_phase", "central_methods", "compared_methods",
           "local_model", "seeded", "split_seeded"]


class Method(StrEnum):
    """A way of training the downstream network; each is one row of the report."""

    SYNTHETIC_POOL = "synthetic-pool"
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDAVGM = "fedavgm"
    LOCAL_ONLY = "local-only"
    CENTRALISED_REAL = "centralised-real"
    PHASE_SCRAMBLED = "phase-scrambled-pool"
    UNTEXTURED_POOL = "untextured-pool"


class Phase(StrEnum):
    """A step of the study, in the order :mod:`fedsynth.federation.study` runs them.

    ``setup`` and ``evaluation`` are also the byte-metering labels of their
    messages; the generator and publish messages are metered as
    ``synthetic-pool`` (they are that method's communication).
    """

    SETUP = "setup"
    TRAIN_GENERATORS = "train-generators"
    PUBLISH = "publish"
    SYNTHETIC_POOL = Method.SYNTHETIC_POOL.value
    FEDAVG = Method.FEDAVG.value
    FEDPROX = Method.FEDPROX.value
    FEDADAM = Method.FEDADAM.value
    FEDAVGM = Method.FEDAVGM.value
    LOCAL_ONLY = Method.LOCAL_ONLY.value
    CENTRALISED_REAL = Method.CENTRALISED_REAL.value
    PHASE_SCRAMBLED = Method.PHASE_SCRAMBLED.value
    UNTEXTURED_POOL = Method.UNTEXTURED_POOL.value
    EVALUATION = "evaluation"
    REPORT = "report"


#: The "no network" row: the degraded test input itself scored against the clean slice.
DEGRADED_INPUT = "degraded-input"

#: Human labels of the methods (the report's method blocks carry them).
METHOD_LABELS: dict[Method, str] = {
    Method.SYNTHETIC_POOL: "central network trained on the pool of gate-certified synthetic images",
    Method.FEDAVG: "FedAvg on the sites' real training data",
    Method.FEDPROX: "FedProx on the sites' real training data",
    Method.FEDADAM: "FedAdam on the sites' real training data",
    Method.FEDAVGM: "FedAvg with server momentum on the sites' real training data",
    Method.LOCAL_ONLY: "each site alone on its own real data (scored on its own test set)",
    Method.CENTRALISED_REAL: "union of all sites' real training data: upper bound, simulation only, NOT deployable",
    Method.PHASE_SCRAMBLED: "control: the pool with every image's Fourier phase randomised (its spectrum, no anatomy)",
    Method.UNTEXTURED_POOL: "control: the pool's images before their noise texture (the same samples, certified too)",
}


def compared_methods(second: str) -> tuple[Method, ...]:
    """What synthetic-pool is compared with, in report order (``second``: the scenario's second strategy)."""
    return (Method.FEDAVG, Method(second), Method.CENTRALISED_REAL, Method.LOCAL_ONLY, Method.PHASE_SCRAMBLED,
            Method.UNTEXTURED_POOL)


def central_methods(second: str) -> tuple[Method, ...]:
    """The methods that train one network for every site (so one model per repeat), in report order."""
    return (Method.SYNTHETIC_POOL, *(m for m in compared_methods(second) if m != Method.LOCAL_ONLY))


def local_model(site_id: str) -> str:
    """Model name of one site's local-only network (``local-<site>``)."""
    return f"local-{site_id}"


def seeded(name: str, k: int) -> str:
    """Model name of repeat ``k`` of a method (``fedavg``, ``fedavg@seed1``, ...); repeat 0 keeps the plain name."""
    return name if k == 0 else f"{name}@seed{k}"


def split_seeded(name: str) -> tuple[str, int]:
    """Inverse of :func:`seeded`: ``fedavg@seed1`` -> ``("fedavg", 1)``."""
    base, _, k = name.partition("@seed")
    return base, int(k) if k else 0


def canonical_phase(name: str) -> str:
    """A phase name as this version spells it (older state files used ``_``, and ``site_info``)."""
    name = name.replace("_", "-")
    return Phase.SETUP.value if name == "site-info" else name
