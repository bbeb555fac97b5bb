"""comp4 results files: the devkit's 1-based format, round trips and malformed lines."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lsda_core.data.comp4 import Detections, comp4_path, read_comp4, read_comp4_file, write_comp4
from lsda_core.core.errors import DataError


def test_one_based_conversion(tmp_path):
    p = write_comp4(tmp_path, "test", "dog", ["000001", "000002"], [0.5, -1.25],
                    np.array([[0.0, 0.0, 10.0, 10.0], [4.5, 2.25, 30.0, 40.0]]))
    assert p == tmp_path / "comp4_det_test_dog.txt"
    assert p.read_text() == ("000001 0.500000 1.0 1.0 10.0 10.0\n"
                             "000002 -1.250000 5.5 3.2 30.0 40.0\n")  # 3.25 prints as 3.2 (%.1f)
    d = read_comp4(tmp_path, "test", ["dog"])["dog"]
    assert d.image_ids == ["000001", "000002"]
    np.testing.assert_array_equal(d.boxes[0], [0, 0, 10, 10])
    np.testing.assert_allclose(d.boxes[1], [4.5, 2.2, 30, 40])
    np.testing.assert_array_equal(d.scores, [0.5, -1.25])
    assert d.source == str(p)


def test_devkit_style_integer_file(tmp_path):
    # what the VOC devkit's example writes: '%s %f %d %d %d %d'
    (tmp_path / "comp4_det_val_cat.txt").write_text("000005 0.734000 48 240 195 371\n\n000007 -0.1 1 1 500 333\n")
    d = read_comp4(tmp_path, "val", ["cat"])["cat"]
    np.testing.assert_array_equal(d.boxes, [[47, 239, 195, 371], [0, 0, 500, 333]])
    np.testing.assert_array_equal(d.scores, [0.734, -0.1])


def test_round_trip_within_printed_precision(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    xy = rng.uniform(0, 300, size=(n, 2))
    b = np.concatenate([xy, xy + rng.uniform(1, 100, size=(n, 2))], axis=1)
    s = rng.normal(size=n)
    ids = [f"{i % 17:06d}" for i in range(n)]
    write_comp4(tmp_path, "test", "car", ids, torch.from_numpy(s), torch.from_numpy(b))
    d = read_comp4(tmp_path, "test", ["car"])["car"]
    assert d.image_ids == ids and len(d) == n
    assert np.max(np.abs(d.boxes - b)) <= 0.05 + 1e-9
    assert np.max(np.abs(d.scores - s)) <= 5e-7 + 1e-12


def test_missing_class_and_empty_file(tmp_path):
    write_comp4(tmp_path, "test", "a", [], [], np.zeros((0, 4)))
    assert (tmp_path / "comp4_det_test_a.txt").read_text() == ""
    out = read_comp4(tmp_path, "test", ["a", "b"])
    assert len(out["a"]) == 0 and len(out["b"]) == 0
    assert out["b"].boxes.shape == (0, 4) and out["b"].scores.shape == (0,)
    assert out["b"].source == str(comp4_path(tmp_path, "test", "b"))
    with pytest.raises(DataError, match="does not exist"):
        read_comp4(tmp_path / "nope", "test", ["a"])


@pytest.mark.parametrize("line,problem", [
    ("000001 0.5 1 1 10", "expected 6 fields"),
    ("000001 0.5 1 1 10 10 7", "expected 6 fields"),
    ("000001 high 1 1 10 10", "must be numbers"),
    ("000001 0.5 1 1 ten 10", "must be numbers"),
    ("000001 nan 1 1 10 10", "finite"),
    ("000001 0.5 1 1 inf 10", "finite"),
    ("000001 0.5 10 1 8 10", "xmax < xmin - 1"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, problem):
    p = tmp_path / "comp4_det_test_dog.txt"
    p.write_text(f"000002 0.9 1 1 10 10\n{line}\n")
    with pytest.raises(DataError, match=problem) as e:
        read_comp4(tmp_path, "test", ["dog"])
    assert str(e.value).startswith(f"{p}:2: ")


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        write_comp4(tmp_path, "test", "dog", ["a b"], [1.0], [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        write_comp4(tmp_path, "test", "dog", ["a", "b"], [1.0], [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        write_comp4(tmp_path, "test", "dog", ["a"], [float("nan")], [[0, 0, 1, 1]])
    with pytest.raises(ValueError):
        Detections(["a"], [1.0, 2.0], [[0, 0, 1, 1]])
    assert not list(tmp_path.iterdir())


def test_read_single_file(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("im 1.5 2 3 4 5\n")
    d = read_comp4_file(p)
    np.testing.assert_array_equal(d.boxes, [[1, 2, 4, 5]])


def test_results_for_a_class_the_dataset_lacks_are_an_error(tmp_path):
    """A results file of the split for another class (a typo, another dataset's results) is
    named, not silently left out of the scores; other splits' files are not this split's."""
    write_comp4(tmp_path, "test", "dog", ["a"], [1.0], [[0, 0, 5, 5]])
    write_comp4(tmp_path, "val", "horse", ["a"], [1.0], [[0, 0, 5, 5]])  # another split: fine
    (tmp_path / "notes.txt").write_text("not a results file\n")
    assert len(read_comp4(tmp_path, "test", ["dog", "cat"])["dog"]) == 1
    typo = write_comp4(tmp_path, "test", "dgo", ["a"], [1.0], [[0, 0, 5, 5]])
    with pytest.raises(DataError) as e:
        read_comp4(tmp_path, "test", ["dog", "cat"])
    assert str(e.value) == f"{typo}: results for class 'dgo', which the dataset does not have (its classes: dog, cat)"


def test_results_paths_that_are_not_files_or_folders(tmp_path):
    (tmp_path / "comp4_det_test_dog.txt").mkdir()
    with pytest.raises(DataError, match=r"comp4_det_test_dog.txt: is not a file \(the results of class 'dog'\)"):
        read_comp4(tmp_path, "test", ["dog"])
    f = tmp_path / "results.txt"
    f.write_text("")
    with pytest.raises(DataError, match=rf"^{f}: is a file, not a results folder"):
        read_comp4(f, "test", ["dog"])


def test_results_file_that_is_not_text(tmp_path):
    p = tmp_path / "comp4_det_test_dog.txt"
    p.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(DataError) as e:
        read_comp4(tmp_path, "test", ["dog"])
    assert str(e.value) == f"{p}: cannot read results file (not UTF-8 text: byte 0xff at offset 0)"
