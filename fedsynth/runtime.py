"""Process set-up shared by the CLI, the Flower apps and the tests: environment and logging.

Why here and not in each entry point: the loopback environment is a security
setting (without ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` Ray listens on all
interfaces, so a simulated study would expose its workers to the network),
and the log format is what operators grep; both must be the same whichever
way fedsynth was started. Only the standard library is imported here, so the
set-up can run before anything heavy is loaded.

    >>> apply_loopback_env()                              # before Ray / Flower start
    >>> setup_logging(logging.INFO, only_if_unconfigured=True)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["LOG_FORMAT", "LOOPBACK_ENV", "PROGRESS_LOGGERS", "apply_loopback_env", "log_to_file", "quiet_console",
           "setup_logging"]

#: Environment every fedsynth process sets (Flower notes: Ray on loopback only, no telemetry,
#: no update checks, no dependency installation at run time).
LOOPBACK_ENV: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}

#: The one log line format of fedsynth.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Third-party loggers shown only with debug logging (faiss reports the CPU builds it did not load).
_NOISY_LOGGERS = ("faiss", "faiss.loader")


def apply_loopback_env() -> None:
    """Set each :data:`LOOPBACK_ENV` variable that is not set yet (an operator's choice wins)."""
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)


def setup_logging(level: int = logging.INFO, *, only_if_unconfigured: bool = False) -> None:
    """Configure the root logger with :data:`LOG_FORMAT` at ``level`` and quiet third-party chatter.

    An already configured root logger (one with handlers, e.g. pytest's or an
    embedding application's) is left as it is, as :func:`logging.basicConfig`
    does. ``only_if_unconfigured=True`` (the Flower apps, which run inside a
    host process that may have set up logging) then changes nothing at all;
    otherwise (the CLI) the third-party loggers are still quietened.
    """
    if only_if_unconfigured and logging.getLogger().handlers:
        return
    logging.basicConfig(level=level, format=LOG_FORMAT)
    third_party = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(third_party)


#: Loggers whose INFO lines a person running a study wants on the terminal (the phases and their timing).
PROGRESS_LOGGERS = ("fedsynth.federation.study",)


class _ConsoleFilter(logging.Filter):
    """Terminal: fedsynth's warnings and errors, and the study's progress lines (unless a live view shows them)."""

    def __init__(self, progress: bool = True) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("fedsynth"):
            return False
        return record.levelno >= logging.WARNING or (self.progress and record.name in PROGRESS_LOGGERS)


def log_to_file(path: Path, level: int = logging.INFO) -> None:
    """Also write every record of this process at ``level`` or above to ``path`` (appending; once per path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    target = str(path.resolve())
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in root.handlers):
        return
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)


def quiet_console(log_file: Path, verbose: bool = False, live: bool = False) -> None:
    """Send everything to ``log_file``; keep the terminal to what a person can act on.

    Why: a study's own progress drowns in other libraries' start-up lines,
    Flower's debug output and Ray's actor prefixes. Without ``verbose`` the
    terminal shows the study's phases and fedsynth's warnings; Flower's own
    console handler is removed (its records still reach the file). ``live``:
    a live view draws the phases, so their lines stay in the file only.
    """
    log_to_file(log_file, logging.DEBUG if verbose else logging.INFO)
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.addFilter(_ConsoleFilter(progress=not live))
    import flwr.supercore.logger  # noqa: F401 - Flower adds its console handler when this is first imported

    flwr = logging.getLogger("flwr")
    for handler in list(flwr.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            flwr.removeHandler(handler)
    logging.getLogger("alembic").setLevel(logging.WARNING)
