"""Selective-search proposals: convention, caching, resuming, recall."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsda_core.detection import proposals as PR
from lsda_core.store.cache import Cache
from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn


def scene(tmp: Path, n: int) -> DetectionDataset:
    """Flat-coloured rectangles on a grey background: selective search must find them."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        img = np.full((60, 80, 3), 128, np.uint8)
        x1, y1 = int(rng.integers(0, 40)), int(rng.integers(0, 30))
        x2, y2 = x1 + int(rng.integers(12, 38)), y1 + int(rng.integers(12, 28))
        img[y1:y2, x1:x2] = rng.integers(0, 255, 3)
        path = tmp / f"{i}.png"
        Image.fromarray(img).save(path)
        images.append(ImageAnn(str(i), path, 80, 60, [ObjectAnn("box", np.array([x1, y1, x2, y2], float))]))
    return DetectionDataset("rects", "test", ["box"], images, root=tmp)


def test_boxes_are_edges_inside_image_and_unique(tmp_path):
    ds = scene(tmp_path, 1)
    b = PR.selective_search(np.asarray(Image.open(ds.images[0].path)), PR.ProposalConfig())
    assert b.dtype == np.float32 and b.shape[1] == 4 and len(b) > 0
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 80).all() and (b[:, 3] <= 60).all()
    assert (b[:, 2] > b[:, 0]).all() and len(np.unique(b, axis=0)) == len(b)


def test_same_seed_same_order(tmp_path):
    """OpenCV ranks regions with a random factor; seeding makes the order reproducible."""
    rng = np.random.default_rng(1)
    img = np.repeat(np.repeat(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), 8, 0), 8, 1)
    cfg = PR.ProposalConfig()
    a, b, c = PR.selective_search(img, cfg, 3), PR.selective_search(img, cfg, 3), PR.selective_search(img, cfg, 4)
    np.testing.assert_array_equal(a, b)
    assert sorted(map(tuple, a)) == sorted(map(tuple, c))  # another seed: same boxes, ranked differently


def test_rcnn_settings_finer_segments_and_resized_search(tmp_path):
    """OpenCV's default fast mode is k = 150, 300 (`base_k` 150); R-CNN's is k = 50, 100, another
    segmentation (on the world's scenes, about twice the boxes). Searching a resized image (`width`, R-CNN's 500 px) gives
    boxes in the original image's pixels, and `min_side` counts at the searched size."""
    rng = np.random.default_rng(2)
    img = np.repeat(np.repeat(rng.integers(0, 255, (15, 20, 3), dtype=np.uint8), 4, 0), 4, 1)  # 80 x 60
    default = PR.selective_search(img, PR.ProposalConfig(), 0)
    np.testing.assert_array_equal(default, PR.selective_search(img, PR.ProposalConfig(base_k=150), 0))
    fine = PR.selective_search(img, PR.ProposalConfig(base_k=50), 0)
    assert set(map(tuple, fine)) != set(map(tuple, default))
    big = PR.selective_search(img, PR.ProposalConfig(width=240), 0)  # searched at 3x
    assert len(big) and (big[:, 2] <= 80 + 1e-4).all() and (big[:, 3] <= 60 + 1e-4).all()
    assert not np.allclose(big, np.round(big))  # scaled back from the 3x search: thirds of a pixel
    wide = PR.selective_search(img, PR.ProposalConfig(width=240, min_side=30), 0)
    assert (wide[:, 2] - wide[:, 0] >= 10 - 1e-4).all() and len(wide) < len(big)


def test_recall_on_rectangles_and_max_boxes(tmp_path):
    ds = scene(tmp_path, 6)
    props = PR.compute_proposals(ds, Cache(tmp_path / "c"), PR.ProposalConfig(), workers=2, progress=False)
    r = PR.proposal_recall(ds, props, iou=0.7)
    assert r["objects"] == 6 and r["recall"] == 1.0  # a flat rectangle is one segment
    few = PR.compute_proposals(ds, Cache(tmp_path / "c"), PR.ProposalConfig(max_boxes=3), workers=1, progress=False)
    assert max(len(v) for v in few.values()) <= 3
    for k in props:  # same order whatever the cap: the first boxes agree
        np.testing.assert_array_equal(few[k], props[k][: len(few[k])])


def test_cached_and_resumed(tmp_path, monkeypatch):
    """Interrupted at the third image, a rerun computes only the images not yet saved, and a
    third run none. Selective search runs in forked processes (`compute_proposals`), so each
    image read is noted in a file."""
    ds, cache = scene(tmp_path, 4), Cache(tmp_path / "c")
    log, armed = tmp_path / "read.txt", tmp_path / "armed"
    armed.touch()
    real = PR.load_image

    def noted(path):
        with open(log, "a") as f:
            f.write(Path(path).stem + "\n")
        if Path(path).stem == "2" and armed.exists():
            armed.unlink()
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(PR, "load_image", noted)
    with pytest.raises(KeyboardInterrupt):
        PR.compute_proposals(ds, cache, workers=1, progress=False)
    before = len(log.read_text().split())
    first = PR.compute_proposals(ds, cache, workers=1, progress=False)  # resumes: images 2 and 3 left
    assert log.read_text().split()[before:] == ["2", "3"]
    again = PR.compute_proposals(ds, cache, workers=1, progress=False)  # cached: no work
    assert len(log.read_text().split()) == before + 2
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
