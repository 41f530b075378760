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


@pytest.fixture()
def flower_message_context():
    """What a SuperNode sets before it calls a ClientApp (Flower's task identity), and fresh site sessions.

    Messages built outside a running Flower node need a run/node/task id;
    the site sessions are per process, so each test starts without any.
    """
    from flwr.supercore.task_identity import TaskIdentity

    from fedsynth.federation.site_session import clear_sessions

    names = ("_run_id", "_node_id", "_task_id")
    old = {n: getattr(TaskIdentity, n) for n in names}
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    clear_sessions()
    yield
    clear_sessions()
    for n, v in old.items():
        setattr(TaskIdentity, n, v)
