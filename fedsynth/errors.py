"""User-facing errors.

Every problem a user can fix (a bad file, a wrong config value, a tampered
certificate) is raised as a :class:`FedsynthError`. The CLI prints its message
as one line and exits with status 2; anything else is a bug and keeps its
traceback. Keeping the two apart is what lets an operator tell "my input is
wrong" from "fedsynth is broken".
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FedsynthError",
    "GateError",
]


class FedsynthError(Exception):
    """An error caused by user input; the message is one line naming the culprit."""

    exit_code = 2


class ConfigError(FedsynthError):
    """A configuration file or option is missing, malformed or out of range."""


class DataError(FedsynthError):
    """An image file or data directory cannot be used as input."""


class GateError(FedsynthError):
    """The privacy gate refused to run; nothing was published (fail closed)."""


class CheckpointError(FedsynthError):
    """A checkpoint is corrupt, truncated or belongs to a different model."""
