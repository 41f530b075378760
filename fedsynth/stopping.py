"""The stopping rule every trained network shares: keep the best validation, stop after ``patience`` without one.

Why one class: the task networks (every method of a study, round by round
for FedAvg) and the site generator (its diffusion loss on held-out patients)
stop by the same rule, so the rule is written once. It holds no weights —
the caller keeps the best ones when :meth:`EarlyStopping.update` says so —
and its state round-trips through :meth:`state_dict` for resumable training.

>>> stopper = EarlyStopping(patience=2)
>>> [stopper.update(v) for v in (1.0, 0.8, 0.9, 0.95)], stopper.stop
([True, True, False, False], True)
"""

from __future__ import annotations

from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Best-so-far by a validation loss; ``update`` says when ``patience`` checks brought nothing lower."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = float("inf")
        self.best_check = 0
        self.checks = 0
        self.bad = 0

    def update(self, loss: float) -> bool:
        """Record one validation; True if it is the best so far."""
        self.checks += 1
        if loss < self.best:
            self.best, self.best_check, self.bad = float(loss), self.checks, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience

    def mark_best(self, curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Flag ``best`` on the curve entry of the best validation (one entry per :meth:`update`, in order)."""
        for i, point in enumerate(curve, start=1):
            point["best"] = i == self.best_check
        return curve

    def state_dict(self) -> dict[str, Any]:
        """Plain values that :meth:`load_state_dict` restores (for a resumed training)."""
        return {"patience": self.patience, "best": self.best, "best_check": self.best_check,
                "checks": self.checks, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience, self.best = int(state["patience"]), float(state["best"])
        self.best_check, self.checks, self.bad = int(state["best_check"]), int(state["checks"]), int(state["bad"])
