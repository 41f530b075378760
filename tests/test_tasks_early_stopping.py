"""One stopping rule for every method: best weights kept, patience, budget; an optimiser that survives rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.images import body_discs

from fedsynth.tasks import Budget, TaskConfig, build_network, fit_epochs, train_until_converged
from fedsynth.tasks.training import (
    load_optimizer_arrays,
    make_optimizer,
    optimizer_arrays,
    optimizer_step_count,
)

CFG = TaskConfig(task="ldct", pixel_size_mm=0.8, network="rednet", channels=4, patch_size=24, patches_per_image=2, batch_size=4)


def _images() -> np.ndarray:
    return body_discs(6, 32, seed=1)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(CFG)


def test_stops_after_patience_and_keeps_the_best_weights() -> None:
    model = _model()
    scores = iter([0.5, 0.3, 0.4, 0.35, 0.2, 0.1])  # best at check 2, then two worse: stop at check 4
    seen: list[dict[str, torch.Tensor]] = []

    def validate(m: torch.nn.Module) -> dict[str, float]:
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"val_mse": next(scores)}

    best, curve = train_until_converged(model, _images(), CFG, 0, Budget(max_epochs=12, check_every=2, patience=2),
                                        validate)
    assert [p["epoch"] for p in curve] == [2, 4, 6, 8]
    assert [p["best"] for p in curve] == [False, True, False, False]
    assert all(torch.equal(best[k], seen[1][k]) for k in best)
    assert [p["steps"] for p in curve] == [6, 12, 18, 24]  # 6 images x 2 patches / batch 4 = 3 steps per epoch
    assert curve[-1]["samples"] == 8 * 12


def test_never_runs_past_the_maximum_budget() -> None:
    scores = iter([0.4, 0.3, 0.2, 0.1, 0.05])  # always improving: only the budget stops it
    _, curve = train_until_converged(_model(), _images(), CFG, 0, Budget(max_epochs=4, check_every=1, patience=9),
                                     lambda m: {"val_mse": next(scores)})
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4] and curve[-1]["best"]


def test_an_optimiser_saved_between_rounds_continues_exactly() -> None:
    """What a FedAvg site keeps in Flower's Context.state: two rounds with it equal one uninterrupted run."""
    images = _images()
    a = _model()
    opt_a = make_optimizer(a, CFG)
    fit_epochs(a, images, CFG, 1, seed=3, optimizer=opt_a)
    fit_epochs(a, images, CFG, 1, seed=3, optimizer=opt_a, first_epoch=1)

    b = _model()
    opt_b = make_optimizer(b, CFG)
    fit_epochs(b, images, CFG, 1, seed=3, optimizer=opt_b)
    saved = {k: v.numpy().copy() for k, v in optimizer_arrays(opt_b).items()}  # as an ArrayRecord would carry it
    weights = {k: v.clone() for k, v in b.state_dict().items()}
    c = _model()
    c.load_state_dict(weights)
    opt_c = make_optimizer(c, CFG)
    load_optimizer_arrays(opt_c, saved)
    assert optimizer_step_count(opt_c) == optimizer_step_count(opt_b) == 3
    fit_epochs(c, images, CFG, 1, seed=3, optimizer=opt_c, first_epoch=1)
    assert all(torch.allclose(a.state_dict()[k], c.state_dict()[k], atol=1e-7) for k in weights)
    assert optimizer_step_count(opt_c) == 6

    fresh = _model()  # the old behaviour, a fresh Adam in round 2, ends elsewhere
    fresh.load_state_dict(weights)
    fit_epochs(fresh, images, CFG, 1, seed=3, first_epoch=1)
    assert not all(torch.allclose(a.state_dict()[k], fresh.state_dict()[k], atol=1e-7) for k in weights)


@pytest.mark.parametrize(("kw", "msg"), [({"max_epochs": 5, "check_every": 2}, "multiple of check_every"),
                                         ({"patience": 0}, "greater than or equal to 1")])
def test_a_bad_budget_fails_in_one_line(kw: dict[str, int], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        Budget(**kw)


def test_phase_scrambling_keeps_the_spectrum_and_destroys_the_anatomy() -> None:
    from fedsynth.tasks.controls import phase_scramble

    images = body_discs(16, 32, seed=2) * 0.3 + 0.35  # away from the clip range: the spectrum is kept exactly
    out = phase_scramble(images, seed=0)
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(np.abs(np.fft.fft2(out)), np.abs(np.fft.fft2(images)), rtol=1e-3, atol=1e-3)
    # structure is gone: over images and scrambles the correlation with the original averages out
    # (one image can correlate by chance: a disc's energy sits in a few low frequencies)
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for s in range(3)
            for a, b in zip(images, phase_scramble(images, seed=s), strict=True)]
    assert abs(float(np.mean(corr))) < 0.15
    assert np.array_equal(phase_scramble(images, seed=0), out)
