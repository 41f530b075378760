"""``fedsynth evaluate`` and ``fedsynth report`` end to end on tiny .npy stacks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fixtures.images import body_discs

from fedsynth.cli import main


@pytest.fixture
def sets(tmp_path):
    np.save(tmp_path / "train.npy", body_discs(6, 32, seed=1))
    np.save(tmp_path / "test.npy", body_discs(4, 32, seed=2))
    return tmp_path


def test_evaluate_then_report(sets, capsys) -> None:
    out = sets / "run"
    rc = main(["evaluate", "--task", "ldct", "--pixel-mm", "6", "--train", str(sets / "train.npy"), "--test", str(sets / "test.npy"),
               "--out", str(out), "--network", "unet", "--channels", "8", "--epochs", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "fedsynth report" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_train"] == 6 and m["n_test"] == 4 and m["network"] == "unet" and m["config"]["epochs"] == 2
    assert len(m["per_image"]["network"]["psnr"]) == 4 and len(m["per_image"]["input"]["rmse_hu"]) == 4
    assert m["summary"]["network"]["psnr"]["mean"] == pytest.approx(np.mean(m["per_image"]["network"]["psnr"]))
    for name in ("report.json", "model.pt", "examples.npz"):
        assert (out / name).is_file()
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert not re.search(r"https?:", html) and html.count("data:image/png;base64,") == 4


def test_evaluate_config_file_and_sr(sets) -> None:
    (sets / "task.toml").write_text('[task]\ntask = "sr"\nnetwork = "srcnn"\nchannels = 8\nepochs = 1\n')
    out = sets / "sr"
    assert main(["evaluate", "--config", str(sets / "task.toml"), "--train", str(sets / "train.npy"),
                 "--test", str(sets / "test.npy"), "--out", str(out), "--sr-factor", "4"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["sr_factor"] == 4 and "rmse_hu" not in m["per_image"]["network"]


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--task", "ldct", "--train", "{d}/missing.npy"], "missing.npy"),
        (["--task", "ldct", "--epochs", "0", "--train", "{d}/train.npy"], "epochs"),
        (["--train", "{d}/train.npy"], "--task"),
        (["--task", "ldct", "--train", "{d}/bad.npy"], "bad.npy"),
    ],
)
def test_evaluate_user_errors_are_one_line(sets, capsys, argv, expect) -> None:
    np.save(sets / "bad.npy", np.full((2, 32, 32), 5.0, np.float32))
    argv = [a.format(d=sets) for a in argv] + ["--test", str(sets / "test.npy"), "--out", str(sets / "o")]
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedsynth: error:") and "\n" not in err and expect in err


def test_report_errors(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "report.json: no such file" in capsys.readouterr().err
    (tmp_path / "report.json").write_text('{"methods": 3}')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "key 'methods'" in err and "\n" not in err
