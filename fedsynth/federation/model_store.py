"""The coordinator's trained networks: one file per method, all from the same initial weights.

Why one owner: every method must start from the same seeded weights and be
saved with the task configuration that built it, so a resumed study (or a
later ``fedsynth report``) can reload any of them without the original
scenario. ``models/<name>.pt`` is also the resume marker of a training phase.

    >>> store = ModelStore(layout, task_cfg, seed=0)
    >>> store.save("fedavg", result.arrays.to_torch_state_dict())
    >>> model = store.load("fedavg")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsynth.federation.study_dir import StudyLayout

__all__ = ["ModelStore"]


class ModelStore:
    """``models/<name>.pt`` of one study; see the module docstring."""

    def __init__(self, layout: StudyLayout, task: Any, seed: int) -> None:
        self.layout, self.task, self.seed = layout, task, int(seed)
        layout.models.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.layout.model(name)

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def initial_state(self, repeat: int = 0) -> dict[str, Any]:
        """The seeded initial weights every method of repeat ``repeat`` starts from (seed ``seed + repeat``)."""
        import torch

        from fedsynth.tasks import build_network

        torch.manual_seed(self.seed + repeat)
        return build_network(self.task).state_dict()

    def fresh(self, repeat: int = 0) -> Any:
        """A network with the initial weights of repeat ``repeat``."""
        from fedsynth.tasks import build_network

        model = build_network(self.task)
        model.load_state_dict(self.initial_state(repeat))
        return model

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Save a state dict as ``name`` (with its task configuration), atomically."""
        from fedsynth.tasks import build_network, save_network

        model = build_network(self.task)
        model.load_state_dict(state)
        save_network(model, self.task, self.path(name))

    def load(self, name: str) -> Any:
        """The network saved as ``name``."""
        from fedsynth.tasks import load_network

        model, _ = load_network(self.path(name))
        return model
