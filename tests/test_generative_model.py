"""Tiny latent generator: learns, samples in range, deterministic; bad configs are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.generative import train_tiny
from fixtures.images import spot_discs

from fedsynth.errors import CheckpointError, ConfigError, DataError
from fedsynth.generative import evaluate_quality, load_generator, load_profile, train_ldm


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("gen")
    summary = train_tiny(work)
    return work, summary


def test_autoencoder_overfits_a_handful_of_slices(trained) -> None:
    _, summary = trained
    ae = summary["history"]["ae"]
    # stated factor: reconstruction L1 falls at least 2x from the first to the last AE epoch
    assert ae[-1]["l1"] < ae[0]["l1"] / 2, ae
    unet = summary["history"]["unet"]
    assert all(np.isfinite(h["mse"]) for h in unet)
    assert summary["steps"] == 12 * 2 + 6 * 2  # 16 images, batch 8: 2 steps per epoch
    assert len(summary["latent_scale"]) == 2 and min(summary["latent_scale"]) > 0


def test_samples_shape_range_finite_and_deterministic(trained) -> None:
    work, _ = trained
    gen = load_generator(work)
    assert gen.checkpoint_hash.startswith("sha256:") and len(gen.checkpoint_hash) == 71
    a = gen.sample(3, steps=5, seed=3, batch_size=2)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, gen.sample(3, steps=5, seed=3, batch_size=2))
    assert not np.allclose(a, gen.sample(3, steps=5, seed=4, batch_size=2))
    d = gen.sample(2, steps=4, seed=0, sampler="dpm")
    assert d.shape == (2, 32, 32) and np.isfinite(d).all()
    with pytest.raises(ConfigError, match="sampling steps"):
        gen.sample(2, steps=5000)
    with pytest.raises(ConfigError, match="unknown sampler"):
        gen.sample(2, sampler="euler")


def test_finished_run_resumed_is_a_noop(trained) -> None:
    work, summary = trained
    before = (work / "model.pt").stat().st_mtime_ns
    again = train_ldm(
        spot_discs(16), work, load_profile("tiny-latent", image_size=32, ae_epochs=12, unet_epochs=6), resume=True,
        progress=False)
    assert again["steps"] == summary["steps"] and again["resumed"]
    assert (work / "model.pt").stat().st_mtime_ns == before


def test_latents_are_standardised_per_channel(trained) -> None:
    """The diffusion model sees zero-mean, unit-variance latent channels, matching its N(0, I) prior."""
    import torch

    work, _ = trained
    gen = load_generator(work)
    with torch.no_grad():
        mu = gen.autoencoder.encode(torch.from_numpy(spot_discs(16)).unsqueeze(1))[0]
    z = (mu - torch.tensor(gen.shift).view(1, -1, 1, 1)) * torch.tensor(gen.scale).view(1, -1, 1, 1)
    np.testing.assert_allclose(z.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(dim=(0, 2, 3)).numpy(), 1.0, atol=1e-3)


def test_checkpoint_with_one_global_scale_still_loads(trained, tmp_path) -> None:
    """model.pt files written before per-channel standardisation held one float scale and no shift."""
    import shutil

    from fedsynth.generative.checkpoint import MODEL_FILE, load_checkpoint, save_checkpoint

    work, _ = trained
    ck = load_checkpoint(work / MODEL_FILE, "model")
    old = {k: v for k, v in ck.items() if k not in ("format", "version", "kind", "shift")}
    old["scale"] = 0.5
    shutil.copytree(work, tmp_path / "old")
    save_checkpoint(tmp_path / "old" / MODEL_FILE, "model", old)
    gen = load_generator(tmp_path / "old")
    assert gen.scale == (0.5, 0.5) and gen.shift == (0.0, 0.0)
    assert np.isfinite(gen.sample(2, steps=3)).all()


def test_resume_with_other_config_is_refused(trained) -> None:
    work, _ = trained
    with pytest.raises(CheckpointError, match="different config"):
        train_ldm(spot_discs(16), work, load_profile("tiny-latent", image_size=32, ae_epochs=12, unet_epochs=7),
                  resume=True, progress=False)


def test_quality_report_has_baselines(trained, tmp_path) -> None:
    work, _ = trained
    gen = load_generator(work)
    rep = evaluate_quality(gen, spot_discs(12, seed=9), tmp_path, n=12, real_reference=spot_discs(8, seed=5))
    for key in ("histogram_w1", "ms_ssim_diversity", "frechet_ae"):
        assert np.isfinite(rep["synthetic"][key])
        assert np.isfinite(rep["baselines"]["noise"][key]) and np.isfinite(rep["baselines"]["blurred_mean"][key])
    assert rep["baselines"]["blurred_mean"]["ms_ssim_diversity"] == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "quality.json").is_file() and (tmp_path / "samples_vs_real.png").stat().st_size > 1000
    # real images of the same kind are closer to each other than noise is, in the site's encoder space
    assert rep["real_train_vs_test"]["frechet_ae"] < rep["baselines"]["noise"]["frechet_ae"]


def test_fine_texture_sees_smoothing_and_noise() -> None:
    """The texture number must rank a blurred copy below the original and a noisier copy above it."""
    from scipy.ndimage import gaussian_filter

    from fedsynth.generative.quality import fine_texture

    x = spot_discs(8, seed=3)
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 0.03, x.shape), 0, 1).astype(np.float32)
    smooth = gaussian_filter(noisy, sigma=(0, 1.5, 1.5))
    assert fine_texture(smooth) < 0.5 * fine_texture(noisy)
    assert fine_texture(noisy) > fine_texture(x) + 0.01
    assert fine_texture(np.zeros((2, 16, 16))) == 0.0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"ae_lr": -1.0}, "ae_lr"),
        ({"image_size": 30}, "divisible"),
        ({"unet_attention": (True,)}, "unet_attention"),
        ({"sample_steps": 5000}, "sample_steps"),
        ({"no_such_knob": 1}, "no_such_knob"),
        ({"sampler": "euler"}, "sampler"),
        ({"ae_full_fraction": 1.5}, "ae_full_fraction"),
        ({"augment_p": 0.5}, "augment_p needs kind"),
    ],
)
def test_bad_config_values_are_one_line_config_errors(overrides, match) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_profile("tiny-latent", **overrides)
    assert "\n" not in str(info.value)


def test_unknown_profile_and_bad_images() -> None:
    with pytest.raises(ConfigError, match="unknown LDM profile"):
        load_profile("huge")
    cfg = load_profile("tiny")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        train_ldm(spot_discs(4) * 3, "unused", cfg)
    with pytest.raises(DataError, match="shape"):
        train_ldm(np.zeros((4, 32), np.float32), "unused", cfg)


def test_texture_spectrum_of_white_noise_is_flat_at_its_variance() -> None:
    """Fitting white in-body noise of std 0.02 gives S_k ~ 0.02^2, and synthesis reproduces the std."""
    import torch

    from fedsynth.generative.texture import fit_texture_spectrum, texture_noise

    recon = torch.full((64, 1, 32, 32), 0.5)
    images = recon + 0.02 * torch.randn(recon.shape, generator=torch.Generator().manual_seed(0))
    spec = fit_texture_spectrum(images, recon)
    assert spec.shape == (32, 17)
    assert spec.mean() == pytest.approx(0.02**2, rel=0.05)
    assert spec.std() / spec.mean() < 0.3  # flat: no frequency stands out
    noise = texture_noise(spec, recon, torch.Generator().manual_seed(1))
    assert float(noise.std()) == pytest.approx(0.02, rel=0.05)
    air = texture_noise(spec, torch.zeros(2, 1, 32, 32), torch.Generator().manual_seed(1))
    assert float(air.abs().max()) == 0.0  # nothing is added outside the body


def test_samples_get_the_fitted_texture_inside_the_body_only(trained) -> None:
    work, _ = trained
    gen = load_generator(work)
    spec = gen.texture_spectrum
    assert spec is not None and spec.shape == (32, 17) and (spec >= 0).all() and spec.mean() > 0
    plain = gen.sample(8, steps=3, seed=1, texture=False)
    textured = gen.sample(8, steps=3, seed=1)  # the config default restores texture
    both = gen.sample(8, steps=3, seed=1, with_untextured=True)  # the gate's (candidates, companions)
    np.testing.assert_array_equal(both[0], textured)
    np.testing.assert_array_equal(both[1], plain)
    air, body = plain < 0.05, (plain > 0.15) & (plain < 0.85)
    assert np.array_equal(textured[air], plain[air])
    diff = (textured - plain)[body]
    assert abs(float(diff.mean())) < 0.3 * float(diff.std())
    assert 0.5 < float(diff.std()) / float(np.sqrt(spec.mean())) < 1.5


def test_gpu_paths_fall_back_to_the_plain_cpu_path(tmp_path) -> None:
    """bfloat16 autocast and torch.compile (on in every profile) take effect only on CUDA: on a CPU the
    generator trains and samples exactly as with both off."""
    from fixtures.generative import train_tiny

    on = train_tiny(tmp_path / "on", n=8, profile="tiny", unet_epochs=2, amp=True, compile=True)
    off = train_tiny(tmp_path / "off", n=8, profile="tiny", unet_epochs=2, amp=False, compile=False)
    def losses(summary: dict) -> dict:
        return {k: [{m: v for m, v in h.items() if m != "seconds"} for h in hist]
                for k, hist in summary["history"].items()}

    assert losses(on) == losses(off)
    assert on["kind"] == "pixel"  # the default generator; the latent one shares the switches
    a = load_generator(tmp_path / "on").sample(3, steps=4, seed=1)
    b = load_generator(tmp_path / "off").sample(3, steps=4, seed=1)
    np.testing.assert_array_equal(a, b)
