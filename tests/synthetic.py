"""Tiny synthetic data shared by the training and feature tests: coloured rectangles whose
class is their colour (classification images and detection scenes with proposals)."""
from pathlib import Path

import numpy as np
from PIL import Image

from lsda_core.core import params as P
from lsda_core.core.structures import ClassificationDataset, DetectionDataset, ImageAnn, ObjectAnn

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SMALL_NET = {"net.conv_channels": [8, 12, 16, 16, 12], "net.fc_width": 32, "net.dropout": 0.2, "net.lrn": False}


def params(**over):
    base = {"runtime.progress": False, "runtime.device": "cpu", **SMALL_NET,
            "pretrain.epochs": 10, "pretrain.batch_size": 16, "pretrain.lr": 0.02, "pretrain.lr_steps": [8],
            "finetune.iterations": 20, "finetune.fg_per_batch": 8, "finetune.bg_per_batch": 24,
            "finetune.lr_step": 15}
    base.update(over)
    return P.load(None, base)


def _background(rng, h, w):
    return np.clip(rng.normal(128, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def make_classification(root: Path, per_class: int, seed: int, split: str = "train") -> ClassificationDataset:
    """64 px images, one rectangle of the class's colour at a random place and size."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for c, (name, rgb) in enumerate(COLOURS.items()):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = _background(rng, 64, 64)
            w, h = rng.integers(20, 44, 2)
            x, y = rng.integers(0, 64 - w), rng.integers(0, 64 - h)
            img[y:y + h, x:x + w] = np.array(rgb) + rng.integers(-20, 20, 3)
            path = root / split / name / f"{k:03d}.png"
            Image.fromarray(img).save(path)
            paths.append(path)
            labels.append(c)
    return ClassificationDataset("synthetic", split, list(COLOURS), paths, np.array(labels), root)


def make_detection(root: Path, n_images: int, seed: int, classes=("red", "green", "blue")):
    """96 x 80 scenes with 1-2 coloured rectangles; proposals: jittered ground truth and
    random boxes (so both window lists are populated)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images, proposals = [], {}
    for i in range(n_images):
        img = _background(rng, 80, 96)
        objs = []
        for _ in range(int(rng.integers(1, 3))):
            cls = str(rng.choice(classes))
            w, h = rng.integers(20, 40, 2)
            x, y = rng.integers(0, 96 - w), rng.integers(0, 80 - h)
            img[y:y + h, x:x + w] = COLOURS[cls]
            objs.append(ObjectAnn(cls, np.array([x, y, x + w, y + h], dtype=np.float64)))
        path = root / f"{i:04d}.png"
        Image.fromarray(img).save(path)
        gt = np.array([o.box for o in objs])
        jitter = np.repeat(gt, 4, axis=0) + rng.normal(0, 3, (4 * len(gt), 4))
        x1 = rng.uniform(0, 70, (20, 1))
        y1 = rng.uniform(0, 55, (20, 1))
        rand = np.hstack([x1, y1, x1 + rng.uniform(8, 26, (20, 1)), y1 + rng.uniform(8, 25, (20, 1))])
        proposals[f"{i:04d}"] = np.vstack([jitter, rand]).astype(np.float32)
        images.append(ImageAnn(f"{i:04d}", path, 96, 80, objs))
    return DetectionDataset("synthetic", "train", list(classes), images, root), proposals

