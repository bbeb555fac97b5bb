"""PASCAL VOC layout: annotation XML (any year) and ImageSets lists.

Writing lives here beside reading so the embedded world and the tests' fixtures produce
exactly what the reader accepts, and what real VOC devkits contain.

Reading (`read_voc`) follows the devkit (`VOCreadrecxml.m`, `VOCinit.m`):
- the split list is `ImageSets/Main/<split>.txt`, one image id per line; the annotation
  is `Annotations/<id>.xml` and the image `JPEGImages/<id>.jpg` (the `<filename>` of the
  XML is used when it names the same id with another extension);
- `<difficult>`, `<truncated>`, `<occluded>` absent -> 0, `<pose>` absent -> Unspecified;
- `<bndbox>` holds 1-based inclusive pixel indices, integers in VOC2007, sometimes
  decimals in later years; they become the study's 0-based edge boxes through
  `structures.from_voc` (`x1 = xmin - 1`, `x2 = xmax`);
- a box may stick out of the image by at most 1 px (real files have `xmax = width + 1`
  and `xmin = 0` here and there); such boxes are clipped to the image, anything further
  out is a `DataError`, as is `xmax < xmin` or `ymax < ymin`;
- objects marked difficult are kept, with `difficult=True`: evaluation decides;
- the study's own `<attributes>` element (embedded world only) becomes `ObjectAnn.attrs`.

Every error is a `DataError` whose message starts with the offending file's path.
"""
from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lsda_core.store.files import atomic_write_bytes
from lsda_core.core.errors import DataError
from lsda_core.data.images import check_image
from lsda_core.data.text import read_text
from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn, to_voc

# The 20 classes in devkit order (VOCinit.m).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# How far (px) a box may extend past the image border before it is an error.
BOX_TOLERANCE = 1.0

ROOT_HINT = ("a VOC root (data.voc_root, or --dataset of lsda eval / analyze) is the folder holding Annotations/, "
             "JPEGImages/ and ImageSets/")


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _attrs_xml(parent: ET.Element, attrs: dict[str, Any]) -> None:
    """Extra per-object attributes (not in real VOC; readers ignore unknown tags)."""
    el = _sub(parent, "attributes")
    for k in sorted(attrs):
        v = attrs[k]
        if isinstance(v, dict):  # e.g. parts: {name: visible fraction}
            sub = _sub(el, k)
            for name in sorted(v):
                _sub(sub, "item", None).attrib.update({"name": str(name), "value": _fmt(v[name])})
        else:
            _sub(el, k, _fmt(v))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def voc_xml(ann: ImageAnn, folder: str = "VOC2007", depth: int = 3) -> bytes:
    """The annotation XML of one image, VOC style (1-based inclusive integer boxes)."""
    root = ET.Element("annotation")
    _sub(root, "folder", folder)
    _sub(root, "filename", Path(ann.path).name)
    size = _sub(root, "size")
    _sub(size, "width", ann.width)
    _sub(size, "height", ann.height)
    _sub(size, "depth", depth)
    _sub(root, "segmented", 0)
    for o in ann.objects:
        _object_xml(root, o)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _object_xml(root: ET.Element, o: ObjectAnn) -> None:
    obj = _sub(root, "object")
    _sub(obj, "name", o.cls)
    _sub(obj, "pose", o.pose)
    _sub(obj, "truncated", int(o.truncated))
    _sub(obj, "occluded", int(o.occluded))
    _sub(obj, "difficult", int(o.difficult))
    bb = _sub(obj, "bndbox")
    for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), to_voc(o.box)):
        _sub(bb, tag, int(round(v)))
    if o.attrs:
        _attrs_xml(obj, o.attrs)


def write_voc_xml(path: Path, ann: ImageAnn, folder: str = "VOC2007") -> None:
    """Write one annotation file atomically."""
    atomic_write_bytes(Path(path), voc_xml(ann, folder))


def write_imagesets(root: Path, split: str, image_ids: list[str], classes: list[str],
                    present: dict[str, dict[str, int]] | None = None) -> None:
    """`ImageSets/Main/<split>.txt` and, when `present` (image_id -> class -> 1/0/-1 as in
    the devkit: present, only difficult, absent) is given, `<class>_<split>.txt`."""
    main = Path(root) / "ImageSets" / "Main"
    atomic_write_bytes(main / f"{split}.txt", "".join(f"{i}\n" for i in image_ids).encode())
    if present is None:
        return
    for c in classes:
        lines = "".join(f"{i} {present.get(i, {}).get(c, -1):2d}\n" for i in image_ids)
        atomic_write_bytes(main / f"{c}_{split}.txt", lines.encode())


def write_segmentation_list(root: Path, split: str, image_ids: list[str]) -> None:
    """`ImageSets/Segmentation/<split>.txt`: the images of a split that have class masks."""
    path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    atomic_write_bytes(path, "".join(f"{i}\n" for i in image_ids).encode())


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+\Z")


