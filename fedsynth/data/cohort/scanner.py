"""Site scanners: what makes the bundled sites non-IID.

Real multi-site data differ less by anatomy than by acquisition: noise level
(dose, field strength), in-plane resolution (reconstruction kernel), field of
view, calibration drift, MRI bias fields and contrast, and which patients a
hospital sees. Each :class:`SiteScanner` holds one value of each knob; the
first three sites are fixed and documented (``docs/data.md``), further sites
are drawn from the cohort seed.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy.ndimage import gaussian_filter

from fedsynth.config import StrictModel

__all__ = ["SiteScanner", "apply_ct_scanner", "apply_mri_scanner", "apply_pet_scanner", "pet_noise", "site_scanners"]


class SiteScanner(StrictModel):
    """Acquisition knobs of one site (see ``docs/data.md`` for their effect)."""

    noise: float = Field(ge=0, description="CT: noise SD in HU; MRI: Rician noise SD relative to white matter")
    blur_px: float = Field(ge=0, description="in-plane Gaussian blur SD in pixels (reconstruction kernel)")
    gain: float = Field(gt=0, description="CT: HU calibration gain; MRI: receiver gain (signal units)")
    offset: float = Field(description="CT: HU calibration offset; MRI: unused (0)")
    fov: float = Field(gt=0, description="relative field of view (>1 shows more around the body)")
    bias: float = Field(ge=0, description="MRI: amplitude of the multiplicative bias field; CT: 0")
    contrast: float = Field(gt=0, description="MRI: scale of the grey/white-matter contrast; CT: 1")
    patient_mix: float = Field(description="CT: habitus (body size/fat); MRI: age (ventricles, lesions)")
    orientation: str = Field(pattern="^[RL][AP][SI]$", description="stored voxel axis codes")
    counts: float | None = Field(None, gt=0, description="PET: true coincidences per slice (dose x time x "
                                 "sensitivity); sets the reconstruction noise. CT/MRI: None")


_CT_SITES = [
    SiteScanner(noise=10, blur_px=0.4, gain=1.0, offset=0, fov=1.00, bias=0, contrast=1, patient_mix=0.0,
                orientation="RAS"),
    SiteScanner(noise=22, blur_px=0.9, gain=1.03, offset=15, fov=1.12, bias=0, contrast=1, patient_mix=0.8,
                orientation="LPS"),
    SiteScanner(noise=15, blur_px=0.0, gain=0.97, offset=-10, fov=0.92, bias=0, contrast=1, patient_mix=-0.7,
                orientation="LAS"),
]
_MRI_SITES = [
    SiteScanner(noise=0.02, blur_px=0.3, gain=900, offset=0, fov=1.0, bias=0.10, contrast=1.0, patient_mix=-0.3,
                orientation="RAS"),
    SiteScanner(noise=0.045, blur_px=0.8, gain=400, offset=0, fov=1.1, bias=0.25, contrast=0.8, patient_mix=0.8,
                orientation="LPS"),
    SiteScanner(noise=0.03, blur_px=0.0, gain=1500, offset=0, fov=0.95, bias=0.05, contrast=1.2, patient_mix=0.0,
                orientation="LAS"),
]

# PET: resolution (a modern PSF-modelling PET/CT, an older scanner, a mid one), counts per slice at each
# site's protocol (injected activity x minutes per bed x sensitivity), SUV calibration error, field of view.
_PET_SITES = [
    SiteScanner(noise=0, blur_px=0.8, gain=1.0, offset=0, fov=1.0, bias=0, contrast=1, patient_mix=0.0,
                orientation="RAS", counts=4e5),
    SiteScanner(noise=0, blur_px=1.4, gain=1.08, offset=0, fov=1.12, bias=0, contrast=1, patient_mix=0.8,
                orientation="LPS", counts=1.2e5),
    SiteScanner(noise=0, blur_px=1.0, gain=0.95, offset=0, fov=0.92, bias=0, contrast=1, patient_mix=-0.7,
                orientation="LAS", counts=2.5e5),
]


def site_scanners(modality: str, n_sites: int, seed: int) -> list[SiteScanner]:
    """The first three documented sites, then sites drawn from ``seed``."""
    fixed = {"ct": _CT_SITES, "mri": _MRI_SITES, "pet": _PET_SITES}[modality]
    out = list(fixed[:n_sites])
    rng = np.random.default_rng([seed, 7919])
    codes = ["RAS", "LPS", "LAS", "RPS"]
    while len(out) < n_sites:
        if modality == "ct":
            out.append(SiteScanner(noise=float(rng.uniform(8, 25)), blur_px=float(rng.uniform(0, 1)),
                                   gain=float(rng.uniform(0.96, 1.04)), offset=float(rng.uniform(-20, 20)),
                                   fov=float(rng.uniform(0.9, 1.15)), bias=0, contrast=1,
                                   patient_mix=float(rng.uniform(-1, 1)), orientation=str(rng.choice(codes))))
        elif modality == "pet":
            out.append(SiteScanner(noise=0, blur_px=float(rng.uniform(0.7, 1.5)), gain=float(rng.uniform(0.93, 1.08)),
                                   offset=0, fov=float(rng.uniform(0.9, 1.15)), bias=0, contrast=1,
                                   patient_mix=float(rng.uniform(-1, 1)), orientation=str(rng.choice(codes)),
                                   counts=float(10 ** rng.uniform(5.0, 5.7))))
        else:
            out.append(SiteScanner(noise=float(rng.uniform(0.015, 0.05)), blur_px=float(rng.uniform(0, 1)),
                                   gain=float(rng.uniform(300, 1500)), offset=0, fov=float(rng.uniform(0.9, 1.1)),
                                   bias=float(rng.uniform(0, 0.3)), contrast=float(rng.uniform(0.8, 1.2)),
                                   patient_mix=float(rng.uniform(-1, 1)), orientation=str(rng.choice(codes))))
    return out


def _blur(vol: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(vol, (0, sigma, sigma)) if sigma > 0 else vol


def apply_ct_scanner(hu: np.ndarray, s: SiteScanner, rng: np.random.Generator) -> np.ndarray:
    """Blur, calibration drift and in-plane-correlated noise; returns integer HU clipped to [-1024, 3071]."""
    vol = _blur(hu, s.blur_px) * s.gain + s.offset
    noise = gaussian_filter(rng.standard_normal(vol.shape).astype(np.float32), (0, 0.7, 0.7))
    noise *= s.noise / max(float(noise.std()), 1e-6)
    # Quantum noise is weaker in air (few photons are absorbed), strongest in dense tissue.
    weight = np.clip((vol + 1000.0) / 1000.0, 0.2, 1.5)
    return np.clip(np.rint(vol + noise * weight), -1024, 3071)


def apply_mri_scanner(signal: np.ndarray, s: SiteScanner, rng: np.random.Generator) -> np.ndarray:
    """Contrast, bias field, blur and Rician noise; returns non-negative signal units."""
    wm = 0.80
    vol = np.where(signal > 0.3, wm + (signal - wm) * s.contrast, signal)
    z, h, w = vol.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    c = rng.normal(0, 1, 5)
    field = 1.0 + s.bias * np.tanh(c[0] * xx + c[1] * yy + 0.5 * c[2] * xx * yy + 0.5 * c[3] * xx**2 + 0.5 * c[4] * yy**2)
    vol = _blur(vol * field[None].astype(np.float32), s.blur_px)
    re = vol + rng.normal(0, s.noise * wm, vol.shape)
    im = rng.normal(0, s.noise * wm, vol.shape)
    return np.sqrt(re * re + im * im).astype(np.float32) * s.gain



def pet_noise(activity: np.ndarray, counts: float, rng: np.random.Generator, postfilter_px: float = 1.0) -> np.ndarray:
    """The reconstruction noise of a PET scan of each slice of ``activity`` with ``counts`` coincidences; (N, H, W).

    Why in the projection domain: PET noise is Poisson on the detected
    coincidences, and reconstruction turns it into the blotchy, spatially
    correlated texture of a PET image. Per slice: line integrals of the
    activity (scikit-image ``radon``), scaled so that the slice's expected
    coincidences are ``counts``; Poisson counts; the difference
    reconstructed by filtered back-projection with a Hann window
    (``iradon``), smoothed by the usual Gaussian post-filter
    (``postfilter_px``, SD in pixels). A clinical scanner reconstructs with
    OSEM, whose noise follows the local activity (cold regions are quiet,
    no streaks leave the body); FBP spreads it evenly, so the noise is
    finally weighted by ``sqrt(local activity / mean activity in the body)``
    (clipped to 2): OSEM's kind of noise at FBP's cost, an approximation
    stated in docs/data.md. Scale-free: the activity's units do not matter.
    """
    from skimage.transform import iradon, radon

    act = np.clip(np.asarray(activity, dtype=np.float64), 0.0, None)
    size = act.shape[-1]
    theta = np.linspace(0.0, 180.0, max(16, int(np.ceil(np.pi / 2 * size))), endpoint=False)
    out = np.zeros(act.shape, dtype=np.float32)
    for i, img in enumerate(act):
        sino = radon(img, theta=theta, circle=False)
        total = float(sino.sum())
        if total <= 0:
            continue
        scale = counts / total  # expected coincidences per unit of line integral, over every view and bin
        noisy = rng.poisson(np.clip(sino, 0.0, None) * scale) / scale
        noise = iradon(noisy - sino, theta=theta, circle=False, filter_name="hann", output_size=size)
        if postfilter_px > 0:
            noise = gaussian_filter(noise, postfilter_px)
        smooth = gaussian_filter(img, 2.0)
        body = smooth > 0.05 * smooth.max()
        weight = np.sqrt(np.clip(smooth / max(float(smooth[body].mean()), 1e-12), 0.0, 4.0))
        out[i] = noise * weight
    return out


def apply_pet_scanner(suv: np.ndarray, s: SiteScanner, rng: np.random.Generator) -> np.ndarray:
    """Resolution, SUV calibration and count-limited reconstruction noise (:func:`pet_noise`); SUV, non-negative."""
    if s.counts is None:
        raise ValueError("a PET scanner needs counts per slice")
    vol = _blur(np.clip(suv, 0.0, None), s.blur_px) * s.gain
    return np.clip(vol + pet_noise(vol, s.counts, rng), 0.0, None).astype(np.float32)
