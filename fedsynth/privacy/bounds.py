"""Cheap, provable bounds on the gate's distances, so exact search can skip most pairs.

The gate must find every candidate's *true* nearest real image. A flat search
computes every pair at full resolution; these bounds let the search discard
a pair from a few hundred numbers instead, and re-check exactly only the
pairs a bound cannot rule out. Every bound below is a theorem, not a
heuristic, so pruning with it never changes the answer.

``pixel_rmse`` (lower bound on the squared distance)
    P = orthogonal projection onto the low spatial frequencies
    ``max(|k_y|, |k_x|) <= k`` (a real Fourier basis with Parseval weights,
    so ``P x`` is a vector of 2(2k+1)(k+1) numbers) and ``r(x) = |(1 - P) x|``::

        |x - y|^2 = |P(x - y)|^2 + |(1 - P)(x - y)|^2
                 >= |P x - P y|^2 + (r(x) - r(y))^2

    (triangle inequality for the second term), i.e. the squared L2 distance
    between the short vectors ``[P x, r(x)]``: a flat faiss index over them
    yields lower bounds. Measured on CT slices (docs/privacy.md), k = 12 at
    64x64 (651 numbers) leaves a median of 5 of 10,000 references that the
    bound cannot rule out; 4x4 block means (257 numbers) leave 108.

``ncc_robust`` (upper bound on max over transforms T of <T z_x, z_y>)
    z are standardised images (zero mean, unit norm). Split the 2-D spectrum
    (real FFT, Parseval weights) into three orthogonal parts by the square
    bands ``max(|k_y|, |k_x|) <= kp`` (*phase* part), ``kp < . <= km``
    (*magnitude* part) and the rest (*residual*). Circular shifts and flips
    map each band onto itself, so they commute with the projections, and::

        <T z_x, z_y> <= max_T <T P z_x, P z_y>             (phase part, exact per shift)
                      + sum_band w |X_k^f| |Y_k|             (magnitude: any shift)
                      + |(1 - P_km) z_x| |(1 - P_km) z_y|    (Cauchy-Schwarz)

    In the phase band a shift is a phase rotation, so all 324 transforms of
    the low-passed candidate are a small (T, d) matrix. The magnitude term
    depends on the flip only through ``|X(-k_y, k_x)|`` (a horizontal or
    vertical flip) vs ``|X(k_y, k_x)|`` (identity or both flips), so it is
    two inner products per pair. With ``kp = 0`` the bound is shift- and
    flip-invariant up to those two variants: the cheap first stage.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "QueryParts",
    "SpectralStage",
    "exact_correlation",
    "flip_spectra",
    "magnitude_band",
    "ncc_stages",
    "phase_band",
    "phase_band_transformed",
    "pixel_bound_rows",
    "pixel_frequencies",
    "spectra",
    "spectral_residual",
]


def _max_k(h: int, w: int) -> int:
    return min((h - 1) // 2, (w - 1) // 2)


@lru_cache(maxsize=64)
def _band(h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed row freqs, column freqs (rfft half plane) and sqrt(Parseval weight / HW) of the band |k|inf <= k."""
    k = min(k, _max_k(h, w))
    ky = np.r_[np.arange(0, k + 1), np.arange(-k, 0)]
    kx = np.arange(0, k + 1)
    weight = np.broadcast_to(np.where(kx == 0, 1.0, 2.0), (len(ky), len(kx)))  # kx > 0 bins stand for their conjugates
    scale = np.sqrt(weight / (h * w)).astype(np.float32)
    for a in (ky, kx, scale):
        a.flags.writeable = False
    return ky, kx, scale


@lru_cache(maxsize=64)
def _shift_phases(h: int, w: int, k: int, max_shift: int) -> np.ndarray:
    """(S, 2k+1, k+1) complex64: rolling by (dy, dx) multiplies bin (k_y, k_x) by exp(-2 pi i (k_y dy/H + k_x dx/W))."""
    ky, kx, _ = _band(h, w, k)
    s = np.arange(-max_shift, max_shift + 1)
    sy, sx = np.meshgrid(s, s, indexing="ij")
    phase = np.exp(-2j * np.pi * (sy.reshape(-1, 1, 1) * ky[None, :, None] / h
                                  + sx.reshape(-1, 1, 1) * kx[None, None, :] / w)).astype(np.complex64)
    phase.flags.writeable = False
    return phase


def _rows_of(spectrum: np.ndarray, h: int, k: int) -> np.ndarray:
    """Rows k_y = 0..k, -k..-1 of the spectrum and columns 0..k, by slicing (no fancy-index copy of the whole)."""
    top = spectrum[:, : k + 1, : k + 1]
    return np.concatenate([top, spectrum[:, h - k :, : k + 1]], axis=1) if k > 0 else top


