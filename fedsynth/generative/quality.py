"""How good is a site's generator, measured without any downloaded network.

Three numbers, each compared with two deliberately bad "generators" (a
baseline is the only way to read them):

``histogram_w1``
    1-D Wasserstein distance between the pixel-intensity distributions of the
    synthetic and the held-out real slices (``scipy.stats.wasserstein_distance``).
``ms_ssim_diversity``
    mean MS-SSIM over random pairs *within* the synthetic set (MONAI
    ``MultiScaleSSIMMetric``); lower means more diverse, and the real set's own
    value is reported beside it. MONAI's default (5 scales, 11-px kernel)
    needs images larger than 160 px, so the number of scales is reduced to
    what the image size allows (3 at 64x64, kernel 11; the first weights of
    the standard set, renormalised) and reported.
``frechet_ae``
    Fréchet distance between Gaussian fits of features from the site's *own*
    autoencoder encoder (per-channel mean and std of its deepest feature map).
    This is **not** Inception-FID: the feature space is trained on the site's
    data, numbers are not comparable across sites or with published FIDs, and
    with tens of images the covariance is rank-deficient, so only the ratio to
    the baselines computed in the same space is meaningful.

``fine_texture``
    RMS of the high-pass residual ``x - gaussian_filter(x, 1 px)`` inside the
    body (pixels above 0.1), averaged over images, with the real test slices'
    own value beside it. Why: the three numbers above barely see fine texture
    (scanner noise, small structures), yet a downstream denoiser trained on
    synthetic slices learns what "clean" looks like from exactly that texture;
    a generator whose samples are smoother than the real slices shows it here.

Baselines: ``noise`` (Gaussian noise with the real images' per-pixel mean and
std, clipped) and ``blurred_mean`` (the mean real slice, Gaussian-blurred,
repeated).

>>> report = evaluate_quality(gen, store.test_images(), Path("work/quality"))
>>> report["synthetic"]["frechet_ae"] < report["baselines"]["noise"]["frechet_ae"]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.errors import DataError
from fedsynth.io_utils import write_json_atomic

__all__ = ["QUALITY_FILE", "GRID_FILE", "NEAREST_FILE", "evaluate_quality", "save_nearest_grid", "fine_texture", "frechet_distance",
           "histogram_distance", "ms_ssim_diversity", "save_grid"]

log = logging.getLogger(__name__)

QUALITY_FILE = "quality.json"
GRID_FILE = "samples_vs_real.png"
NEAREST_FILE = "nearest_real.png"
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def histogram_distance(a: np.ndarray, b: np.ndarray, max_values: int = 200_000, seed: int = 0) -> float:
    """Wasserstein-1 distance between the intensity distributions of two image stacks."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(seed)
    fa, fb = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if fa.size > max_values:
        fa = rng.choice(fa, max_values, replace=False)
    if fb.size > max_values:
        fb = rng.choice(fb, max_values, replace=False)
    return float(wasserstein_distance(fa, fb))


def fine_texture(x: np.ndarray, sigma: float = 1.0, body: float = 0.1) -> float:
    """Mean over images of the RMS high-pass residual (``x`` minus its Gaussian blur) over body pixels."""
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x, np.float64)
    resid = x - gaussian_filter(x, sigma=(0, sigma, sigma))
    mask = x > body
    per = [float(np.sqrt(np.mean(r[m] ** 2))) for r, m in zip(resid, mask, strict=True) if m.any()]
    return float(np.mean(per)) if per else 0.0


def ms_ssim_settings(size: int) -> tuple[int, tuple[float, ...]]:
    """(kernel_size, weights) with as many scales as an image of edge ``size`` allows (MONAI's check)."""
    for kernel in (11, 7, 5, 3):
        for k in range(5, 1, -1):
            if size > (kernel - 1) * 2 ** (k - 1):
                w = np.asarray(_MS_SSIM_WEIGHTS[:k])
                if k >= 3 or kernel == 3:
                    return kernel, tuple(float(v) for v in w / w.sum())
    raise DataError(f"images of size {size} are too small for MS-SSIM")


