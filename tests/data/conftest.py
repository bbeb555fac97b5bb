"""Fixture datasets for the reader tests, written into temp folders in the real layouts.

Helpers are plain functions here, handed to tests through the `fx` fixture (so no test
module imports another; test file names are prefixed to stay unique across tests/).
"""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lsda_core.data.voc import write_imagesets, write_voc_xml
from lsda_core.core.structures import ImageAnn, ObjectAnn


# --------------------------------------------------------------------------- images

def jpeg_bytes(w: int, h: int, seed: int = 0, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_jpeg(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(w, h, seed))
    return path


def write_image(path: Path, arr: np.ndarray) -> Path:
    """Save an array (H x W gray, H x W x 3 RGB, H x W x 4 RGBA, uint8 or uint16 gray)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def box(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """A 0-based edge box."""
    return np.array([x1, y1, x2, y2], dtype=np.float64)


# --------------------------------------------------------------------------- VOC

ATTRS = {"occlusion": 0.25, "superclass": "animal", "parts": {"head": 1.0, "tail": 0.5},
         "n_parts": 3, "mirrored": True}

# A real-devkit style file written by hand: <source>/<owner> blocks, no <difficult>,
# no <pose>, decimal coordinates (as in some later-year VOC files), a person layout
# <part> whose own <bndbox> must not be taken for the object's.
REAL_STYLE_XML = """<annotation>
\t<folder>VOC2012</folder>
\t<filename>000004.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t</source>
\t<owner><flickrid>someone</flickrid><name>?</name></owner>
\t<size><width>120</width><height>90</height><depth>3</depth></size>
\t<segmented>0</segmented>
\t<object>
\t\t<name>person</name>
\t\t<truncated>1</truncated>
\t\t<bndbox><xmin>12.5</xmin><ymin>3</ymin><xmax>60.25</xmax><ymax>90</ymax></bndbox>
\t\t<part><name>head</name><bndbox><xmin>20</xmin><ymin>4</ymin><xmax>30</xmax><ymax>14</ymax></bndbox></part>
\t</object>
\t<object>
\t\t<name>bottle</name>
\t\t<pose>Frontal</pose>
\t\t<occluded>1</occluded>
\t\t<difficult>0</difficult>
\t\t<bndbox><xmin>100</xmin><ymin>50</ymin><xmax>110</xmax><ymax>80</ymax></bndbox>
\t</object>
</annotation>
"""


def voc_anns(root: Path) -> list[ImageAnn]:
    jp = root / "JPEGImages"
    return [
        ImageAnn("000001", jp / "000001.jpg", 100, 80, [
            ObjectAnn("dog", box(9, 19, 50, 60), attrs=dict(ATTRS)),
            ObjectAnn("person", box(0, 0, 100, 80), difficult=True, pose="Left"),
        ]),
        ImageAnn("000002", jp / "000002.jpg", 60, 40, [
            ObjectAnn("cat", box(30, 10, 60, 40), truncated=True, occluded=True, pose="Rear"),
        ]),
        ImageAnn("000003", jp / "000003.jpg", 50, 50, []),
    ]


def make_voc(root: Path, anns: list[ImageAnn] | None = None, extra_xml: dict[str, str] | None = None,
             split: str = "trainval", images: bool = True) -> Path:
    """A VOC root: annotations written by the project's own writer, plus hand-written XML
    texts (id -> text), the split list, and JPEG files of the right sizes."""
    root = Path(root)
    anns = voc_anns(root) if anns is None else anns
    ids = []
    for k, a in enumerate(anns):
        write_voc_xml(root / "Annotations" / f"{a.image_id}.xml", a)
        if images:
            write_jpeg(root / "JPEGImages" / f"{a.image_id}.jpg", a.width, a.height, seed=k)
        ids.append(a.image_id)
    for image_id, text in (extra_xml or {}).items():
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        if images:
            write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", 8, 8, seed=99)
        ids.append(image_id)
    write_imagesets(root, split, ids, [])
    return root


def voc_xml_text(objects: str, width: int = 100, height: int = 80, size: str | None = None) -> str:
    """A minimal hand-written annotation around the given <object> elements."""
    size = size if size is not None else f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    return f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>{size}{objects}</annotation>\n"


def voc_object(name: str = "dog", xmin="10", ymin="20", xmax="50", ymax="60", extra: str = "") -> str:
    return (f"<object><name>{name}</name>{extra}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


# --------------------------------------------------------------------------- ILSVRC

SYNSETS = [("n00000001", "accordion"), ("n00000002", "baby bed"), ("n00000003", "zebra")]
VAL_NAMES = [f"ILSVRC2013_val_{i:08d}" for i in range(1, 5)]


def ilsvrc_xml(folder: str, filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """An annotation as the real ILSVRC files look: no <difficult>, no <pose>."""
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><xmax>{c}</xmax>"
        f"<ymin>{b}</ymin><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    return (f"<annotation><folder>{folder}</folder><filename>{filename}</filename>"
            f"<source><database>ILSVRC_2013</database></source>"
            f"<size><width>{width}</width><height>{height}</height></size>{objs}</annotation>\n")


def make_ilsvrc(root: Path, devkit: str = "devkit", map_det: bool = True) -> Path:
    root = Path(root)
    data = root / devkit / "data"
    (data / "det_lists").mkdir(parents=True, exist_ok=True)
    if map_det:  # lines deliberately out of index order
        lines = [f"{w} {i} {n}" for i, (w, n) in enumerate(SYNSETS, start=1)]
        (data / "map_det.txt").write_text("\n".join([lines[2], lines[0], lines[1]]) + "\n")
    tr, tb = root / "ILSVRC2013_DET_train", root / "ILSVRC2013_DET_bbox_train"
    # class 1: one annotated image, one image without XML (no objects)
    write_jpeg(tr / "n00000001" / "n00000001_1.JPEG", 64, 48, seed=1)
    (tb / "n00000001").mkdir(parents=True)
    (tb / "n00000001" / "n00000001_1.xml").write_text(
        ilsvrc_xml("n00000001", "n00000001_1", 64, 48, [("n00000001", 5, 6, 40, 30)]))
    write_jpeg(tr / "n00000001" / "n00000001_2.JPEG", 33, 21, seed=2)
    # class 2: an image whose XML also boxes another class
    write_jpeg(tr / "n00000002" / "n00000002_5.JPEG", 50, 50, seed=3)
    (tb / "n00000002").mkdir(parents=True)
    (tb / "n00000002" / "n00000002_5.xml").write_text(
        ilsvrc_xml("n00000002", "n00000002_5", 50, 50,
                   [("n00000002", 1, 1, 50, 50), ("n00000003", 10, 10, 20, 25)]))
    # val: four 50x45 images, the last one without objects; one box has xmin = 0, one
    # reaches xmax = width, ymax = height
    vd, vb = root / "ILSVRC2013_DET_val", root / "ILSVRC2013_DET_bbox_val"
    vb.mkdir(parents=True)
    val_objects = [
        [("n00000001", 11, 21, 30, 40)],
        [("n00000002", 0, 5, 19, 30), ("n00000003", 20, 1, 40, 10)],
        [("n00000003", 2, 2, 9, 9), ("n00000003", 10, 10, 50, 45)],
        [],
    ]
    for k, (name, objs) in enumerate(zip(VAL_NAMES, val_objects)):
        write_jpeg(vd / f"{name}.JPEG", 50, 45, seed=10 + k)
        (vb / f"{name}.xml").write_text(ilsvrc_xml("val", name, 50, 45, objs))
    (data / "det_lists" / "val.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(VAL_NAMES, 1)))
    (data / "det_lists" / "val1.txt").write_text(f"{VAL_NAMES[0]} 1\n{VAL_NAMES[2]} 2\n")
    (data / "det_lists" / "val2.txt").write_text(f"{VAL_NAMES[1]} 1\n{VAL_NAMES[3]} 2\n")
    (data / "ILSVRC2013_det_validation_blacklist.txt").write_text("2 n00000002\n3 n00000003\n")
    return root


def write_meta_det(path: Path, rows: list[tuple[int, str, str, list[int]]]) -> Path:
    """A meta_det.mat like the real devkit's: a 1xN struct array `synsets`."""
    from scipy.io import savemat

    dt = [("ILSVRC2013_DET_ID", "O"), ("WNID", "O"), ("name", "O"), ("description", "O"),
          ("children", "O")]
    arr = np.zeros((1, len(rows)), dtype=dt)
    for k, (i, w, n, children) in enumerate(rows):
        ch = np.array([children], dtype=np.float64) if children else np.zeros((1, 0))
        arr[0, k] = (np.array([[i]], dtype=np.float64), w, n, f"{n} (description)", ch)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"synsets": arr})
    return path