def _number(text: str | None) -> Any:
    """An `<attributes>` value: int, float, or the string itself."""
    t = (text or "").strip()
    if _INT_RE.match(t):
        return int(t)
    try:
        v = float(t)
    except ValueError:
        return t
    return v


def _read_attrs(el: ET.Element) -> dict[str, Any]:
    """The `<attributes>` element written by `_attrs_xml`: scalars as numbers, elements
    with `<item name= value=>` children (and empty elements) as dicts."""
    out: dict[str, Any] = {}
    for child in el:
        items = [c for c in child if c.tag == "item"]
        if items:
            out[child.tag] = {c.get("name", ""): _number(c.get("value")) for c in items}
        elif len(child) == 0 and not (child.text or "").strip():
            out[child.tag] = {}
        else:
            out[child.tag] = _number(child.text)
    return out


def _flag(obj: ET.Element, tag: str, xml: Path, k: int) -> bool:
    el = obj.find(tag)
    if el is None or not (el.text or "").strip():
        return False
    t = el.text.strip()
    try:
        return int(float(t)) != 0
    except ValueError:
        raise DataError(f"{xml}: object {k}: <{tag}> is {t!r}, not 0 or 1") from None


def _coord(bb: ET.Element, tag: str, xml: Path, k: int) -> float:
    el = bb.find(tag)
    if el is None or not (el.text or "").strip():
        raise DataError(f"{xml}: object {k}: <bndbox> has no <{tag}>")
    try:
        v = float(el.text.strip())
    except ValueError:
        raise DataError(f"{xml}: object {k}: <bndbox><{tag}> is {el.text.strip()!r}, not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{xml}: object {k}: <bndbox><{tag}> is {el.text.strip()!r}")
    return v


def _size(root: ET.Element, xml: Path) -> tuple[int, int]:
    size = root.find("size")
    if size is None:
        raise DataError(f"{xml}: no <size> element (image width and height)")
    out = []
    for tag in ("width", "height"):
        el = size.find(tag)
        if el is None or not (el.text or "").strip():
            raise DataError(f"{xml}: <size> has no <{tag}>")
        try:
            v = float(el.text.strip())
        except ValueError:
            raise DataError(f"{xml}: <size><{tag}> is {el.text.strip()!r}, not a number") from None
        if not math.isfinite(v) or v < 1 or v != int(v):
            raise DataError(f"{xml}: <size><{tag}> is {el.text.strip()!r}, not a positive integer")
        out.append(int(v))
    return out[0], out[1]


def parse_annotation(xml: Path, image_id: str, image_path: Path,
                     classes: set[str] | None = None, one_based: bool = True) -> ImageAnn:
    """One VOC-style annotation file (VOC or ILSVRC DET) as an `ImageAnn`.

    `one_based`: the file holds 1-based inclusive pixel indices (VOC; `x1 = xmin - 1`,
    `x2 = xmax`); False: 0-based inclusive indices (`x1 = xmin`, `x2 = xmax + 1`).
    `classes`: when given, an object of another class is a `DataError`.
    """
    xml = Path(xml)
    return _ann_from_root(_parse_xml(xml), xml, image_id, image_path, classes, one_based)


def _parse_xml(xml: Path) -> ET.Element:
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        raise DataError(f"{xml}: annotation file not found") from None
    except ET.ParseError as e:
        raise DataError(f"{xml}: malformed XML ({e})") from None
    except OSError as e:
        raise DataError(f"{xml}: cannot read annotation file ({e.strerror or e})") from None
    if root.tag != "annotation":
        raise DataError(f"{xml}: root element is <{root.tag}>, not <annotation>")
    return root


