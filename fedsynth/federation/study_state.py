"""What a study keeps between runs: ``coordinator/state.json``.

Why typed: the state is the study's memory across crashes and restarts
(finished phases, every evaluation result, bytes, privacy rows); a hand-edited
or truncated file must fail as one line, not as a KeyError deep in a phase.
Older files (phase names with ``_``) are read as this version's names.

    >>> state = StudyState.load(layout.state)
    >>> state.done, state.evaluations["fedavg"]["site-1"]["psnr"]
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fedsynth.config import StrictModel, validate
from fedsynth.errors import ConfigError
from fedsynth.federation.names import canonical_phase
from fedsynth.io_utils import write_json_atomic

__all__ = ["StudyState", "merge_bytes"]


class StudyState(StrictModel):
    """Finished phases, wall time per phase, bytes per method, privacy rows, evaluations, missing sites."""

    done: list[str] = Field(default_factory=list, description="finished phases, in order")
    wall_seconds: dict[str, float] = Field(default_factory=dict)
    bytes: dict[str, dict[str, int]] = Field(default_factory=dict,
                                             description="per method: {'sent': n, 'received': n}")
    evaluations: dict[str, dict[str, dict[str, list[float]]]] = Field(
        default_factory=dict, description="model -> site -> metric -> per-image values")
    privacy: dict[str, dict[str, Any]] = Field(default_factory=dict, description="the report's privacy rows")
    study_id: str = Field(default_factory=lambda: uuid.uuid4().hex,
                          description="this study's id, signed into every certificate it receives")
    publish_nonce: str = Field(default_factory=lambda: secrets.token_hex(16),
                               description="the publish request's nonce (kept, so a resumed study asks the same)")
    generators: dict[str, str] = Field(default_factory=dict, description="site -> generator checkpoint hash")
    test_patients: dict[str, list[int]] = Field(
        default_factory=dict, description="site -> the (site-local, anonymous) patient number of each test image")
    participants: dict[str, list[list[str]]] = Field(
        default_factory=dict, description="per weight-averaging method: the sites that trained in each round")
    missing: dict[str, str] = Field(default_factory=dict, description="site -> why it left the study")
    machine: dict[str, Any] = Field(default_factory=dict, description="this machine's measured conv speed (last run)")
    tuning: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="weight-averaging method -> grid, validation score per setting, choice")
    training: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="model -> how it was trained: best epoch, steps, samples, seconds, curve")
    rejected_bundles: dict[str, str] = Field(default_factory=dict, description="site -> why nothing was pooled")
    planned: list[str] = Field(default_factory=list, description="every phase of this run, in order")
    started: dict[str, float] = Field(default_factory=dict,
                                      description="phase -> when it last started (Unix time), for the live page")

    @field_validator("done", mode="before")
    @classmethod
    def _phase_names(cls, v: Any) -> Any:
        return [canonical_phase(str(p)) for p in v] if isinstance(v, list) else v

    @field_validator("wall_seconds", mode="before")
    @classmethod
    def _wall_names(cls, v: Any) -> Any:
        return {canonical_phase(str(k)): t for k, t in v.items()} if isinstance(v, dict) else v

    @classmethod
    def load(cls, path: Path) -> StudyState:
        """The saved state, or a fresh one when there is none; one-line error when unreadable."""
        if not Path(path).is_file():
            return cls()
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: unreadable study state ({type(err).__name__}); "
                              "move it away to start the study over") from None
        return validate(cls, data, str(path))

    def save(self, path: Path) -> None:
        """Write the state atomically."""
        write_json_atomic(path, self.model_dump(mode="json"))


def merge_bytes(*parts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Bytes per method summed over ``parts`` (earlier runs' totals plus this run's)."""
    out: dict[str, dict[str, int]] = {}
    for part in parts:
        for k, v in part.items():
            slot = out.setdefault(k, {"sent": 0, "received": 0})
            slot["sent"] += v["sent"]
            slot["received"] += v["received"]
    return out
