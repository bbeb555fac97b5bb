"""`stats.Seeded` (mAPs over training seeds and resamples) and `stats.resamples` (bootstrap image counts)."""
import numpy as np

from lsda_core.evaluation.stats import Seeded, resamples


def two_seeds() -> Seeded:
    maps = [{"a": 0.50, "b": 0.30}, {"a": 0.54, "b": 0.32}]
    spreads = [{"a": np.array([0.49, 0.51, 0.50]), "b": np.array([0.29, 0.31, 0.30])},
               {"a": np.array([0.53, 0.55, 0.54]), "b": np.array([0.31, 0.33, 0.32])}]
    return Seeded.stack([7, 8], maps, spreads)


def test_stack_gives_per_seed_points_and_samples():
    """stack: points[row] is (S,) in seed order, samples[row] is (S, B)."""
    s = two_seeds()
    assert s.seeds == [7, 8] and list(s.points) == ["a", "b"]
    assert np.allclose(s.points["a"], [0.50, 0.54]) and np.allclose(s.points["b"], [0.30, 0.32])
    assert s.samples["a"].shape == (2, 3)
    assert np.allclose(s.samples["b"][1], [0.31, 0.33, 0.32])


def test_add_puts_rows_measured_once_and_keeps_existing_rows():
    """add: a new row gets S = 1, (1, B); a row already present is not replaced."""
    s = two_seeds().add({"c": 0.2, "a": 0.9}, {"c": np.array([0.1, 0.2, 0.3]), "a": np.zeros(3)})
    assert np.allclose(s.points["c"], [0.2]) and s.samples["c"].shape == (1, 3)
    assert np.allclose(s.points["a"], [0.50, 0.54]) and s.samples["a"].shape == (2, 3)


def test_merge_adds_the_other_rows_and_keeps_ours():
    """merge: rows only in the other are added; a row in both keeps this one's values."""
    other = Seeded([7], {"a": np.array([0.0]), "d": np.array([0.4])},
                   {"a": np.zeros((1, 3)), "d": np.full((1, 3), 0.4)})
    s = two_seeds().merge(other)
    assert list(s.points) == ["a", "b", "d"]
    assert np.allclose(s.points["a"], [0.50, 0.54]) and np.allclose(s.samples["d"], 0.4)


def test_table_lists_retrained_rows_per_seed_in_percent():
    """table: one row per seed, rows with a value per seed only, mAP in % rounded to 0.1."""
    s = two_seeds().add({"once": 0.1}, {"once": np.zeros(3)})
    assert s.table() == [{"seed": 7, "a": 50.0, "b": 30.0}, {"seed": 8, "a": 54.0, "b": 32.0}]
    single = Seeded([3], {"a": np.array([0.123])}, {"a": np.zeros((1, 2))})
    assert single.table() == [{"seed": 3}]  # one seed: nothing was retrained


def test_resamples_shape_sums_and_seed():
    """resamples: (n, n_images) counts, each row drawing n_images images; the seed fixes them."""
    r = resamples(5, 40, seed=3)
    assert r.shape == (40, 5) and (r >= 0).all()
    assert (r.sum(axis=1) == 5).all()
    assert np.array_equal(r, resamples(5, 40, seed=3))
    assert not np.array_equal(r, resamples(5, 40, seed=4))
    assert len({tuple(row) for row in r}) > 1  # the rows differ from each other
    assert resamples(5, 0, seed=3).shape == (0, 5)


def test_add_merge_and_once_leave_their_inputs_alone():
    """add and merge return new objects (the chapters' Seeded are reused after a merge); once builds
    one-seed rows from (value, resampled values) pairs."""
    s = two_seeds()
    before = {k: v.copy() for k, v in s.points.items()}
    s.add({"c": 0.2}, {"c": np.zeros(3)})
    s.merge(Seeded.once(7, {"d": (0.4, np.full(3, 0.4))}))
    assert list(s.points) == list(before) and all(np.array_equal(s.points[k], before[k]) for k in before)
    o = Seeded.once(5, {"x": (0.1, np.array([0.0, 0.2]))})
    assert o.seeds == [5] and np.allclose(o.points["x"], [0.1]) and o.samples["x"].shape == (1, 2)
