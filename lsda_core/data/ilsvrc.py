"""ILSVRC2013 DET layout (the real release, or the embedded world's ILSVRC-like benchmark).

Layout under `root` (as in R-CNN's `imdb_from_ilsvrc13.m`):

    ILSVRC2013_DET_train/<wnid>/<image>.JPEG        train images, one folder per synset
    ILSVRC2013_DET_bbox_train/<wnid>/<image>.xml    their boxes (an image without XML has none)
    ILSVRC2013_DET_val/<image>.JPEG                 val images
    ILSVRC2013_DET_bbox_val/<image>.xml             their boxes (every val image has one)
    devkit/data/map_det.txt                         `<wnid> <1-based index> <name>` per line
                                                    (or the real devkit's meta_det.mat)
    devkit/data/det_lists/{val,val1,val2}.txt       `<image name> [<index>]` per line
    devkit/data/ILSVRC2013_det_validation_blacklist.txt
                                                    `<1-based index into val.txt> <wnid>`

The embedded world also writes `ILSVRC2013_DET_bbox_train_every/<wnid>/<image>.xml`: the same
train images with the boxes of every category (`TRAIN_EVERY_BOX`), which the real release does
not have; LSDA's oracle reads them when present.

(`ILSVRC2013_devkit/` is accepted in place of `devkit/`.) Splits: `train`, `val`, `val1`,
`val2` (R-CNN's two halves of val, from rbgirshick/rcnn `imdb/data-splits/det_lists`), and
`test` where boxes exist for it (the embedded world; the real test boxes were never
released). Object classes are WordNet ids; the dataset's `classes` are the wnids in
map_det order. ILSVRC objects have no difficult flag (it reads as False when absent).

The blacklist names (image, category) pairs whose detections the devkit's evaluation
ignores. Its image numbers index the full val list (`det_lists/val.txt`, whose indices
are its sorted line numbers); they are resolved to image names here, so the pairs are
right for `val1` / `val2` as well (R-CNN's MATLAB code applied it to `val` only).

Box convention (finding). The ILSVRC XML files are "PASCAL VOC format" (devkit readme),
and the devkit's `evaluation/eval_detection.m` reads `xmin ymin xmax ymax` as they are and
measures widths as `xmax - xmin + 1`: inclusive pixel indices, exactly like VOC. R-CNN
(`imdb/roidb_from_ilsvrc13.m`, via the devkit's `VOCreadrecxml`) uses them as-is beside
its 1-based MATLAB proposals and writes 1-based results. Later ImageNet loaders read the
same files as 0-based instead (MSRA's ImageNet DET/VID loaders keep `xmin` as-is and clip
`xmax` to `width - 1`; several py-faster-rcnn ImageNet ports comment out VOC's `- 1`),
which points to `xmin = 0` / `xmax = width` occurring in the files: neither reading fits
every box exactly. `one_based=True` (default) reads them as the devkit evaluation and
R-CNN do, and as the embedded world writes them: `x1 = xmin - 1`, `x2 = xmax`;
`one_based=False` reads 0-based inclusive indices: `x1 = xmin`, `x2 = xmax + 1`. Either
way a box may stick out of the image by 1 px and is then clipped to it; the two readings
differ by a 1 px shift of the box (IoU 0.96 between the two readings of a 100 px square,
0.82 for a 20 px one).

Note also (image-net.org/download-bboxes) that `<size>` is the size the image was shown to
the annotator, which for a few train images differs from the JPEG's real size; boxes are
relative to `<size>`, which is what `ImageAnn.width/height` hold.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from lsda_core.data.images import image_size
from lsda_core.data.text import list_folder, read_text
from lsda_core.data.voc import parse_annotation
from lsda_core.core.errors import DataError
from lsda_core.core.structures import DetectionDataset, ImageAnn

SPLITS = ("train", "val", "val1", "val2", "test")
IMAGE_EXTS = (".jpeg", ".jpg", ".png")
DEVKIT_DIRS = ("devkit", "ILSVRC2013_devkit")
BLACKLIST = "ILSVRC2013_det_validation_blacklist.txt"
ROOT_HINT = ("data.ilsvrc_root must point at the folder holding ILSVRC2013_DET_train/, "
             "ILSVRC2013_DET_val/ and devkit/")


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ILSVRC root not found ({ROOT_HINT})")
    return root


def _devkit_data(root: Path) -> Path:
    for d in DEVKIT_DIRS:
        p = root / d / "data"
        if p.is_dir():
            return p
    return root / DEVKIT_DIRS[0] / "data"


def read_synsets(root: Path) -> list[tuple[str, str]]:
    """The detection synsets as (wnid, name) in index order, from `devkit/data/map_det.txt`
    or, when that is absent, the real devkit's `meta_det.mat` (its leaf synsets, i.e. the
    200 detection categories, ordered by their DET id)."""
    root = _check_root(root)
    data = _devkit_data(root)
    txt, mat = data / "map_det.txt", data / "meta_det.mat"
    if txt.is_file():
        return _synsets_from_txt(txt)
    if mat.is_file():
        return _synsets_from_mat(mat)
    raise DataError(f"{txt}: synset list not found (nor {mat.name}); {ROOT_HINT}")


def _synsets_from_txt(path: Path) -> list[tuple[str, str]]:
    rows = []
    lines = read_text(path).splitlines()
    for lineno, line in enumerate(lines, start=1):
        parts = line.split(None, 2)
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected '<wnid> <index> <name>', got {line.strip()!r}")
        try:
            idx = int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: index {parts[1]!r} is not an integer") from None
        name = parts[2].strip() if len(parts) > 2 else parts[0]
        rows.append((idx, parts[0], name))
    return _ordered(path, rows)


def _ordered(path: Path, rows: list[tuple[int, str, str]]) -> list[tuple[str, str]]:
    if not rows:
        raise DataError(f"{path}: no synsets listed")
    rows.sort(key=lambda r: r[0])
    seen: set[str] = set()
    for _, wnid, _ in rows:
        if wnid in seen:
            raise DataError(f"{path}: synset {wnid} is listed twice")
        seen.add(wnid)
    return [(w, n) for _, w, n in rows]


def _synsets_from_mat(path: Path) -> list[tuple[str, str]]:
    from scipy.io import loadmat

    try:
        m = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises several types for bad files
        raise DataError(f"{path}: cannot read MATLAB file ({e})") from None
    if "synsets" not in m:
        raise DataError(f"{path}: no 'synsets' variable")
    rows = []
    for pos, s in enumerate(np.atleast_1d(m["synsets"]), start=1):
        fields = getattr(s, "_fieldnames", None) or []
        if "WNID" not in fields:
            raise DataError(f"{path}: synsets have no WNID field (fields: {', '.join(fields)})")
        id_field = next((f for f in fields if re.fullmatch(r"ILSVRC\d*_DET_ID", f)), None)
        idx = int(getattr(s, id_field)) if id_field else pos
        children = getattr(s, "children", None)
        if children is not None and np.size(children) > 0:
            continue  # an internal node of the hierarchy, not a detection category
        name = str(getattr(s, "name", "") or s.WNID)
        rows.append((idx, str(s.WNID), name))
    return _ordered(path, rows)


def _images_in(folder: Path) -> dict[str, str]:
    """stem -> file name of the image files directly in `folder`."""
    out = {}
    for e in list_folder(folder):
        stem, ext = os.path.splitext(e.name)
        if ext.lower() in IMAGE_EXTS and not e.name.startswith(".") and e.is_file():
            out[stem] = e.name
    return out


TRAIN_EVERY_BOX = "ILSVRC2013_DET_bbox_train_every"


def read_ilsvrc_det(root: Path, split: str, classes: Sequence[str] | None = None,
                    one_based: bool = True, every_box: bool = False) -> DetectionDataset:
    """A split of the ILSVRC2013 DET layout (see the module docstring).

    `classes`: None -> the wnids of `read_synsets(root)`; given -> the list to use. Either
    way an object of a class outside the list is a `DataError`. `one_based`: how to read
    the XML's box coordinates (see the module docstring). `every_box` (train only): read the
    boxes of every category from `TRAIN_EVERY_BOX` instead (a DataError when it is absent).
    """
    root = _check_root(root)
    if split not in SPLITS:
        raise DataError(f"{root}: unknown ILSVRC DET split {split!r} (expected one of {', '.join(SPLITS)})")
    cls = list(classes) if classes is not None else [w for w, _ in read_synsets(root)]
    wanted = set(cls)
    blacklist: set[tuple[str, str]] = set()
    if every_box and split != "train":
        raise DataError(f"{root}: every_box applies to the train split only, not {split!r}")
    if split == "train":
        images = _read_train(root, wanted, one_based, TRAIN_EVERY_BOX if every_box else "ILSVRC2013_DET_bbox_train")
    else:
        images = _read_listed(root, split, wanted, one_based)
        if split in ("val", "val1", "val2"):
            blacklist = _read_blacklist(root, {im.image_id for im in images})
    return DetectionDataset(name="ilsvrc2013_det", split=split, classes=cls, images=images,
                            root=root, blacklist=blacklist)


def _read_train(root: Path, wanted: set[str], one_based: bool, bbox_folder: str) -> list[ImageAnn]:
    img_root = root / "ILSVRC2013_DET_train"
    bbox_root = root / bbox_folder
    if not img_root.is_dir():
        raise DataError(f"{img_root}: train image folder not found ({ROOT_HINT})")
    if not bbox_root.is_dir():
        raise DataError(f"{bbox_root}: train annotation folder not found ({ROOT_HINT})")
    folders = sorted(e.name for e in list_folder(img_root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DataError(f"{img_root}: no class folders (expected ILSVRC2013_DET_train/<wnid>/<image>.JPEG)")
    images = []
    for folder in folders:
        files = _images_in(img_root / folder)
        xml_dir = bbox_root / folder
        xmls = {e.name for e in list_folder(xml_dir)} if xml_dir.is_dir() else set()
        for stem in sorted(files):
            path = img_root / folder / files[stem]
            if f"{stem}.xml" in xmls:
                images.append(parse_annotation(xml_dir / f"{stem}.xml", stem, path, wanted, one_based))
            else:  # the devkit: images without annotated objects may have no XML
                w, h = image_size(path)
                images.append(ImageAnn(image_id=stem, path=path, width=w, height=h))
    if not images:
        raise DataError(f"{img_root}: no train images (.JPEG/.jpg/.png) in any class folder")
    return images


def _read_list(path: Path) -> list[tuple[int, str]]:
    """(index, image name) per line of a det_lists file; the index is the line number
    when the line has none."""
    lines = read_text(path).splitlines()
    out = []
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        idx = lineno
        if len(parts) > 1:
            try:
                idx = int(parts[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected '<image name> [<index>]', got {line.strip()!r}") from None
        out.append((idx, parts[0]))
    return out


def _read_listed(root: Path, split: str, wanted: set[str], one_based: bool) -> list[ImageAnn]:
    part = "val" if split.startswith("val") else split
    img_dir = root / f"ILSVRC2013_DET_{part}"
    bbox_dir = root / f"ILSVRC2013_DET_bbox_{part}"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: {part} image folder not found ({ROOT_HINT})")
    if not bbox_dir.is_dir():
        raise DataError(f"{bbox_dir}: {part} annotation folder not found ({ROOT_HINT})")
    files = _images_in(img_dir)
    list_file = _devkit_data(root) / "det_lists" / f"{split}.txt"
    if list_file.is_file():
        names = [n for _, n in _read_list(list_file)]
    elif split in ("val", "test"):
        names = sorted(files)  # what the devkit's val.txt lists
    else:
        raise DataError(f"{list_file}: split list not found ({split} is one of R-CNN's two halves "
                        "of val: copy imdb/data-splits/det_lists/{val1,val2}.txt of rbgirshick/rcnn there)")
    if not names:
        raise DataError(f"{list_file if list_file.is_file() else img_dir}: no {split} images listed")
    images = []
    for name in names:
        if name not in files:
            raise DataError(f"{img_dir / (name + '.JPEG')}: image file not found"
                            + (f" (listed in {list_file})" if list_file.is_file() else ""))
        images.append(parse_annotation(bbox_dir / f"{name}.xml", name, img_dir / files[name],
                                       wanted, one_based))
    return images


def _val_index(root: Path) -> dict[int, str]:
    """1-based val image number -> name, as the blacklist counts them: det_lists/val.txt,
    or the sorted val image folder when that list is absent."""
    val_list = _devkit_data(root) / "det_lists" / "val.txt"
    if val_list.is_file():
        return dict(_read_list(val_list))
    img_dir = root / "ILSVRC2013_DET_val"
    return {i: n for i, n in enumerate(sorted(_images_in(img_dir)), start=1)}


def _blacklist_file(root: Path) -> Path | None:
    data = _devkit_data(root)
    p = data / BLACKLIST
    if p.is_file():
        return p
    others = sorted(data.glob("*_det_validation_blacklist.txt")) if data.is_dir() else []
    return others[0] if others else None


def _read_blacklist(root: Path, names: set[str]) -> set[tuple[str, str]]:
    path = _blacklist_file(root)
    if path is None:
        return set()
    index = _val_index(root)
    lines = read_text(path).splitlines()
    pairs = set()
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].lstrip("+-").isdigit():
            raise DataError(f"{path}:{lineno}: expected '<val image number> <wnid>', got {line.strip()!r}")
        num = int(parts[0])
        if num not in index:
            raise DataError(f"{path}:{lineno}: val image number {num} is not in the val list "
                            f"({len(index)} images)")
        if index[num] in names:
            pairs.add((index[num], parts[1]))
    return pairs
