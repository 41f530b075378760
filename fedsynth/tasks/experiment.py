"""Train on one image set, test on another, and write the evidence (``fedsynth evaluate``).

The typical use: train on a site's synthetic (gate-approved) images, test on
its held-out real images, and compare with the same network trained on the
real training images. The degraded input is scored too (the "do nothing"
baseline), so every metrics file says how much the network actually adds.

Writes into ``out``: ``metrics.json`` (config, training history, per-image
and summary metrics of the network and of the input), ``report.json`` (the
report schema, methods ``network`` and ``input``, with paired comparisons),
``model.pt`` (weights + config) and ``examples.npz`` (a few input / output /
target images for the HTML report).

    >>> result = train_and_evaluate(train_images, test_images, cfg, Path("runs/eval"))
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.io_utils import write_bytes_atomic, write_json_atomic
from fedsynth.report.stats import DEFAULT_MARGINS
from fedsynth.tasks.config import TaskConfig
from fedsynth.tasks.degrade import check_images, make_pairs
from fedsynth.tasks.evaluate import evaluate_pairs
from fedsynth.tasks.training import save_network, train_network

__all__ = ["TEST_SEED_OFFSET", "train_and_evaluate"]

log = logging.getLogger(__name__)

#: Test degradations use ``cfg.seed + TEST_SEED_OFFSET`` so test noise never repeats training noise.
TEST_SEED_OFFSET = 1_000_000


def train_and_evaluate(
    train_images: np.ndarray,
    test_images: np.ndarray,
    cfg: TaskConfig,
    out: str | Path,
    progress: bool = True,
    sources: dict[str, str] | None = None,
    n_examples: int = 4,
    train_pixel_mm: float | np.ndarray | None = None,
    test_pixel_mm: float | np.ndarray | None = None,
) -> dict[str, Any]:
    """Train ``cfg.network`` on ``train_images``, score it on ``test_images``; write files to ``out``.

    Returns the content of ``metrics.json``.
    """
    from fedsynth.report import compare, summarise, write_report

    out = Path(out)
    t0 = time.perf_counter()
    train_images = check_images(train_images, "training images")
    test_images = check_images(test_images, "test images")
    out.mkdir(parents=True, exist_ok=True)
    model, history = train_network(train_images, cfg, workdir=out / "train", progress=progress,
                                   pixel_mm=train_pixel_mm)
    t_train = time.perf_counter() - t0
    inputs, targets = make_pairs(test_images, cfg, cfg.seed + TEST_SEED_OFFSET, test_pixel_mm)
    metrics, outputs = evaluate_pairs(model, inputs, targets, cfg)
    t_eval = time.perf_counter() - t0 - t_train
    net = {k: v for k, v in metrics.items() if not k.startswith("input_")}
    inp = {k[len("input_"):]: v for k, v in metrics.items() if k.startswith("input_")}
    per_image = {cfg.network: {"test": net}, "input": {"test": inp}}
    margins = {k: v for k, v in DEFAULT_MARGINS.items() if k in net}
    summary = summarise(per_image, seed=cfg.seed)
    comparisons = compare(per_image, "input", margins, seed=cfg.seed)
    result: dict[str, Any] = {
        "task": cfg.task,
        "network": cfg.network,
        "config": cfg.model_dump(mode="json"),
        "sources": sources or {},
        "n_train": int(len(train_images)),
        "n_test": int(len(test_images)),
        "test_seed": cfg.seed + TEST_SEED_OFFSET,
        "data_range": 1.0,
        "history": {k: v for k, v in history.items() if k != "epochs"},
        "epochs": history["epochs"],
        "summary": {"network": summary[cfg.network]["pooled"], "input": summary["input"]["pooled"]},
        "per_image": {"network": {k: v.tolist() for k, v in net.items()},
                      "input": {k: v.tolist() for k, v in inp.items()}},
        "wall_seconds": {"train": t_train, "evaluate": t_eval},
    }
    write_json_atomic(out / "metrics.json", result)
    save_network(model, cfg, out / "model.pt")
    k = min(n_examples, len(test_images))
    buf = io.BytesIO()
    np.savez_compressed(buf, input=inputs[:k], output=outputs[:k], target=targets[:k])
    write_bytes_atomic(out / "examples.npz", buf.getvalue())
    write_report(out, {
        "methods": summary,
        "comparisons": comparisons,
        "wall_seconds": result["wall_seconds"],
        "task": cfg.task,
        "network": cfg.network,
        "notes": [
            f"{cfg.network} trained on {len(train_images)} images ({(sources or {}).get('train', 'given')}), "
            f"tested on {len(test_images)} images ({(sources or {}).get('test', 'given')}); 'input' is the "
            "degraded input scored against the target (no network).",
            f"Comparisons are {cfg.network} − input, paired over the test images; margins {margins}.",
        ],
    })
    log.info("wrote %s (network PSNR %.2f dB vs input %.2f dB)", out / "metrics.json",
             float(np.mean(net["psnr"])), float(np.mean(inp["psnr"])))
    return result
