"""Shared test set-up: loopback-only Ray, no telemetry, deterministic seeds."""

from __future__ import annotations

import os

from fedsynth.runtime import apply_loopback_env

apply_loopback_env()  # before anything can start Ray or Flower
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed numpy/torch and point FLWR_HOME at a temp dir so tests never touch ~/.flwr."""
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    monkeypatch.setenv("FLWR_HOME", str(tmp_path_factory.mktemp("flwr_home")))
