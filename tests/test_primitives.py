"""The primitives layer: digests, devices, process set-up and lazy package faces."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsynth.digests import array_digest, file_sha256, update_from_file
from fedsynth.errors import ConfigError
from fedsynth.runtime import LOOPBACK_ENV, apply_loopback_env, setup_logging


def _one_shot(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr, dtype="<f4")
    return hashlib.sha256(repr(tuple(arr.shape)).encode() + arr.tobytes()).hexdigest()


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1025, 2500])
def test_array_digest_streams_to_the_one_shot_hash(n: int) -> None:
    arr = np.random.default_rng(n).random((n, 3, 5))
    assert array_digest(arr) == _one_shot(arr)


def test_array_digest_binds_shape_and_float32_values() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert array_digest(a) == array_digest(a.astype(np.float64)) == array_digest(a.astype(">f4"))
    assert array_digest(a) != array_digest(a.reshape(3, 2, 4))
    b = a.copy()
    b[1, 2, 3] += 1e-3
    assert array_digest(a) != array_digest(b)


def test_privacy_names_are_array_digest() -> None:
    import fedsynth.privacy as privacy

    assert privacy.image_digest is array_digest and privacy.fingerprint is array_digest


def test_file_digests(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read block
    path.write_bytes(data)
    assert file_sha256(path) == "sha256:" + hashlib.sha256(data).hexdigest()
    h = hashlib.sha256(b"prefix")
    update_from_file(h, path)
    assert h.hexdigest() == hashlib.sha256(b"prefix" + data).hexdigest()


def test_resolve_device() -> None:
    import torch

    from fedsynth.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_loopback_env_keeps_an_operator_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LOOPBACK_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_DEDUP_LOGS", "1")
    apply_loopback_env()
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # Ray on loopback only
    assert os.environ["RAY_DEDUP_LOGS"] == "1"
    assert all(key in os.environ for key in LOOPBACK_ENV)


def test_setup_logging_leaves_a_configured_root_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    root, faiss = logging.getLogger(), logging.getLogger("faiss")
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(faiss, "level", logging.NOTSET)
    setup_logging(logging.INFO, only_if_unconfigured=True)
    assert faiss.level == logging.NOTSET and len(root.handlers) == 1
    setup_logging(logging.INFO)  # the CLI: the root keeps its handlers, faiss is quietened
    assert faiss.level == logging.WARNING and len(root.handlers) == 1
    setup_logging(logging.DEBUG)
    assert faiss.level == logging.DEBUG


def test_lazy_faces_resolve_every_name_and_import_nothing_heavy() -> None:
    # A fresh interpreter: importing the faces and the command modules (what `fedsynth --help`
    # needs of these packages) loads no torch, MONAI or faiss; every exported name then resolves.
    code = (
        "import sys, importlib\n"
        "faces = ['fedsynth.' + p for p in ('data', 'privacy', 'generative', 'report', 'tasks')]\n"
        "mods = [importlib.import_module(f) for f in faces]\n"
        "for f in faces: importlib.import_module(f + '.commands')\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'faiss') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "for m in mods:\n"
        "    assert m.__all__ == sorted(m.exports) and set(m.__all__) <= set(dir(m))\n"
        "    for name in m.__all__: getattr(m, name)\n"
        "    try: m.no_such_name\n"
        "    except AttributeError as err: assert m.__name__ in str(err)\n"
        "    else: raise AssertionError('no AttributeError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_quiet_console_keeps_the_terminal_to_progress_and_the_file_to_everything(tmp_path):
    """Other libraries' chatter goes to the study log only; the study's phases and fedsynth warnings stay visible."""
    import io
    import logging

    from fedsynth.runtime import quiet_console

    root = logging.getLogger()
    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    saved = {h: list(h.filters) for h in root.handlers}
    saved_flwr = list(logging.getLogger("flwr").handlers)
    old_level = root.level
    root.addHandler(console)
    try:
        quiet_console(tmp_path / "logs" / "study.log")
        logging.getLogger("flwr").warning("DEPRECATED FEATURE: something from Flower")
        logging.getLogger("alembic.runtime").info("setup plugin")
        logging.getLogger("fedsynth.data.ingest").info("ingested 192 slices")
        logging.getLogger("fedsynth.federation.study").info("phase 2/8 publish: start")
        logging.getLogger("fedsynth.federation.roster").warning("site site-2 dropped from the study")
        for h in root.handlers:
            h.flush()
        shown = stream.getvalue()
        assert "phase 2/8 publish" in shown and "site-2 dropped" in shown
        assert "Flower" not in shown and "ingested" not in shown and "plugin" not in shown
        logged = (tmp_path / "logs" / "study.log").read_text()
        assert "DEPRECATED FEATURE" in logged and "ingested 192 slices" in logged and "phase 2/8" in logged
    finally:
        root.removeHandler(console)
        for h in list(root.handlers):
            if isinstance(h, logging.FileHandler) and h.baseFilename.startswith(str(tmp_path)):
                root.removeHandler(h)
                h.close()
            elif h in saved:
                h.filters = saved[h]
        logging.getLogger("flwr").handlers = saved_flwr
        root.setLevel(old_level)


def test_machine_speed_is_measured_not_assumed() -> None:
    import torch

    from fedsynth.machine_speed import machine_speed

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = machine_speed(seconds=0.2, threads=1)
        assert m["conv_gflops"] > 0 and m["threads"] == 1 and m["cores"] >= 1 and m["cpu"]
        assert torch.get_num_threads() == 2  # the caller's thread count is restored
    finally:
        torch.set_num_threads(before)