def ms_ssim_diversity(images: np.ndarray, pairs: int = 128, seed: int = 0) -> dict[str, Any]:
    """Mean MS-SSIM over ``pairs`` random distinct pairs (lower: more diverse)."""
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).unsqueeze(1)
    n = len(x)
    if n < 2:
        raise DataError("MS-SSIM diversity needs at least 2 images")
    kernel, weights = ms_ssim_settings(int(x.shape[-1]))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # j != i
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel, weights=weights)
    vals = metric(x[i], x[j]).numpy().ravel()
    return {"mean": float(np.nanmean(vals)), "pairs": int(pairs), "scales": len(weights), "kernel_size": kernel}


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (rows = samples)."""
    from scipy import linalg

    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca = np.atleast_2d(np.cov(fa, rowvar=False)) if len(fa) > 1 else np.zeros((fa.shape[1],) * 2)
    cb = np.atleast_2d(np.cov(fb, rowvar=False)) if len(fb) > 1 else np.zeros((fb.shape[1],) * 2)
    import warnings

    with warnings.catch_warnings():  # tens of samples: the covariances are singular by construction
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(ca @ cb)
        if not np.isfinite(covmean).all():  # regularise as in the FID reference code
            eps = 1e-6 * np.eye(len(ca))
            covmean = linalg.sqrtm((ca + eps) @ (cb + eps))
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(np.real(covmean)))
    return max(d, 0.0)


def _baselines(real: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    mean, std = real.mean(0), real.std(0)
    noise = np.clip(mean + std * rng.standard_normal((n, *real.shape[1:])), 0, 1).astype(np.float32)
    blurred = gaussian_filter(mean, sigma=max(1.0, real.shape[-1] / 32))
    return {"noise": noise, "blurred_mean": np.repeat(blurred[None], n, 0).astype(np.float32)}


def save_grid(synthetic: np.ndarray, real: np.ndarray, path: Path, per_row: int = 8, rows: int = 2) -> Path:
    """PNG: ``rows`` rows of synthetic samples above ``rows`` rows of real slices.

    The real slices are evenly spaced through the stack: a store lists each
    patient's slices in order, so the first ``k`` would show one patient's
    neighbouring slices and hide the variety the samples should match.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = per_row * rows
    if len(real) > k:
        real = real[np.linspace(0, len(real) - 1, k).round().astype(int)]
    fig, axes = plt.subplots(2 * rows, per_row, figsize=(per_row * 1.2, 2 * rows * 1.3), squeeze=False)
    for r in range(2 * rows):
        src, label = (synthetic, "synthetic") if r < rows else (real, "real (held-out)")
        for c in range(per_row):
            ax, idx = axes[r, c], (r % rows) * per_row + c
            ax.axis("off")
            if idx < min(k, len(src)):
                ax.imshow(src[idx], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_title(label if r % rows == 0 else "", fontsize=8, loc="left")
    fig.tight_layout(pad=0.2)
    from fedsynth.io_utils import atomic_write

    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return path


def save_nearest_grid(synthetic: np.ndarray, real: np.ndarray, path: Path, n: int = 8) -> dict[str, Any]:
    """PNG: ``n`` samples (top row) above their nearest real slice (bottom row, exact pixel-RMSE search).

    The real side should be the generator's *training* slices: a sample that
    looks like its neighbour is the memorisation a person should see. The
    grid shows real slices, so it stays at the site (like ``samples_vs_real.png``).
    Returns the distances and indices shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedsynth.privacy import GateConfig, ReferenceIndex

    x = np.ascontiguousarray(synthetic[:n], np.float32)
    dist, idx = ReferenceIndex(np.ascontiguousarray(real, np.float32), GateConfig(metrics=["pixel_rmse"])).search(
        "pixel_rmse", x)
    fig, axes = plt.subplots(2, len(x), figsize=(len(x) * 1.2, 2 * 1.5), squeeze=False)
    for c in range(len(x)):
        for r, img in enumerate((x[c], real[idx[c]])):
            axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, c].axis("off")
        axes[1, c].text(0.5, -0.04, f"rmse {dist[c]:.3f}", fontsize=7, ha="center", va="top",
                        transform=axes[1, c].transAxes)
    axes[0, 0].set_title("synthetic", fontsize=8, loc="left")
    fig.suptitle("nearest real training slice (bottom) of each sample (top)", fontsize=8)
    fig.tight_layout(pad=0.2)
    from fedsynth.io_utils import atomic_write

    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return {"pixel_rmse": [float(d) for d in dist], "index": [int(i) for i in idx]}


def _metrics(x: np.ndarray, real: np.ndarray, real_feats: np.ndarray | None, gen: Any, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(x), "histogram_w1": histogram_distance(x, real, seed=seed),
                           "fine_texture": fine_texture(x)}
    out["ms_ssim_diversity"] = ms_ssim_diversity(x, seed=seed)["mean"] if len(x) > 1 else None
    if real_feats is not None:
        out["frechet_ae"] = frechet_distance(gen.features(x), real_feats)
    return out


def evaluate_quality(
    gen_or_samples: Any,
    real_test_images: np.ndarray,
    out: Path,
    *,
    generator: Any = None,
    n: int = 64,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    real_reference: np.ndarray | None = None,
    two_sample_real: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Measure synthetic vs held-out real slices; write ``out/quality.json`` and ``out/samples_vs_real.png``.

    ``gen_or_samples`` is a loaded generator (``n`` samples are drawn with
    ``seed``/``steps``/``sampler``) or an (N, H, W) stack; in the latter case
    pass ``generator=`` to get the Fréchet distance in its encoder's space.
    ``real_reference`` (e.g. the training slices) adds a real-vs-real row,
    the floor a perfect generator would reach. ``two_sample_real`` (real
    slices and their patient ids — never the test patients) adds the
    classifier two-sample test (:mod:`fedsynth.generative.two_sample`):
    synthetic vs those slices, and its real-vs-real floor.
    """
    out = Path(out)
    if hasattr(gen_or_samples, "sample"):
        generator = gen_or_samples
        synth = generator.sample(n, steps=steps, seed=seed, sampler=sampler)
    else:
        synth = np.asarray(gen_or_samples, np.float32)
    real = np.asarray(real_test_images, np.float32)
    if real.ndim != 3 or len(real) < 2:
        raise DataError(f"need at least 2 real test images as an (N, H, W) stack, got shape {real.shape}")
    if synth.ndim != 3 or len(synth) < 2:
        raise DataError(f"need at least 2 synthetic images as an (N, H, W) stack, got shape {synth.shape}")
    if synth.shape[1:] != real.shape[1:]:
        from fedsynth.generative.train import prepare_images

        real = prepare_images(real, synth.shape[-1])[:, 0].numpy()
    # the Fréchet distance lives in a latent generator's encoder space; a pixel generator has no encoder
    real_feats = generator.features(real) if hasattr(generator, "features") else None
    kernel, weights = ms_ssim_settings(int(real.shape[-1]))
    report: dict[str, Any] = {
        "image_size": int(real.shape[-1]),
        "n_real_test": len(real),
        "notes": {
            "frechet_ae": "Fréchet distance in the site's own autoencoder-encoder feature space; NOT Inception-FID; "
                          "compare only with the baselines in this file",
            "ms_ssim": f"{len(weights)} scales, kernel {kernel} (MONAI MultiScaleSSIMMetric, reduced for the image size)",
            "histogram_w1": "Wasserstein-1 between pixel-intensity distributions, intensities in [0, 1]",
            "fine_texture": "RMS of x - gaussian_filter(x, 1 px) over pixels > 0.1; compare with real_test_fine_texture",
        },
        "synthetic": _metrics(synth, real, real_feats, generator, seed),
        "real_test_diversity": ms_ssim_diversity(real, seed=seed)["mean"],
        "real_test_fine_texture": fine_texture(real),
        "baselines": {k: _metrics(v, real, real_feats, generator, seed)
                      for k, v in _baselines(real, max(len(synth), 2), seed).items()},
    }
    if real_reference is not None:
        ref = np.asarray(real_reference, np.float32)
        if ref.shape[1:] != real.shape[1:]:
            from fedsynth.generative.train import prepare_images

            ref = prepare_images(ref, real.shape[-1])[:, 0].numpy()
        report["real_train_vs_test"] = _metrics(ref, real, real_feats, generator, seed)
        from fedsynth.generative.noise_spectrum import compare_noise_spectra

        try:  # the samples' fine-scale power against the generator's own training slices
            report["noise_spectrum"] = compare_noise_spectra(synth, ref, seed=seed)
        except DataError as err:
            report["noise_spectrum"] = {"skipped": str(err)}
    if two_sample_real is not None:
        from fedsynth.generative.two_sample import two_sample_report

        ts_images, ts_groups = np.asarray(two_sample_real[0], np.float32), np.asarray(two_sample_real[1])
        if ts_images.shape[1:] != synth.shape[1:]:
            from fedsynth.generative.train import prepare_images

            ts_images = prepare_images(ts_images, synth.shape[-1])[:, 0].numpy()
        report["two_sample"] = two_sample_report(ts_images, ts_groups, synth, seed=seed)
        report["notes"]["two_sample"] = ("held-out ROC AUC of a CNN trained from scratch to tell the two sets apart "
                                         "(0.5: it cannot); real_vs_real is the floor from two halves of the "
                                         "site's own patients")
    if generator is not None:
        report["generator"] = {"checkpoint_hash": generator.checkpoint_hash,
                               "sampler": sampler or generator.config.sampler,
                               "steps": steps or generator.config.sample_steps, "seed": seed}
    out.mkdir(parents=True, exist_ok=True)
    save_grid(synth, real, out / GRID_FILE)
    files = {"json": str(out / QUALITY_FILE), "grid": str(out / GRID_FILE)}
    if real_reference is not None:
        report["nearest_training"] = save_nearest_grid(synth, ref, out / NEAREST_FILE)
        files["nearest"] = str(out / NEAREST_FILE)
    write_json_atomic(out / QUALITY_FILE, report)
    report["files"] = files
    return report