# --------------------------------------------------------------------------- ImageNet folders

def make_imagenet(root: Path, mapping: bool = True, by_name: bool = False) -> Path:
    root = Path(root)
    c2, c1 = ("goldfish", "tench") if by_name else ("n02", "n01")
    write_jpeg(root / "train" / c2 / "a.jpg", 8, 8, 1)
    write_image(root / "train" / c2 / "b.PNG", np.zeros((8, 8, 3), np.uint8))
    write_jpeg(root / "train" / c2 / "c.JPEG", 8, 8, 2)
    (root / "train" / c2 / "notes.txt").write_text("not an image\n")
    write_jpeg(root / "train" / c1 / "x.jpg", 8, 8, 3)
    write_jpeg(root / "val" / c1 / "y.jpeg", 8, 8, 4)
    if mapping:  # mapping order differs from sorted order
        (root / "LOC_synset_mapping.txt").write_text(
            "n02 goldfish, Carassius auratus\nn03 great white shark\nn01 tench, Tinca tinca\n")
    return root


@pytest.fixture
def fx() -> SimpleNamespace:
    return SimpleNamespace(
        jpeg_bytes=jpeg_bytes, write_jpeg=write_jpeg, write_image=write_image, box=box,
        ATTRS=ATTRS, REAL_STYLE_XML=REAL_STYLE_XML, voc_anns=voc_anns, make_voc=make_voc,
        voc_xml_text=voc_xml_text, voc_object=voc_object,
        SYNSETS=SYNSETS, VAL_NAMES=VAL_NAMES, ilsvrc_xml=ilsvrc_xml, make_ilsvrc=make_ilsvrc,
        write_meta_det=write_meta_det, make_imagenet=make_imagenet,
    )
