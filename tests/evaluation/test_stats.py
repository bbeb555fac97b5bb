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


def _two_images(blacklist):
    from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn
    box = np.array([10.0, 10.0, 40.0, 40.0])
    ims = [ImageAnn("0", "0.jpg", 64, 64, [ObjectAnn("a", box)]), ImageAnn("1", "1.jpg", 64, 64, [ObjectAnn("a", box)])]
    return DetectionDataset("t", "test", ["a"], ims, ".", set(blacklist)), box


@pytest.mark.parametrize("metric", ["voc07", "ilsvrc"])
def test_bootstrap_positives_are_evaluations(metric):
    """A blacklisted object is not a positive for evaluation, so not for the bootstrap either:
    with image 1's object found exactly and image 0's blacklisted, every resample scores AP 1."""
    from types import SimpleNamespace

    from lsda_core.data.comp4 import Detections
    from lsda_core.evaluation import ap

    ds, box = _two_images({("0", "a")})
    dets = {"a": Detections(["1"], np.array([1.0]), box[None])}
    assert ap.evaluate(ds, dets, metric)["map"] == 1.0
    assert ap.positives_per_image(ds, "a", metric).tolist() == [0.0, 1.0]
    assert ap.positives_per_image(ds, "a", metric).sum() == ap.match_detections(ds, "a", dets["a"], metric).n_pos
    bench = SimpleNamespace(classes=["a"], test=ds, metric=metric)
    maps = stats.bootstrap_map(bench, [SimpleNamespace(name="d", detections=dets)], n=40, seed=0)["d"]
    assert np.nanmin(maps) == 1.0 and np.isfinite(maps).any()


def test_positives_skip_difficult_for_voc_only():
    from lsda_core.evaluation import ap

    ds, _ = _two_images(set())
    ds.images[0].objects[0].difficult = True
    assert ap.positives_per_image(ds, "a", "voc07").tolist() == [0.0, 1.0]
    assert ap.positives_per_image(ds, "a", "ilsvrc").tolist() == [1.0, 1.0]