def spectra(z: np.ndarray) -> np.ndarray:
    """(N, H, W) → rfft2 spectra (N, H, W//2+1) complex64 (scipy's FFT, all cores)."""
    import scipy.fft

    return scipy.fft.rfft2(np.asarray(z, np.float32), workers=-1 if len(z) >= 64 else 1)


def phase_band(spectrum: np.ndarray, h: int, w: int, kp: int) -> np.ndarray:
    """rfft2 spectra (N, H, W//2+1) → (N, d) real rows whose inner products are those of the low-passed images."""
    _, _, scale = _band(h, w, kp)
    f = _rows_of(spectrum, h, min(kp, _max_k(h, w))) * scale
    n = len(spectrum)
    return np.concatenate([f.real.reshape(n, -1), f.imag.reshape(n, -1)], axis=1)


def magnitude_band(spectrum: np.ndarray, h: int, w: int, kp: int, km: int) -> np.ndarray:
    """(N, d') weighted magnitudes |X_k| of the band kp < |k|inf <= km."""
    ky, kx, scale = _band(h, w, km)
    mag = np.abs(_rows_of(spectrum, h, min(km, _max_k(h, w)))) * scale
    keep = np.maximum(np.abs(ky)[:, None], kx[None, :]) > kp
    return mag[:, keep]


def spectral_residual(spectrum: np.ndarray, h: int, w: int, km: int) -> np.ndarray:
    """|(1 - P_km) z| per image (float64): Parseval over the bins *outside* the band, summed directly.

    Summing the outside bins (rather than subtracting the inside from the
    total) keeps the value accurate when it is small, which the bound needs.
    """
    km = min(km, _max_k(h, w))
    wcol = np.full(spectrum.shape[2], 2.0)
    wcol[0] = 1.0
    if w % 2 == 0:
        wcol[-1] = 1.0  # the Nyquist column has no separate conjugate
    outside = np.ones(spectrum.shape[1:], dtype=bool)
    ky = np.fft.fftfreq(h, 1.0 / h).astype(int)
    outside[(np.abs(ky)[:, None] <= km) & (np.arange(spectrum.shape[2])[None, :] <= km)] = False
    weight = outside * wcol
    out = np.empty(len(spectrum))
    for i in range(0, len(spectrum), 256):  # in cache-sized chunks: the float64 copies cost 5x more whole
        part = spectrum[i : i + 256]
        power = part.real.astype(np.float64) ** 2 + part.imag.astype(np.float64) ** 2
        out[i : i + 256] = np.einsum("nij,ij->n", power, weight)
    return np.sqrt(out / (h * w))


def flip_spectra(z: np.ndarray, flips: bool) -> np.ndarray:
    """(B, H, W) → (V, B, H, W//2+1): spectra of the identity and (with ``flips``) the h-, v- and hv-flipped images."""
    variants = [z]
    if flips:
        variants += [z[:, :, ::-1], z[:, ::-1, :], z[:, ::-1, ::-1]]
    return spectra(np.concatenate(variants)).reshape(len(variants), *z.shape[:-1], -1)


