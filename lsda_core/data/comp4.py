"""Detection results in the VOC devkit's comp4 format.

One file per class, `comp4_det_<split>_<class>.txt`, one detection per line:
`<image id> <score> <xmin> <ymin> <xmax> <ymax>`, with the devkit's 1-based inclusive pixel
coordinates. In memory, boxes follow the study's 0-based pixel-edge convention; the
conversion is `structures.to_voc` / `from_voc`. Boxes are written with one decimal
(`%.1f`, so sub-pixel proposals survive) and scores with `%.6f` (the devkit's `%f`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lsda_core.store.files import atomic_write_text
from lsda_core.core.errors import DataError
from lsda_core.core.structures import from_voc, to_voc
from lsda_core.data.text import list_folder, read_text


def _numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass
class Detections:
    """The detections of one class: parallel image ids, scores and boxes (study convention).
    `source` names where they came from (a results file), for error messages."""

    image_ids: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    source: str | None = None

    def __post_init__(self) -> None:
        self.image_ids = list(map(str, self.image_ids))
        self.scores = _numpy(self.scores).reshape(-1)
        self.boxes = _numpy(self.boxes).reshape(-1, 4)
        n = len(self.image_ids)
        if self.scores.shape[0] != n or self.boxes.shape[0] != n:
            raise ValueError(f"detections need as many scores and boxes as image ids: "
                             f"{n} ids, {self.scores.shape[0]} scores, {self.boxes.shape[0]} boxes")

    def __len__(self) -> int:
        return len(self.image_ids)


def comp4_path(folder: Path, split: str, cls: str) -> Path:
    return Path(folder) / f"comp4_det_{split}_{cls}.txt"


def write_comp4(folder: Path, split: str, cls: str, image_ids: Iterable[str], scores: Any, boxes: Any) -> Path:
    """Write one class's detections (boxes in the study convention) atomically; returns the
    file's path. An empty set of detections writes an empty file."""
    ids = [str(i) for i in image_ids]
    s = _numpy(scores).reshape(-1)
    b = _numpy(boxes).reshape(-1, 4)
    if not (len(ids) == s.shape[0] == b.shape[0]):
        raise ValueError(f"{len(ids)} image ids, {s.shape[0]} scores, {b.shape[0]} boxes: need one each per detection")
    if not np.all(np.isfinite(s)) or not np.all(np.isfinite(b)):
        raise ValueError("scores and boxes must be finite")
    for i in ids:
        if not i or len(i.split()) != 1 or i.strip() != i:
            raise ValueError(f"image id {i!r} is empty or contains whitespace")
    lines = []
    for iid, score, box in zip(ids, s, b):
        x1, y1, x2, y2 = to_voc(box)
        lines.append(f"{iid} {score:.6f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}\n")
    path = comp4_path(folder, split, cls)
    atomic_write_text(path, "".join(lines))
    return path


def write_detections(folder: Path, split: str, detections: dict[str, Detections]) -> list[Path]:
    """Write every class of a `{class: Detections}` dict."""
    return [write_comp4(folder, split, c, d.image_ids, d.scores, d.boxes) for c, d in detections.items()]


def read_comp4_file(path: Path) -> Detections:
    """Parse one comp4 file; a malformed line raises DataError naming the file and line."""
    path = Path(path)
    text = read_text(path, "results file")
    ids: list[str] = []
    scores: list[float] = []
    boxes: list[np.ndarray] = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataError(f"{path}:{n}: expected 6 fields '<image id> <score> <xmin> <ymin> <xmax> <ymax>', "
                            f"got {len(parts)}")
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(f"{path}:{n}: score and box must be numbers, got {' '.join(parts[1:])!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise DataError(f"{path}:{n}: score and box must be finite, got {' '.join(parts[1:])!r}")
        box = from_voc(*vals[1:])
        if box[2] < box[0] or box[3] < box[1]:
            raise DataError(f"{path}:{n}: box has xmax < xmin - 1 or ymax < ymin - 1: {' '.join(parts[2:])}")
        ids.append(parts[0])
        scores.append(vals[0])
        boxes.append(box)
    return Detections(ids, np.array(scores, dtype=np.float64),
                      np.array(boxes, dtype=np.float64).reshape(-1, 4), source=str(path))


def read_comp4(folder: Path, split: str, classes: Iterable[str]) -> dict[str, Detections]:
    """The detections of each class from `folder`; a class without a file gets an empty
    `Detections` (it then scores AP 0). A missing folder, and a results file of this split
    for a class not in `classes` (a typo, or results of another dataset, that would
    otherwise be silently left out), are DataErrors naming the folder or file."""
    folder = Path(folder)
    classes = list(classes)
    if not folder.exists():
        raise DataError(f"{folder}: results folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a results folder (of comp4_det_{split}_<class>.txt files)")
    prefix, known = f"comp4_det_{split}_", set(classes)
    for path in sorted(folder / e.name for e in list_folder(folder)):
        cls = path.name[len(prefix):-len(".txt")]
        if path.name.startswith(prefix) and path.name.endswith(".txt") and cls not in known:
            shown = ", ".join(classes[:12]) + (f", ... ({len(classes)} in all)" if len(classes) > 12 else "")
            raise DataError(f"{path}: results for class {cls!r}, which the dataset does not have "
                            f"(its classes: {shown or 'none'})")
    out: dict[str, Detections] = {}
    for c in classes:
        path = comp4_path(folder, split, c)
        if path.exists() and not path.is_file():
            raise DataError(f"{path}: is not a file (the results of class {c!r})")
        out[c] = read_comp4_file(path) if path.exists() else Detections(source=str(path))
    return out
