"""ImageNet-style class folders: `<root>/<split>/<class>/<image>` (image-level labels only).

Class folders are named by WordNet id (as in ILSVRC2012 train) or by class name. When
`<root>/LOC_synset_mapping.txt` exists (lines `<wnid> <name...>`, as in the Kaggle
ILSVRC release) its order is the class order, so the label indices of every split agree
even if a split lacks a class; a folder may then be named by the wnid, the full name or
the first comma-separated name. Without it the classes are the sorted folder names of
the split (pass `classes` to keep several splits aligned).

Only file names are read (no decoding). Images: `.jpg`, `.jpeg`, `.png`, any case;
other files are ignored. Samples are ordered by class index, then file name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lsda_core.core.errors import DataError
from lsda_core.core.structures import ClassificationDataset
from lsda_core.data.text import list_folder, read_text

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MAPPING = "LOC_synset_mapping.txt"
ROOT_HINT = "data.imagenet_root must point at an ImageNet-style folder holding <split>/<class>/<images>"


def read_synset_mapping(path: Path) -> list[tuple[str, str]]:
    """(wnid, name) per line of a `LOC_synset_mapping.txt`, in file order."""
    lines = read_text(path).splitlines()
    rows, seen = [], set()
    for lineno, line in enumerate(lines, start=1):
        parts = line.split(None, 1)
        if not parts:
            continue
        wnid = parts[0]
        if wnid in seen:
            raise DataError(f"{path}:{lineno}: class {wnid} is listed twice")
        seen.add(wnid)
        rows.append((wnid, parts[1].strip() if len(parts) > 1 else wnid))
    if not rows:
        raise DataError(f"{path}: no classes listed")
    return rows


def _list_images(folder: Path) -> list[str]:
    return sorted(e.name for e in list_folder(folder)
                  if os.path.splitext(e.name)[1].lower() in IMAGE_EXTS
                  and not e.name.startswith(".") and e.is_file())


def read_image_folder(root: Path, split: str, classes: Sequence[str] | None = None) -> ClassificationDataset:
    """The images of `<root>/<split>/<class>/` with their class labels.

    `classes`: None -> the order of `<root>/LOC_synset_mapping.txt` if present, else the
    sorted class folder names; given -> that list (a folder whose class is not in it is a
    `DataError`). Errors name the folder: missing root or split folder, no class folders,
    an empty class folder, a class outside `classes`, no images at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ImageNet-style root not found ({ROOT_HINT})")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found ({ROOT_HINT}; split {split!r} "
                        f"needs {split}/<class>/<images>)")
    folders = sorted(e.name for e in list_folder(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DataError(f"{split_dir}: no class folders (images must be sorted into "
                        f"{split}/<class>/ folders)")

    mapping_file = root / MAPPING
    mapping = read_synset_mapping(mapping_file) if mapping_file.is_file() else None
    if classes is not None:
        cls = [str(c) for c in classes]
    elif mapping is not None:
        cls = [w for w, _ in mapping]
    else:
        cls = list(folders)
    index = {c: i for i, c in enumerate(cls)}
    # aliases through the mapping: a folder may be named by wnid or by (first) name
    alias: dict[str, int] = {}
    if mapping is not None:
        for wnid, name in mapping:
            keys = (wnid, name, name.split(",")[0].strip())
            target = next((index[k] for k in keys if k in index), None)
            if target is not None:
                for k in keys:
                    alias.setdefault(k, target)
    where = f"{MAPPING}" if (classes is None and mapping is not None) else "the given class list"

    per_class: list[tuple[int, Path, list[str]]] = []
    for folder in folders:
        label = index.get(folder, alias.get(folder))
        if label is None:
            raise DataError(f"{split_dir / folder}: class {folder!r} is not one of the "
                            f"{len(cls)} classes of {where}")
        files = _list_images(split_dir / folder)
        if not files:
            raise DataError(f"{split_dir / folder}: class folder holds no images (.jpg/.jpeg/.png)")
        per_class.append((label, split_dir / folder, files))
    per_class.sort(key=lambda t: (t[0], t[1].name))
    paths = [d / f for _, d, files in per_class for f in files]
    labels = np.array([lab for lab, _, files in per_class for _ in files], dtype=np.int64)
    if not paths:
        raise DataError(f"{split_dir}: no images found")
    return ClassificationDataset(name="image_folder", split=split, classes=cls, paths=paths,
                                 labels=labels, root=root)
