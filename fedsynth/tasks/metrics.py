"""Per-image image-quality metrics: PSNR, SSIM (MONAI), RMSE, and RMSE in HU for CT.

All on the normalised scale with ``data_range = 1.0`` (images in [0, 1]);
SSIM uses MONAI's defaults (11x11 Gaussian window, sigma 1.5, k1 0.01,
k2 0.03). For CT, RMSE in HU is the normalised RMSE times the width of the
ingestion window (2000 HU by default). Identical images give PSNR = inf.

    >>> m = image_metrics(pred, target)          # {"psnr": (N,), "ssim": (N,), "rmse": (N,)}
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DATA_RANGE", "image_metrics"]

#: The data range every metric assumes (images normalised to [0, 1]).
DATA_RANGE = 1.0


def image_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    hu_window: tuple[float, float] | None = None,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Per-image metrics of ``pred`` against ``target`` (both (N, H, W) in [0, 1]).

    Returns float64 arrays of length N under ``psnr``, ``ssim``, ``rmse``, and
    ``rmse_hu`` when ``hu_window`` is given.
    """
    from monai.metrics import PSNRMetric, SSIMMetric

    pred = np.asarray(pred, dtype=np.float32)
    target = np.asarray(target, dtype=np.float32)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must both be (N, H, W)")
    psnr_m = PSNRMetric(max_val=DATA_RANGE, reduction="none")
    ssim_m = SSIMMetric(spatial_dims=2, data_range=DATA_RANGE, reduction="none")
    psnr, ssim = [], []
    for s in range(0, len(pred), batch_size):
        p = torch.tensor(pred[s : s + batch_size], dtype=torch.float64).unsqueeze(1)  # copies: inputs may be read-only
        t = torch.tensor(target[s : s + batch_size], dtype=torch.float64).unsqueeze(1)
        psnr.append(psnr_m(p, t).reshape(-1).numpy())
        ssim.append(ssim_m(p, t).reshape(-1).numpy())
    diff = pred.astype(np.float64) - target.astype(np.float64)
    rmse = np.sqrt((diff**2).reshape(len(pred), -1).mean(axis=1))
    out = {"psnr": np.concatenate(psnr).astype(np.float64), "ssim": np.concatenate(ssim).astype(np.float64), "rmse": rmse}
    if hu_window is not None:
        out["rmse_hu"] = rmse * (hu_window[1] - hu_window[0])
    return out
