"""The book's verdict rule and the paired bootstrap difference, on hand-made effects."""
import numpy as np
import pytest

from lsda_core.evaluation import stats


def E(lo: float, hi: float, lo90: float | None = None, hi90: float | None = None) -> stats.Effect:
    """A hand-made effect with the given intervals (90 % inside the 95 % unless given)."""
    w = (hi - lo) * 0.08
    return stats.Effect((lo + hi) / 2, lo, hi, lo + w if lo90 is None else lo90, hi - w if hi90 is None else hi90,
                        3, 100)


@pytest.mark.parametrize("kind,eff,paper,expected", [
    # difference: P = 5.4, band [2.7, 10.8]
    ("difference", E(3.0, 7.0), 5.4, "replicated"),
    ("difference", E(0.5, 3.0), 5.4, "replicated"),          # reaches the band
    ("difference", E(0.5, 2.0), 5.4, "direction only"),      # clearly positive, far below the paper's size
    ("difference", E(12.0, 15.0), 5.4, "direction only"),    # clearly positive, far above it (13 vs 3.3 colour)
    ("difference", E(-1.0, 2.0), 5.4, "not replicated"),     # rules out half the paper's effect
    ("difference", E(-6.0, -3.0), 5.4, "not replicated"),    # the opposite, beyond noise
    ("difference", E(-1.0, 8.0), 5.4, "inconclusive"),       # holds both 0 and the paper's size
    ("difference", E(1.0, 4.0), -3.3, "not replicated"),     # negative paper effects turn the axis
    ("difference", E(-5.0, -2.0), -3.3, "replicated"),
    ("difference of differences", E(-2.0, 1.0), 3.4, "not replicated"),  # pool5 gained as much as fc7
    ("difference of differences", E(1.5, 5.0), 3.4, "replicated"),
    # magnitude: P = 3.3, band [1.65, 6.6]; the whole interval must lie in it
    ("magnitude", E(2.0, 6.0), 3.3, "replicated"),
    ("magnitude", E(2.0, 9.0), 3.3, "inconclusive"),         # positive, reaches the band, leaves it
    ("magnitude", E(10.0, 16.0), 3.3, "direction only"),
    ("magnitude", E(-1.0, 1.0), 3.3, "not replicated"),
    # qualitative: the sign only
    ("qualitative", E(0.1, 0.4), None, "replicated"),
    ("qualitative", E(-0.4, -0.1), None, "not replicated"),
    ("qualitative", E(-0.1, 0.4), None, "inconclusive"),
])
def test_verdict_rule(kind, eff, paper, expected):
    assert stats.verdict(kind, eff, paper) == expected


@pytest.mark.parametrize("lo90,hi90,expected", [
    (-1.0, 1.0, "replicated"),        # inside [-1.5, 1.5]
    (-5.0, -2.0, "not replicated"),   # fc7 4 points below fc6 is not "no better": it is worse
    (2.0, 4.0, "not replicated"),
    (-1.0, 2.0, "inconclusive"),
])
def test_equivalence_rule(lo90, hi90, expected):
    eff = E(lo90 - 0.5, hi90 + 0.5, lo90, hi90)
    assert stats.verdict("no difference", eff, -0.8, margin=1.5) == expected
    with pytest.raises(ValueError):
        stats.verdict("no difference", eff, -0.8)


def test_optimum_rule():
    assert stats.optimum_verdict([E(1.0, 3.0), E(0.5, 4.0)]) == "replicated"
    assert stats.optimum_verdict([E(1.0, 3.0), E(-4.0, -0.5)]) == "not replicated"  # another value wins
    assert stats.optimum_verdict([E(1.0, 3.0), E(-1.0, 2.0)]) == "inconclusive"


def test_bad_kinds_and_missing_effects():
    with pytest.raises(ValueError):
        stats.verdict("bigger", E(1, 2), 1.0)
    with pytest.raises(ValueError):
        stats.verdict("difference", E(1, 2), None)
    assert stats.verdict("difference", stats.Effect(1.0, np.nan, np.nan, np.nan, np.nan, 1, 0), 1.0) == "inconclusive"


def test_effect_pairs_rows_and_crosses_seeds():
    """A shared swing over resamples cancels (rows are paired); a seed spread widens the interval
    and a row with one seed is broadcast to every seed."""
    rng = np.random.default_rng(0)
    swing = rng.normal(0.4, 0.05, 400)
    b = np.tile(swing, (1, 1))                    # one seed: not retrained
    a_same = np.tile(swing + 0.02, (3, 1))        # 3 seeds, identical
    e = stats.effect([("a", 1.0), ("b", -1.0)], {"a": np.full(3, 0.42), "b": np.array([0.40])},
                     {"a": a_same, "b": b})
    assert e.point == pytest.approx(2.0) and e.lo == pytest.approx(2.0) and e.hi == pytest.approx(2.0)
    assert e.seeds == 3 and e.resamples == 400
    a_spread = np.stack([swing + 0.0, swing + 0.02, swing + 0.04])  # seeds 0, 2 and 4 points above b
    e = stats.effect([("a", 1.0), ("b", -1.0)], {"a": np.array([0.40, 0.42, 0.44]), "b": np.array([0.40])},
                     {"a": a_spread, "b": b})
    assert e.point == pytest.approx(2.0)
    assert e.lo < 1.0 and e.hi > 3.0  # seed draws with replacement reach 0 and 4 point means
    assert 0.0 <= e.lo and e.hi <= 4.0


