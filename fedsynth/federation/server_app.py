"""The coordinator: a Flower ``ServerApp`` that runs one federated study.

``app`` finds its study through the run config
(:func:`fedsynth.federation.study_dir.resolve_study`: a ``coordinator``
TOML on the Deployment Engine, or ``out``/``scenario`` for ``flwr run .`` on
a local simulation); :func:`build_server_app` with ``study_dir`` makes the
app of one prepared study (``fedsynth simulate``). The phases themselves are
in :mod:`fedsynth.federation.study`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsynth.errors import FedsynthError
from fedsynth.federation.study import Study
from fedsynth.federation.study_dir import StudyLayout, resolve_study
from fedsynth.io_utils import write_bytes_atomic
from fedsynth.runtime import setup_logging

__all__ = ["app", "build_server_app"]

log = logging.getLogger(__name__)


def build_server_app(study_dir: Path | None = None) -> ServerApp:
    """The coordinator app; ``study_dir`` binds it to one prepared study."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        """Run (or resume) the study and write ``report.json`` + ``report.html``."""
        setup_logging(only_if_unconfigured=True)  # `flwr run`: make phase/site progress reach the log stream
        spec = resolve_study(dict(context.run_config), study_dir)
        log.info("study %s (%s) in %s", spec.scenario.name, spec.mode, spec.out)
        try:
            Study(grid, spec).run()
        except FedsynthError as err:  # `flwr run` shows a traceback; `fedsynth simulate` shows this line
            write_bytes_atomic(StudyLayout(spec.out).error, f"{type(err).__name__}: {err}\n".encode())
            raise

    return server


app = build_server_app()
