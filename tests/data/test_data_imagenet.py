"""read_image_folder on fixture ImageNet-style folders."""
from __future__ import annotations

import numpy as np
import pytest

from lsda_core.data.imagenet import read_image_folder
from lsda_core.core.errors import DataError
from lsda_core.core.structures import ClassificationDataset


def test_mapping_order(tmp_path, fx):
    root = fx.make_imagenet(tmp_path)
    ds = read_image_folder(root, "train")
    assert isinstance(ds, ClassificationDataset) and ds.root == root and ds.split == "train"
    assert ds.classes == ["n02", "n03", "n01"]  # LOC_synset_mapping.txt order, not sorted
    names = [(p.parent.name, p.name) for p in ds.paths]
    # extensions of any case; notes.txt ignored; ordered by class index then file name
    assert names == [("n02", "a.jpg"), ("n02", "b.PNG"), ("n02", "c.JPEG"), ("n01", "x.jpg")]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 0, 2]
    # val has only one class, yet the indices agree with train
    val = read_image_folder(root, "val")
    assert val.classes == ds.classes and val.labels.tolist() == [2]


def test_mapping_that_is_not_text(tmp_path, fx):
    root = fx.make_imagenet(tmp_path)
    p = root / "LOC_synset_mapping.txt"
    p.write_bytes(b"n01 \xe9t\xe9\n")
    with pytest.raises(DataError) as e:
        read_image_folder(root, "train")
    assert str(e.value) == f"{p}: cannot read (not UTF-8 text: byte 0xe9 at offset 4)"


def test_unreadable_split_folder(tmp_path, fx, monkeypatch):
    import os

    root = fx.make_imagenet(tmp_path)
    real = os.scandir

    def scandir(path):  # as root, chmod 000 would not stop the reading: fake the refusal
        if os.fspath(path) == os.fspath(root / "train"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError) as e:
        read_image_folder(root, "train")
    assert str(e.value) == f"{root / 'train'}: cannot list the folder (Permission denied)"


def test_sorted_folders_without_mapping(tmp_path, fx):
    root = fx.make_imagenet(tmp_path, mapping=False)
    ds = read_image_folder(root, "train")
    assert ds.classes == ["n01", "n02"]
    assert ds.labels.tolist() == [0, 1, 1, 1]
    assert [p.name for p in ds.paths] == ["x.jpg", "a.jpg", "b.PNG", "c.JPEG"]


def test_folders_named_by_class_name(tmp_path, fx):
    root = fx.make_imagenet(tmp_path, by_name=True)
    ds = read_image_folder(root, "train")
    assert ds.classes == ["n02", "n03", "n01"]
    assert ds.labels.tolist() == [0, 0, 0, 2]


def test_given_classes(tmp_path, fx):
    root = fx.make_imagenet(tmp_path, mapping=False)
    ds = read_image_folder(root, "train", classes=["n02", "n01", "n05"])
    assert ds.classes == ["n02", "n01", "n05"] and ds.labels.tolist() == [0, 0, 0, 1]
    with pytest.raises(DataError) as e:
        read_image_folder(root, "train", classes=["n02"])
    assert str(e.value).startswith(str(root / "train" / "n01") + ": class 'n01' is not one of the 1 classes")


def test_folder_outside_mapping(tmp_path, fx):
    root = fx.make_imagenet(tmp_path)
    fx.write_jpeg(root / "train" / "n99" / "z.jpg", 8, 8)
    with pytest.raises(DataError) as e:
        read_image_folder(root, "train")
    assert str(e.value).startswith(str(root / "train" / "n99") + ":") and "LOC_synset_mapping.txt" in str(e.value)


def test_missing_root_and_split(tmp_path, fx):
    with pytest.raises(DataError) as e:
        read_image_folder(tmp_path / "nowhere", "train")
    assert str(e.value).startswith(f"{tmp_path / 'nowhere'}:") and "data.imagenet_root" in str(e.value)
    root = fx.make_imagenet(tmp_path)
    with pytest.raises(DataError) as e:
        read_image_folder(root, "test")
    assert str(e.value).startswith(f"{root / 'test'}: split folder not found")


def test_empty_class_folder(tmp_path, fx):
    root = fx.make_imagenet(tmp_path)
    (root / "train" / "n03").mkdir()
    (root / "train" / "n03" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        read_image_folder(root, "train")
    assert str(e.value).startswith(f"{root / 'train' / 'n03'}: class folder holds no images")


def test_no_class_folders(tmp_path, fx):
    fx.write_jpeg(tmp_path / "val" / "loose.jpg", 8, 8)
    with pytest.raises(DataError) as e:
        read_image_folder(tmp_path, "val")
    assert str(e.value).startswith(f"{tmp_path / 'val'}: no class folders")


def test_many_images_listed_without_decoding(tmp_path):
    """~10,000 images (the default world's classification set) are listed by name only:
    nothing is decoded (every file here is empty, so decoding any would fail)."""
    for c in range(50):
        d = tmp_path / "train" / f"c{c:02d}"
        d.mkdir(parents=True)
        for i in range(200):
            (d / f"{i}.jpg").write_bytes(b"")
    ds = read_image_folder(tmp_path, "train")
    assert len(ds) == 10000 and np.bincount(ds.labels).tolist() == [200] * 50