def test_effect_difference_of_differences():
    s = {k: np.full((1, 50), v) for k, v in {"A": 0.5, "B": 0.4, "C": 0.3, "D": 0.25}.items()}
    pts = {k: v[:, 0] for k, v in s.items()}
    e = stats.effect([("A", 1), ("B", -1), ("C", -1), ("D", 1)], pts, s)
    assert e.point == pytest.approx(5.0) and e.lo == pytest.approx(5.0)


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


@pytest.mark.parametrize("metric", ["voc07", "ilsvrc"])
def test_bootstrap_is_evaluation_of_the_resampled_test_set(metric):
    """Each resample's mAP is the plain evaluation of a test set holding each image as many times
    as the resample draws it (its copies renamed), on random detections of two classes."""
    import copy
    from types import SimpleNamespace

    from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn
    from lsda_core.data.comp4 import Detections
    from lsda_core.evaluation import ap

    rng = np.random.default_rng(5)
    ims, dets = [], {"a": [], "b": []}
    for i in range(12):
        objs = [ObjectAnn(str(c), np.array([x, 8.0, x + 20, 30.0]), difficult=bool(rng.random() < 0.15))
                for c, x in (("a", 4.0), ("b", 30.0)) if rng.random() < 0.7]
        ims.append(ImageAnn(str(i), f"{i}.jpg", 64, 64, objs))
        for c in "ab":
            for _ in range(3):
                x = rng.uniform(0, 40)
                dets[c].append((str(i), rng.random(), [x, 8.0, x + 20, 30.0]))
    ds = DetectionDataset("t", "test", ["a", "b"], ims, ".", set())
    as_dets = {c: Detections([d[0] for d in v], np.array([d[1] for d in v]), np.array([d[2] for d in v]))
               for c, v in dets.items()}
    bench = SimpleNamespace(classes=["a", "b"], test=ds, metric=metric)
    maps = stats.bootstrap_map(bench, [SimpleNamespace(name="d", detections=as_dets)], n=6, seed=1)["d"]
    for k, w in enumerate(stats.resamples(len(ims), 6, 1)):
        copies, again = [], {c: [] for c in "ab"}
        for i, times in enumerate(w):
            for t in range(int(times)):
                im = copy.deepcopy(ims[i])
                im.image_id = f"{i}_{t}"
                copies.append(im)
                for c in "ab":
                    again[c] += [(im.image_id, d[1], d[2]) for d in dets[c] if d[0] == str(i)]
        rs = DetectionDataset("t", "test", ["a", "b"], copies, ".", set())
        rd = {c: Detections([d[0] for d in v], np.array([d[1] for d in v]), np.array([d[2] for d in v]).reshape(-1, 4))
              for c, v in again.items()}
        assert maps[k] == pytest.approx(ap.evaluate(rs, rd, metric)["map"], abs=1e-9)


def test_cached_bootstrap_is_the_same_and_rebuilds_only_on_new_detections(tmp_path, monkeypatch):
    """With a cache, the samples equal the uncached ones; asked again they are read back (no
    bootstrap runs); detections with one score changed are bootstrapped anew."""
    from types import SimpleNamespace

    from lsda_core.data.comp4 import Detections
    from lsda_core.store.cache import Cache

    ds, box = _two_images(set())
    bench = SimpleNamespace(classes=["a"], test=ds, metric="voc07")
    dets = {"a": Detections(["0", "1", "1"], np.array([0.9, 0.8, 0.3]), np.stack([box, box, box + 15]))}
    runs = [SimpleNamespace(name="d", detections=dets)]
    plain = stats.bootstrap_map(bench, runs, n=30, seed=2)["d"]
    cache = Cache(tmp_path / "art")
    assert np.array_equal(stats.bootstrap_map(bench, runs, n=30, seed=2, cache=cache)["d"], plain)
    real = stats._bootstrap_one
    monkeypatch.setattr(stats, "_bootstrap_one", lambda *a: pytest.fail("served from the cache, not recomputed"))
    assert np.array_equal(stats.bootstrap_map(bench, runs, n=30, seed=2, cache=cache)["d"], plain)
    monkeypatch.setattr(stats, "_bootstrap_one", real)
    changed = {"a": Detections(["0", "1", "1"], np.array([0.9, 0.2, 0.3]), np.stack([box, box, box + 15]))}
    moved = stats.bootstrap_map(bench, [SimpleNamespace(name="d", detections=changed)], n=30, seed=2, cache=cache)["d"]
    assert np.array_equal(moved, stats.bootstrap_map(bench, [SimpleNamespace(name="d", detections=changed)], n=30, seed=2)["d"])
    assert len(list((tmp_path / "art" / "bootstrap").iterdir())) == 2
