"""The Simulation Engine through Flower's supported path: a SuperLink of the study's own, and ``flwr run``.

Why: Flower 1.42 marks ``flwr.simulation.run_simulation`` deprecated; the
path it documents is ``flwr run <app> <connection>`` against a SuperLink
started with ``--simulation``. ``flwr run . local`` would start a detached
SuperLink on a fixed port that outlives the study and keeps the environment
of whoever started it first; so ``fedsynth simulate`` starts its own
instead — on 127.0.0.1, on a free port, with the loopback environment
(:data:`fedsynth.runtime.LOOPBACK_ENV`), its state in memory and its
``FLWR_HOME`` inside the study directory — runs the study with ``flwr run``
against it, and stops it when the study ends or fails.

The app is the fedsynth source tree (the directory holding the
``pyproject.toml`` with ``[tool.flwr.app]``, as installed by ``pip install
-e .``); ``flwr run`` builds its FAB from there. The run's log stream
(coordinator and sites) goes to ``out/logs/flwr-run.log``, and to the
terminal too with ``verbose``.

    >>> with LocalSuperLink(out / "flwr") as link:
    ...     link.run(app_dir, run_config={"out": str(out)}, federation={"num-supernodes": 3})
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fedsynth.errors import ConfigError, FedsynthError
from fedsynth.runtime import LOOPBACK_ENV

__all__ = ["LocalSuperLink", "app_dir"]

log = logging.getLogger(__name__)

_CONNECTION = "fedsynth-simulation"
_STARTUP_S = 120.0


def app_dir() -> Path:
    """The Flower app directory of this fedsynth (its source tree); ConfigError if it is not installed from one."""
    import fedsynth

    root = Path(fedsynth.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text(encoding="utf-8"):
        raise ConfigError(f"{root}: not a fedsynth source tree (no pyproject.toml with [tool.flwr.app]); "
                          "fedsynth simulate runs the app with `flwr run`: install with `pip install -e .`")
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class LocalSuperLink:
    """A ``flower-superlink --simulation`` on 127.0.0.1 owned by one study (a context manager)."""

    def __init__(self, home: Path, log_file: Path | None = None) -> None:
        self.home = Path(home).resolve()
        self.log_file = Path(log_file) if log_file else self.home / "superlink.log"
        self.port = 0
        self._proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """The environment of the SuperLink and of ``flwr run``: loopback only, no installs, this FLWR_HOME."""
        env = {**LOOPBACK_ENV, **os.environ}  # an operator's own setting of one of them wins
        env["FLWR_HOME"] = str(self.home)
        bindir = str(Path(sys.executable).parent)  # the flwr entry points of this interpreter come first
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        return env

    def _exe(self, name: str) -> str:
        found = shutil.which(name, path=self.env()["PATH"])
        if found is None:
            raise ConfigError(f"`{name}` not found next to {sys.executable} (flwr[simulation] is a dependency)")
        return found

    def __enter__(self) -> LocalSuperLink:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        cmd = [self._exe("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
               "--host", "127.0.0.1", "--port", str(self.port), "--log-file", str(self.log_file)]
        self._proc = subprocess.Popen(cmd, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{_CONNECTION}"\n\n[superlink.{_CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n', encoding="utf-8")
        deadline = time.monotonic() + _STARTUP_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise FedsynthError(f"flower-superlink exited with code {self._proc.returncode} at start "
                                    f"(see {self.log_file})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):  # noqa: S310
                    log.info("simulation SuperLink on 127.0.0.1:%d (pid %d)", self.port, self._proc.pid)
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.__exit__()
        raise FedsynthError(f"flower-superlink did not answer within {_STARTUP_S:.0f} s (see {self.log_file})")

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)  # the SuperLink and the simulation runtime it started
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def run(self, app: Path, run_config: dict[str, Any], federation: dict[str, Any], log_file: Path,
            verbose: bool = False) -> None:
        """``flwr run APP`` against this SuperLink, streaming the run's log to ``log_file`` until it ends."""
        if self._proc is None:
            raise RuntimeError("the SuperLink is not started (use it as a context manager)")
        cmd = [self._exe("flwr"), "run", str(app), _CONNECTION, "--stream",
               "--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items()),
               "--federation-config", " ".join(f"{k}={_toml_value(v)}" for k, v in federation.items())]
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as sink:
            proc = subprocess.Popen(cmd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    sink.write(line)
                    if verbose:
                        sys.stderr.buffer.write(line)
                        sys.stderr.flush()
                rc = proc.wait()
            except BaseException:
                os.killpg(proc.pid, signal.SIGTERM)
                raise
        if rc != 0:
            raise FedsynthError(f"`flwr run` exited with code {rc} (see {log_file})")
