"""read_ilsvrc_det on a fixture ILSVRC2013 DET layout: train folders, val / val1 / val2,
map_det order, the blacklist as (image, class) pairs, box conventions, errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from lsda_core.data.ilsvrc import read_ilsvrc_det, read_synsets
from lsda_core.core.errors import DataError

W = ["n00000001", "n00000002", "n00000003"]


def test_synsets_in_index_order(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    assert read_synsets(root) == fx.SYNSETS  # the file's lines are out of order
    assert read_synsets(root)[1][1] == "baby bed"  # names may hold spaces


def test_synsets_from_meta_det_mat(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path, map_det=False)
    # leaves (the detection categories) by DET id; the internal node 4 is not a category
    fx.write_meta_det(root / "devkit" / "data" / "meta_det.mat", [
        (2, "n00000002", "baby bed", []),
        (4, "n09999999", "living thing", [1, 3]),
        (1, "n00000001", "accordion", []),
        (3, "n00000003", "zebra", []),
    ])
    assert read_synsets(root) == fx.SYNSETS
    assert read_ilsvrc_det(root, "val").classes == W


def test_train(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    ds = read_ilsvrc_det(root, "train")
    assert ds.classes == W and ds.split == "train" and ds.blacklist == set()
    ids = [im.image_id for im in ds.images]
    assert ids == ["n00000001_1", "n00000001_2", "n00000002_5"]
    a, b, c = ds.images
    assert a.path == root / "ILSVRC2013_DET_train" / "n00000001" / "n00000001_1.JPEG"
    assert (a.width, a.height) == (64, 48)
    assert len(a.objects) == 1 and a.objects[0].cls == "n00000001"
    # file xmin=5 ymin=6 xmax=40 ymax=30 (1-based inclusive) -> [4, 5, 40, 30]
    assert np.array_equal(a.objects[0].box, [4, 5, 40, 30])
    assert not a.objects[0].difficult  # ILSVRC has no difficult flag
    # no XML: no objects, size read from the JPEG header
    assert b.objects == [] and (b.width, b.height) == (33, 21)
    assert [o.cls for o in c.objects] == ["n00000002", "n00000003"]
    assert np.array_equal(c.objects[0].box, [0, 0, 50, 50])


def test_val_and_blacklist(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    ds = read_ilsvrc_det(root, "val")
    v = fx.VAL_NAMES
    assert [im.image_id for im in ds.images] == v
    assert ds.images[0].path == root / "ILSVRC2013_DET_val" / f"{v[0]}.JPEG"
    assert (ds.images[0].width, ds.images[0].height) == (50, 45)
    assert np.array_equal(ds.images[0].objects[0].box, [10, 20, 30, 40])
    # xmin=0 in the file (as in real ILSVRC boxes): 1 px out, clipped to the image
    assert np.array_equal(ds.images[1].objects[0].box, [0, 4, 19, 30])
    # a val image may hold objects of any class
    assert [o.cls for o in ds.images[1].objects] == ["n00000002", "n00000003"]
    assert ds.images[3].objects == []
    # blacklist lines "2 n00000002", "3 n00000003" index the val list
    assert ds.blacklist == {(v[1], "n00000002"), (v[2], "n00000003")}


def test_val1_val2(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    v = fx.VAL_NAMES
    d1, d2 = read_ilsvrc_det(root, "val1"), read_ilsvrc_det(root, "val2")
    assert [im.image_id for im in d1.images] == [v[0], v[2]]
    assert [im.image_id for im in d2.images] == [v[1], v[3]]
    # the blacklist follows the images by name, not by the halves' own line numbers
    assert d1.blacklist == {(v[2], "n00000003")}
    assert d2.blacklist == {(v[1], "n00000002")}
    assert len(d1.images[1].objects) == 2


def test_val_without_list_uses_sorted_folder(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    (root / "devkit" / "data" / "det_lists" / "val.txt").unlink()
    ds = read_ilsvrc_det(root, "val")
    assert [im.image_id for im in ds.images] == sorted(fx.VAL_NAMES)
    assert ds.blacklist == {(fx.VAL_NAMES[1], "n00000002"), (fx.VAL_NAMES[2], "n00000003")}


def test_no_blacklist_file(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    (root / "devkit" / "data" / "ILSVRC2013_det_validation_blacklist.txt").unlink()
    assert read_ilsvrc_det(root, "val").blacklist == set()


def test_zero_based_reading(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    one = read_ilsvrc_det(root, "val")
    zero = read_ilsvrc_det(root, "val", one_based=False)
    # xmin=11 ymin=21 xmax=30 ymax=40 as 0-based inclusive indices -> [11, 21, 31, 41]
    assert np.array_equal(zero.images[0].objects[0].box, [11, 21, 31, 41])
    # xmin=0 is exact when 0-based, 1 px out (clipped) when 1-based
    assert np.array_equal(zero.images[1].objects[0].box, [0, 5, 20, 31])
    # xmax=width, ymax=height: exact when 1-based, 1 px out (clipped) when 0-based
    assert np.array_equal(one.images[2].objects[1].box, [9, 9, 50, 45])
    assert np.array_equal(zero.images[2].objects[1].box, [10, 10, 50, 45])


def test_test_split_like_val(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    shutil.copytree(root / "ILSVRC2013_DET_val", root / "ILSVRC2013_DET_test")
    shutil.copytree(root / "ILSVRC2013_DET_bbox_val", root / "ILSVRC2013_DET_bbox_test")
    ds = read_ilsvrc_det(root, "test")
    assert len(ds) == 4 and ds.blacklist == set()


def test_alternative_devkit_folder(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path, devkit="ILSVRC2013_devkit")
    assert read_ilsvrc_det(root, "val1").classes == W


def test_given_classes(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    ds = read_ilsvrc_det(root, "val", classes=list(reversed(W)))
    assert ds.classes == list(reversed(W))
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val", classes=["n00000001", "n00000002"])
    msg = str(e.value)
    assert msg.startswith(str(root / "ILSVRC2013_DET_bbox_val" / f"{fx.VAL_NAMES[1]}.xml") + ":")
    assert "unknown class 'n00000003'" in msg


# ----------------------------------------------------------------------------- errors

def test_missing_root(tmp_path):
    p = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(p, "val")
    assert str(e.value).startswith(f"{p}:") and "data.ilsvrc_root" in str(e.value)


def test_unknown_split(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    with pytest.raises(DataError, match="unknown ILSVRC DET split 'trainval'"):
        read_ilsvrc_det(root, "trainval")


def test_missing_synsets(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path, map_det=False)
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val")
    assert str(e.value).startswith(str(root / "devkit" / "data" / "map_det.txt") + ":")
    assert "meta_det.mat" in str(e.value)


def test_bad_map_det_line(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "devkit" / "data" / "map_det.txt"
    p.write_text("n00000001 one accordion\n")
    with pytest.raises(DataError, match=r"map_det\.txt:1: index 'one' is not an integer"):
        read_synsets(root)


@pytest.mark.parametrize("name", ["map_det.txt", "det_lists/val1.txt", "ILSVRC2013_det_validation_blacklist.txt"])
def test_devkit_list_that_is_not_text(tmp_path, fx, name):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "devkit" / "data" / name
    p.write_bytes(b"\xff\xfe1 n0\n")
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val1")
    assert str(e.value) == f"{p}: cannot read (not UTF-8 text: byte 0xff at offset 0)"


def test_missing_val_half_list(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "devkit" / "data" / "det_lists" / "val2.txt"
    p.unlink()
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val2")
    assert str(e.value).startswith(f"{p}: split list not found") and "rbgirshick/rcnn" in str(e.value)


def test_missing_val_image(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "ILSVRC2013_DET_val" / f"{fx.VAL_NAMES[2]}.JPEG"
    p.unlink()
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val")
    assert str(e.value).startswith(f"{p}: image file not found")


def test_missing_val_annotation(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "ILSVRC2013_DET_bbox_val" / f"{fx.VAL_NAMES[0]}.xml"
    p.unlink()
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val1")
    assert str(e.value) == f"{p}: annotation file not found"


def test_malformed_train_xml(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "ILSVRC2013_DET_bbox_train" / "n00000002" / "n00000002_5.xml"
    p.write_text("<annotation><size><width>5</width>")
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "train")
    assert str(e.value).startswith(f"{p}: malformed XML (")


def test_box_outside_and_degenerate(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "ILSVRC2013_DET_bbox_val" / f"{fx.VAL_NAMES[3]}.xml"
    p.write_text(fx.ilsvrc_xml("val", "x", 50, 45, [("n00000001", 1, 1, 52, 20)]))
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val")
    assert str(e.value).startswith(f"{p}:") and "outside the 50x45 image" in str(e.value)
    p.write_text(fx.ilsvrc_xml("val", "x", 50, 45, [("n00000001", 10, 10, 9, 20)]))
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val")
    assert str(e.value).startswith(f"{p}:") and "degenerate box" in str(e.value)


def test_corrupt_train_image_without_xml(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "ILSVRC2013_DET_train" / "n00000001" / "n00000001_2.JPEG"
    p.write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "train")
    assert str(e.value).startswith(f"{p}: cannot read image (")


def test_bad_blacklist(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    p = root / "devkit" / "data" / "ILSVRC2013_det_validation_blacklist.txt"
    p.write_text("2 n00000002\n9 n00000003\n")
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "val")
    assert str(e.value).startswith(f"{p}:2: val image number 9 is not in the val list")
    p.write_text("n00000002 2\n")
    with pytest.raises(DataError, match=r"blacklist\.txt:1: expected '<val image number> <wnid>'"):
        read_ilsvrc_det(root, "val")


def test_missing_train_folders(tmp_path, fx):
    root = fx.make_ilsvrc(tmp_path)
    shutil.rmtree(root / "ILSVRC2013_DET_bbox_train")
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "train")
    assert str(e.value).startswith(str(root / "ILSVRC2013_DET_bbox_train") + ":")
    shutil.rmtree(root / "ILSVRC2013_DET_train")
    with pytest.raises(DataError) as e:
        read_ilsvrc_det(root, "train")
    assert str(e.value).startswith(str(root / "ILSVRC2013_DET_train") + ":")
