"""The pixel-space (EDM) generator: trains, stops on its validation patients, samples with companions."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.errors import ConfigError
from fedsynth.generative import load_generator, load_profile, train_ldm
from fedsynth.generative.checkpoint import MODEL_FILE, STATE_FILE, load_checkpoint


@pytest.fixture(scope="module")
def patients():
    from fedsynth.data.cohort import ct_patients

    vols = ct_patients(6, size=32, slices=6)
    return np.concatenate(vols[:4]), np.concatenate(vols[4:])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, patients):
    train, val = patients
    work = tmp_path_factory.mktemp("pixel")
    summary = train_ldm(train, work, load_profile("tiny"), progress=False, validation=val)
    return work, summary


def test_pixel_generator_trains_on_pixels_and_records_its_validation(trained) -> None:
    work, summary = trained
    assert summary["kind"] == "pixel" and summary["final_ae_l1"] is None
    checks = summary["history"]["validation"]
    cfg = load_profile("tiny")
    assert [c["epoch"] for c in checks] == list(range(cfg.val_every, summary["unet_epochs"] + 1, cfg.val_every))
    assert all(np.isfinite(c["val_loss"]) and np.isfinite(c["train_loss"]) for c in checks)
    best = min(checks, key=lambda c: c["val_loss"])
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_loss"] == pytest.approx(best["val_loss"])
    assert summary["optimizer_steps"] == {"autoencoder": 0, "diffusion": summary["steps"]}
    assert summary["samples_seen"]["unet"] == summary["unet_epochs"] * 24  # 24 training slices per epoch


def test_samples_and_companions_are_deterministic_in_range(trained) -> None:
    from fedsynth.generative.quality import fine_texture

    work, _ = trained
    gen = load_generator(work)
    assert gen.exact_representation and gen.checkpoint_hash.startswith("sha256:")
    x, comp = gen.sample(6, seed=2, with_untextured=True)
    assert x.shape == comp.shape == (6, 32, 32) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and np.isfinite(comp).all()
    np.testing.assert_array_equal(x, gen.sample(6, seed=2))  # the companion costs no extra randomness
    assert not np.allclose(x, gen.sample(6, seed=3))
    # the companion is the denoised estimate at companion_sigma: the same image, without its finest noise
    assert float(np.abs(x - comp).mean()) < 0.1
    assert fine_texture(comp) < fine_texture(x)
    assert gen.sample(2, steps=4, sampler="ddim", seed=0).shape == (2, 32, 32)
    with pytest.raises(ConfigError, match="ancestral ddpm"):
        gen.sample(2, sampler="ddpm")
    with pytest.raises(ConfigError, match="no separate texture"):
        gen.sample(2, texture=True)
    real = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(gen.represent(real), real)  # the representation is exact


def test_the_held_out_loss_stops_training_and_keeps_the_best_weights(tmp_path, patients, monkeypatch) -> None:
    """A held-out loss that turns up after the second check ends training `val_patience` checks later,
    and the generator keeps the EMA weights of the best check, not the last epoch's."""
    from fedsynth.generative import train as train_mod

    losses = iter([1.0, 0.5, 0.7, 0.9, 0.4, 0.3])  # the held-out loss of checks 1, 2, ...; never reaches 0.4

    def scripted(self, data, levels=8):
        return next(losses) if data is self.val_latents else 1.0  # the training-side loss is only recorded

    monkeypatch.setattr(train_mod._Run, "heldout_loss", scripted)
    train, val = patients
    cfg = load_profile("tiny", val_every=1, val_patience=2, unet_epochs=10)
    summary = train_ldm(train, tmp_path, cfg, progress=False, validation=val)
    assert summary["stopped"] == "validation" and summary["unet_epochs"] == 4  # checks at 1..4; best at 2
    assert summary["best_epoch"] == 2 and summary["best_val_loss"] == 0.5
    model, state = load_checkpoint(tmp_path / MODEL_FILE, "model"), load_checkpoint(tmp_path / STATE_FILE,
                                                                                      "train_state")
    for k, v in model["unet"].items():
        assert np.array_equal(v.numpy(), state["best_weights"][k].numpy())
    assert any(not np.array_equal(v.numpy(), state["ema"][k].numpy()) for k, v in model["unet"].items())


def test_without_validation_slices_it_trains_for_the_maximum(tmp_path, patients, caplog) -> None:
    train, _ = patients
    summary = train_ldm(train, tmp_path, load_profile("tiny", unet_epochs=2), progress=False)
    assert summary["stopped"] == "max_epochs" and summary["unet_epochs"] == 2
    assert summary["history"]["validation"] == [] and "no validation slices" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"restore_texture": True}, "models the scanner's noise itself"),
        ({"sampler": "ddpm"}, "samples with ddim or dpm"),
        ({"image_size": 33}, "divisible by pixel_unshuffle"),
        ({"pixel_unshuffle": 4, "image_size": 36}, "divisible"),
        ({"sigma_min": 100.0}, "sigma_max must be greater"),
    ],
)
def test_pixel_config_errors_are_one_line(overrides, match) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_profile("tiny", **overrides)
    assert "\n" not in str(info.value)
