import numpy as np
import pytest

from block.length.calibrate import (
    calibration_mask,
    conformal_offsets,
    coverage_by_level,
    in_calibration_slice,
)
from block.length.split import is_held_out

LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def test_offsets_restore_coverage_of_too_narrow_quantiles():
    # y = x + noise; the "model" knows the centre but claims half the true spread (overfit trees do
    # that: in-sample residuals are smaller than out-of-sample ones).
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    z = norm.ppf(LEVELS)

    def draw(n):
        x = rng.uniform(0, 5, n)
        return x[:, None] + 0.5 * z[None, :], x + rng.normal(0, 1, n)

    cal_pred, cal_y = draw(4000)
    test_pred, test_y = draw(20000)
    before = coverage_by_level(test_pred, test_y, LEVELS)
    after = coverage_by_level(test_pred + conformal_offsets(cal_pred, cal_y, LEVELS), test_y, LEVELS)
    assert before["0.9"] - before["0.1"] < 0.6  # the band is far too narrow
    for q in LEVELS:
        assert after[f"{q:g}"] == pytest.approx(q, abs=0.015)
        if q != 0.5:  # the median was right already; elsewhere the error shrinks
            assert abs(after[f"{q:g}"] - q) < abs(before[f"{q:g}"] - q)


def test_offsets_need_one_prediction_per_level():
    with pytest.raises(ValueError):
        conformal_offsets(np.zeros((3, 2)), np.zeros(3), LEVELS)


def test_calibration_slice_is_deterministic_and_independent_of_the_split():
    prompts = [f"prompt {i}" for i in range(4000)]
    mask = calibration_mask(prompts, seed=0)
    assert np.array_equal(mask, calibration_mask(prompts, seed=0))
    assert 0.17 < mask.mean() < 0.23
    assert in_calibration_slice("same", 0) == in_calibration_slice("same", 0)
    # Its own salt: the slice is not the held-out split (nor its complement).
    held = np.array([is_held_out(p, 0) for p in prompts])
    assert 0.1 < mask[~held].mean() < 0.3


def test_fitted_model_is_calibrated_on_its_slice(small_model):
    offsets = small_model.offsets
    assert offsets.shape == (len(small_model.quantiles),) and np.isfinite(offsets).all()
    assert small_model.meta["calibration"] == pytest.approx(list(offsets))


def test_median_offset_applies_to_point_and_quantiles(small_model, sharegpt_split):
    _, held = sharegpt_split
    prompts = [s.prompt for s in held[:20]]
    point = small_model.predict_many(prompts)
    assert np.array_equal(point, small_model.predict_quantiles_many(prompts, (0.5,))[:, 0])


def test_uncalibrated_fit_has_zero_offsets(sharegpt_split):
    from block.length.train import fit_estimator, training_steps

    ticks = []
    est = fit_estimator(sharegpt_split[0][:120], seed=0, tree_iters=5, calibrate=False, progress=ticks.append)
    assert len(ticks) == training_steps("tfidf", calibrate=False)
    assert not est.offsets.any()