def _ann_from_root(root: ET.Element, xml: Path, image_id: str, image_path: Path,
                   classes: set[str] | None, one_based: bool) -> ImageAnn:
    width, height = _size(root, xml)
    off = 1.0 if one_based else 0.0
    objects = []
    for k, obj in enumerate(root.iter("object"), start=1):
        name_el = obj.find("name")
        name = (name_el.text or "").strip() if name_el is not None else ""
        if not name:
            raise DataError(f"{xml}: object {k} has no <name>")
        if classes is not None and name not in classes:
            raise DataError(f"{xml}: object {k} has unknown class {name!r} "
                            f"(not one of the {len(classes)} classes)")
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{xml}: object {k} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (_coord(bb, t, xml, k) for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(f"{xml}: object {k} ({name}) has a degenerate box "
                            f"(xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g})")
        box = np.array([xmin - off, ymin - off, xmax + 1.0 - off, ymax + 1.0 - off], dtype=np.float64)
        t = BOX_TOLERANCE
        if box[0] < -t or box[1] < -t or box[2] > width + t or box[3] > height + t:
            raise DataError(f"{xml}: object {k} ({name}) box (xmin={xmin:g} ymin={ymin:g} "
                            f"xmax={xmax:g} ymax={ymax:g}) lies outside the {width}x{height} image")
        np.clip(box, 0.0, [width, height, width, height], out=box)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DataError(f"{xml}: object {k} ({name}) box (xmin={xmin:g} ymin={ymin:g} "
                            f"xmax={xmax:g} ymax={ymax:g}) lies outside the {width}x{height} image")
        pose_el = obj.find("pose")
        pose = (pose_el.text or "").strip() if pose_el is not None else ""
        attrs_el = obj.find("attributes")
        objects.append(ObjectAnn(
            cls=name, box=box,
            difficult=_flag(obj, "difficult", xml, k),
            truncated=_flag(obj, "truncated", xml, k),
            occluded=_flag(obj, "occluded", xml, k),
            pose=pose or "Unspecified",
            attrs=_read_attrs(attrs_el) if attrs_el is not None else {},
        ))
    return ImageAnn(image_id=image_id, path=Path(image_path), width=width, height=height,
                    objects=objects)


def read_id_list(path: Path) -> list[str]:
    """Image ids of a split list: the first token of each non-empty line."""
    text = read_text(path, "split list")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _image_file(root: ET.Element, images: Path, image_id: str) -> Path:
    """`JPEGImages/<id>.jpg` as in the devkit, unless the XML's `<filename>` names the same
    id with another extension (e.g. `.png`, `.jpeg`)."""
    fn = root.findtext("filename")
    if fn:
        fn = fn.strip()
        stem, ext = os.path.splitext(fn)
        if stem == image_id and ext:
            return images / fn
    return images / f"{image_id}.jpg"


def infer_classes(names: Iterable[str]) -> list[str]:
    """VOC_CLASSES when every name is a VOC class, else the sorted set of names."""
    seen = set(names)
    if seen <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(seen)


def read_voc(root: Path, split: str, classes: Sequence[str] | None = None,
             check_images: bool = False) -> DetectionDataset:
    """A VOC-layout split (any VOC year, or the embedded world's VOC-like benchmark).

    `root` holds `Annotations/`, `JPEGImages/` and `ImageSets/Main/<split>.txt`.
    `classes`: None -> `VOC_CLASSES` if every object is a VOC class, else the sorted set
    of class names seen; given -> an object of any other class is a `DataError`.
    `check_images`: also decode every image file completely (`images.check_image`) and
    require its size to be the annotation's; any failure is a DataError naming the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: VOC root not found ({ROOT_HINT})")
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        if not (root / "Annotations").is_dir():
            raise DataError(f"{root}: no Annotations/ folder here ({ROOT_HINT}, e.g. VOCdevkit/VOC2007)")
        raise DataError(f"{split_file}: split list not found ({ROOT_HINT}; "
                        f"split {split!r} needs ImageSets/Main/{split}.txt)")
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir}: annotation folder not found ({ROOT_HINT})")
    ids = read_id_list(split_file)
    if not ids:
        raise DataError(f"{split_file}: split list is empty")
    img_dir = root / "JPEGImages"
    wanted = set(classes) if classes is not None else None
    images = []
    for image_id in ids:
        xml = ann_dir / f"{image_id}.xml"
        tree = _parse_xml(xml)
        images.append(_ann_from_root(tree, xml, image_id, _image_file(tree, img_dir, image_id),
                                     wanted, True))
    if check_images:
        for ann in images:
            if not ann.path.is_file():
                raise DataError(f"{ann.path}: image file not found (image {ann.image_id!r} of {split_file})")
            size = check_image(ann.path)
            if size != (ann.width, ann.height):
                raise DataError(f"{ann.path}: image is {size[0]}x{size[1]} px but {ann_dir / (ann.image_id + '.xml')} "
                                f"says {ann.width}x{ann.height}")
    cls = list(classes) if classes is not None else infer_classes(
        o.cls for im in images for o in im.objects)
    return DetectionDataset(name="voc", split=split, classes=cls, images=images, root=root)


def read_segmentation_split(root: Path, split: str) -> tuple[list[str], list[str]]:
    """The image ids of a VOC segmentation split (`ImageSets/Segmentation/<split>.txt`) and the
    class of each label index of its `SegmentationClass/` masks: background first, then the
    classes of those images' annotations in `infer_classes` order (VOC's 20 for real VOC), so a
    mask's value i names class i of this list (255 is VOC's void border)."""
    root = Path(root)
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"{split_file}: segmentation split list not found (a VOC root with ImageSets/Segmentation/, "
                        "SegmentationClass/ and Annotations/)")
    ids = read_id_list(split_file)
    if not ids:
        raise DataError(f"{split_file}: split list is empty")
    names = []
    for image_id in ids:
        xml = root / "Annotations" / f"{image_id}.xml"
        names += [o.findtext("name", "").strip() for o in _parse_xml(xml).iter("object")]
    return ids, ["background", *infer_classes(names)]