def phase_band_transformed(variant_spectra: np.ndarray, h: int, w: int, kp: int, max_shift: int) -> np.ndarray:
    """(V, B, H, W//2+1) flip spectra → (B, V * S, d) float32: phase-band rows of every flip x circular shift.

    Rolling by (dy, dx) multiplies bin (k_y, k_x) by exp(-2 pi i (k_y dy / H + k_x dx / W)).
    The transform order is irrelevant (the search maximises over the set).
    """
    v, b = variant_spectra.shape[:2]
    ky, kx, _ = _band(h, w, kp)
    phase = _shift_phases(h, w, kp, max_shift)
    out = []
    for spec in variant_spectra:
        f = phase_band(spec, h, w, kp)  # (B, 2d): real parts, imaginary parts
        c = (f[:, : f.shape[1] // 2] + 1j * f[:, f.shape[1] // 2 :]).reshape(b, 1, len(ky), len(kx))
        g = c * phase[None]  # (B, S, ky, kx)
        out.append(np.concatenate([g.real.reshape(b, len(phase), -1), g.imag.reshape(b, len(phase), -1)], axis=2))
    return np.concatenate(out, axis=1).astype(np.float32)


QueryParts = tuple[np.ndarray | None, np.ndarray, np.ndarray]


def exact_correlation(variant_spectra: np.ndarray, references: np.ndarray, max_shift: int) -> np.ndarray:
    """max over flips x shifts of <T z, z_r> for one query (flip spectra (V, 1, H, W//2+1)) and (m, H, W) references.

    Circular cross-correlation by FFT gives every shift at once (the same
    definition as :func:`fedsynth.privacy.metrics.ncc_robust`); only the
    |dy|, |dx| <= ``max_shift`` window is kept.
    """
    import scipy.fft

    m, h, w = references.shape
    ref_spec = np.conj(spectra(references))
    corr = scipy.fft.irfft2(variant_spectra[:, 0][:, None] * ref_spec[None], s=(h, w), axes=(-2, -1))
    idx = np.arange(-max_shift, max_shift + 1)
    window = corr[:, :, idx[:, None] % h, idx[None, :] % w]  # (V, m, S, S)
    return window.max(axis=(0, 2, 3))


def pixel_frequencies(h: int, w: int) -> int:
    """Band edge k of the pixel bound: 12 at 64x64, scaled with the image."""
    return max(2, round(12 * min(h, w) / 64))


def pixel_bound_rows(images: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W) → (N, 2(2k+1)(k+1) + 1) float32 rows ``[P x, |(1 - P) x|]`` (module docstring)."""
    _, h, w = images.shape
    spec = spectra(images)
    resid = spectral_residual(spec, h, w, k)
    return np.concatenate([phase_band(spec, h, w, k), resid[:, None].astype(np.float32)], axis=1)


class SpectralStage:
    """One bound of the cascade: phase band ``kp`` (0: none) + magnitude band (kp, km] + residual."""

    def __init__(self, h: int, w: int, kp: int, km: int) -> None:
        top = _max_k(h, w)
        self.h, self.w = h, w
        self.kp = min(kp, top)
        self.km = min(max(km, self.kp), top)

    def __repr__(self) -> str:
        return f"SpectralStage(kp={self.kp}, km={self.km})"

    @property
    def phase_dim(self) -> int:
        return 0 if self.kp == 0 else 2 * (2 * self.kp + 1) * (self.kp + 1)

    def reference_rows(self, spectrum: np.ndarray) -> np.ndarray:
        """Spectra (N, H, W//2+1) of standardised references → (N, d_phase + d_mag + 1) float32 rows."""
        parts = [magnitude_band(spectrum, self.h, self.w, self.kp, self.km),
                 spectral_residual(spectrum, self.h, self.w, self.km)[:, None].astype(np.float32)]
        if self.kp > 0:
            parts.insert(0, phase_band(spectrum, self.h, self.w, self.kp))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def query_parts(self, variant_spectra: np.ndarray, max_shift: int) -> QueryParts:
        """Flip spectra (V, B, ...) → (phase rows (B, T, dp) or None, magnitude rows (B, M, dm), residual (B,)).

        The magnitudes depend on the flip only through identity/both-flips vs
        a one-axis flip, so M = 2 variants with flips (1 without).
        """
        mag = np.stack([magnitude_band(variant_spectra[v], self.h, self.w, self.kp, self.km)
                        for v in range(min(2, len(variant_spectra)))], axis=1)
        res = spectral_residual(variant_spectra[0], self.h, self.w, self.km).astype(np.float32)
        phase = phase_band_transformed(variant_spectra, self.h, self.w, self.kp, max_shift) if self.kp > 0 else None
        return phase, mag.astype(np.float32), res

    def bound(self, q: QueryParts, i: int, rows: np.ndarray) -> np.ndarray:
        """Upper bound on max_T <T z_i, z_r> for reference rows ``rows`` (m, d) of this stage → (m,) float32."""
        phase, mag, res = q
        dp = self.phase_dim
        out = (mag[i] @ rows[:, dp:-1].T).max(axis=0) + res[i] * rows[:, -1]
        if phase is not None:
            out += (phase[i] @ rows[:, :dp].T).max(axis=0)
        return out


def ncc_stages(h: int, w: int) -> list[SpectralStage]:
    """The bound cascade, cheapest first; band edges given for 64x64, shrunk for smaller images.

    Chosen by measurement on CT slices of the cohort generator
    (docs/privacy.md): at 64x64 the first, shift-invariant stage keeps ~6 %
    of the pairs, each later stage roughly a quarter of what reaches it.
    Larger images keep the 64x64 edges: scaling them up too (same physical
    frequencies) was not faster at 128x128 (4.2 s vs 3.4 s for 200 x 10,000)
    and needs 3.9x the memory per reference (77 vs 20 KB).
    """
    scale = min(1.0, min(h, w) / 64)
    edges = [(0, 16), (3, 16), (8, 24), (16, 31)]
    stages = [SpectralStage(h, w, max(0, round(kp * scale)) if kp else 0, max(1, round(km * scale))) for kp, km in edges]
    out: list[SpectralStage] = []
    for s in stages:  # tiny images collapse bands: drop repeats
        if not out or (s.kp, s.km) != (out[-1].kp, out[-1].km):
            out.append(s)
    return out
