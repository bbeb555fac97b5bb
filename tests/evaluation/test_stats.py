"""The book's verdict rule and the paired bootstrap difference, on hand-made effects."""
import numpy as np
import pytest

from lsda_core.evaluation import stats


@pytest.mark.parametrize("ours,noise,paper,expected", [
    (5.0, 1.0, 5.4, "replicates"),  # same sign, beyond 2 std
    (-3.0, 1.0, -0.8, "replicates"),  # negative effects too
    (1.5, 1.0, 5.4, "same direction, within noise"),  # same sign, |d| <= 2 std
    (2.0, 1.0, 5.4, "same direction, within noise"),  # exactly 2 std is not beyond it
    (-4.0, 1.0, 3.3, "does not replicate (opposite, beyond noise)"),
    (-0.5, 1.0, 3.3, "does not replicate (opposite, within noise)"),
    (0.0, 0.0, 1.0, "does not replicate (opposite, within noise)"),  # no effect at all
])
def test_verdict_rule(ours, noise, paper, expected):
    assert stats.verdict(ours, noise, paper) == expected


def test_difference_is_paired_over_resamples():
    """Mean and std of mAP(a) - mAP(b) over the same resamples, in points: a shared swing
    cancels, so the std is that of the difference, not of either detector."""
    swing = np.array([0.30, 0.40, 0.50, 0.35])
    spread = {"a": swing + 0.02, "b": swing}
    mean, std = stats.difference(spread, "a", "b")
    assert mean == pytest.approx(2.0) and std == pytest.approx(0.0, abs=1e-9)
    spread["a"] = swing + np.array([0.01, 0.03, 0.01, 0.03])
    mean, std = stats.difference(spread, "a", "b")
    assert mean == pytest.approx(2.0) and std == pytest.approx(1.0)
