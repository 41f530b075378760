"""Small synthetic "patients" for gate tests: smooth blobs on a zero background."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def patient_slices(rng: np.random.Generator, n: int, size: int = 24) -> np.ndarray:
    """``n`` slices of one patient: a shared anatomy that drifts slowly from slice to slice."""
    base = gaussian_filter(rng.standard_normal((size, size)), 2.5)
    drift = gaussian_filter(rng.standard_normal((size, size)), 2.5)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    body = (((yy - c) / (0.36 * size)) ** 2 + ((xx - c) / (0.3 * size)) ** 2) < 1  # zero border of >= 4 px
    out = []
    for k in range(n):
        img = base + 0.15 * k * drift + 0.05 * rng.standard_normal((size, size))
        img = (img - img.min()) / (img.max() - img.min() + 1e-9)
        out.append(0.1 + 0.6 * img * body * (1 if k % 2 else 1) - 0.1 * (~body))
    return np.clip(np.stack(out), 0, 0.7).astype(np.float32)


def cohort(seed: int, patients: int = 5, per_patient: int = 6, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(images, patient_ids) for ``patients`` patients."""
    rng = np.random.default_rng(seed)
    imgs = [patient_slices(rng, per_patient, size) for _ in range(patients)]
    ids = np.repeat([f"pt{p}" for p in range(patients)], per_patient)
    return np.concatenate(imgs), ids


# --- plain numpy brute force (exactness checks) ---

BORDER = 4  # background margin: circular and zero-filled shifts up to 4 px agree


def slices(n: int, size: int = 24, seed: int = 0, peak: float = 0.7) -> np.ndarray:
    """(n, size, size) float32 smooth random "anatomy" in [0, peak] with a zero background border."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((n, size, size)), (0, 2, 2))
    x -= x.min(axis=(1, 2), keepdims=True)
    x /= x.max(axis=(1, 2), keepdims=True)
    x[:, :BORDER], x[:, -BORDER:], x[:, :, :BORDER], x[:, :, -BORDER:] = 0, 0, 0, 0
    return (peak * x).astype(np.float32)


def _std(a: np.ndarray) -> np.ndarray:
    f = a.reshape(len(a), -1).astype(np.float64)
    f = f - f.mean(axis=1, keepdims=True)
    nrm = np.linalg.norm(f, axis=1, keepdims=True)
    return np.divide(f, nrm, out=np.zeros_like(f), where=nrm > 1e-12)


def brute_rmse(cands: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """(B, N) pixel RMSE, float64, by explicit differences."""
    c = cands.reshape(len(cands), 1, -1).astype(np.float64)
    r = refs.reshape(1, len(refs), -1).astype(np.float64)
    return np.sqrt(((c - r) ** 2).mean(axis=2))


def brute_ncc(cands: np.ndarray, refs: np.ndarray, max_shift: int = 4, flips: bool = True) -> np.ndarray:
    """(B, N) ncc_robust distance: 1 - max over flips x circular shifts of the Pearson correlation (np.roll)."""
    zr = _std(refs)
    out = np.full((len(cands), len(refs)), np.inf)
    for i, c in enumerate(cands.astype(np.float64)):
        variants = [c] + ([c[:, ::-1], c[::-1, :], c[::-1, ::-1]] if flips else [])
        best = np.full(len(refs), -np.inf)
        for v in variants:
            for dy in range(-max_shift, max_shift + 1):
                for dx in range(-max_shift, max_shift + 1):
                    z = _std(np.roll(v, (dy, dx), axis=(0, 1))[None])[0]
                    best = np.maximum(best, zr @ z)
        out[i] = 1.0 - best
    return out


def ct_slices(patients: int, slices: int, size: int, seed: int = 0) -> np.ndarray:
    """(patients * slices, size, size) CT slices in [0, 1] from the bundled cohort's phantom generator."""
    import fedsynth.data.cohort as cohort_gen
    from fedsynth.data.normalise import hu_to_unit

    out = []
    for p in range(patients):
        site = p % 3 + 1
        scanner = cohort_gen.site_scanners("ct", site, seed)[site - 1]
        rng = np.random.default_rng([seed, site, p])
        img = cohort_gen.render_ct_patient(cohort_gen.sample_ct_patient(rng, scanner.patient_mix), slices, size,
                                           scanner.fov)
        out.append(hu_to_unit(cohort_gen.apply_ct_scanner(img, scanner, rng)).astype(np.float32))
    return np.concatenate(out)
