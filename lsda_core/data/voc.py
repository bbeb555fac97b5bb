"""PASCAL VOC layout: annotation XML (any year) and ImageSets lists.

Writing lives here beside reading so the embedded world and the tests' fixtures produce
exactly what the reader accepts, and what real VOC devkits contain.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from lsda_core.cache import atomic_write_bytes
from lsda_core.structures import ImageAnn, ObjectAnn, to_voc


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
