"""The generated world's files: determinism, formats, boxes against masks, views and sets."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from lsda_core.data import ilsvrc as ILSVRC
from lsda_core.world import WorldLayout
from lsda_core.world.categories import PARTS
from lsda_core.world.scenes import DIFFICULT_OCCLUSION, DIFFICULT_PX


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _objects(xml: Path) -> tuple[ET.Element, list[ET.Element]]:
    root = ET.parse(xml).getroot()
    return root, root.findall("object")


def _box(obj: ET.Element) -> tuple[int, int, int, int]:
    bb = obj.find("bndbox")
    return tuple(int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))


def _attr(obj: ET.Element, key: str) -> str:
    return obj.find("attributes").findtext(key)


def test_same_seed_same_bytes_whatever_the_workers(world: WorldLayout, world_parallel: Path) -> None:
    a, b = _hashes(world.root), _hashes(world_parallel)
    assert len(a) > 100
    assert a == b


def test_other_seed_other_files(world: WorldLayout, world_other_seed: Path) -> None:
    a, b = _hashes(world.root), _hashes(world_other_seed)
    images_a = {h for p, h in a.items() if p.lower().endswith((".jpg", ".jpeg"))}
    images_b = {h for p, h in b.items() if p.lower().endswith((".jpg", ".jpeg"))}
    assert not images_a & images_b
    assert a["world.json"] != b["world.json"]


def test_every_image_is_a_jpeg_of_its_declared_size(world: WorldLayout, tiny) -> None:
    n = 0
    for xml in world.root.rglob("*.xml"):
        if ILSVRC.TRAIN_EVERY_BOX in xml.parts:  # a second annotation of a train image (checked below)
            continue
        root, _ = _objects(xml)
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        img = xml.parent.parent / "JPEGImages" / root.findtext("filename")
        if not img.is_file():  # ILSVRC layout: DET_bbox_<split>[_every]/... -> DET_<split>/...
            img = Path(str(xml).replace("_bbox_train_every", "_train").replace("_bbox_", "_")).with_name(
                root.findtext("filename"))
        with Image.open(img) as im:
            assert im.format == "JPEG" and im.size == (w, h) == (tiny.det_width, tiny.det_height)
            assert im.mode == "RGB"
        n += 1
    for p in world.classification.rglob("*.JPEG"):
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (tiny.cls_size, tiny.cls_size)
        n += 1
    assert n == len(list(world.root.rglob("*.jp*g"))) + len(list(world.root.rglob("*.JPEG")))


def test_voc_boxes_inside_images_and_match_instance_masks(world: WorldLayout) -> None:
    checked_exact = 0
    for xml in sorted((world.voc / "Annotations").glob("*.xml")):
        root, objs = _objects(xml)
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        mask = np.array(Image.open(world.voc / "SegmentationObject" / f"{xml.stem}.png"))
        assert Image.open(world.voc / "SegmentationObject" / f"{xml.stem}.png").mode == "P"
        assert mask.shape == (h, w) and set(np.unique(mask)) <= set(range(len(objs) + 1))
        assert objs, xml
        for i, o in enumerate(objs, start=1):
            xmin, ymin, xmax, ymax = _box(o)
            assert 1 <= xmin <= xmax <= w and 1 <= ymin <= ymax <= h
            ys, xs = np.nonzero(mask == i)
            assert len(xs) > 0, (xml, i)
            # the box is the visible part's extent (1-based inclusive), as VOC's guidelines ask
            assert (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1) == (xmin, ymin, xmax, ymax), (xml, i)
            full = {k: int(float(o.find(f"attributes/full_box/item[@name='{k}']").get("value")))
                    for k in ("xmin", "ymin", "xmax", "ymax")}  # the whole object: 0-based edges
            assert full["xmin"] <= xmin - 1 and full["ymin"] <= ymin - 1 and full["xmax"] >= xmax and full["ymax"] >= ymax
            checked_exact += (full["xmin"], full["ymin"], full["xmax"], full["ymax"]) != (xmin - 1, ymin - 1, xmax, ymax)
    assert checked_exact > 5  # partly hidden objects: their whole extent is larger than the box


def test_voc_flags_and_attributes(world: WorldLayout) -> None:
    info = json.loads(world.meta.read_text())
    supers = {c["name"]: c["superclass"] for c in info["categories"]}
    poses = {"Left": "left", "Right": "right", "Frontal": "front", "Rear": "rear"}
    seen_difficult = seen_truncated = 0
    for xml in (world.voc / "Annotations").glob("*.xml"):
        for o in _objects(xml)[1]:
            a = o.find("attributes")
            for key in ("superclass", "viewpoint", "occlusion", "truncation", "area", "aspect_ratio",
                        "visible_area", "parts"):
                assert a.find(key) is not None, key
            assert a.findtext("superclass") == supers[o.findtext("name")]
            assert poses[o.findtext("pose")] == a.findtext("viewpoint")
            parts = {it.get("name"): float(it.get("value")) for it in a.find("parts")}
            assert "body" in parts and set(parts) <= set(PARTS)
            assert all(0 <= v <= 1 for v in parts.values())
            if a.findtext("viewpoint") == "rear":
                assert parts["head"] == 0
            occ, vis = float(a.findtext("occlusion")), int(a.findtext("visible_area"))
            difficult = vis < DIFFICULT_PX or occ >= DIFFICULT_OCCLUSION
            assert int(o.findtext("difficult")) == int(difficult)
            assert int(o.findtext("occluded")) == int(occ > 0.05)
            assert int(o.findtext("truncated")) == int(float(a.findtext("truncation")) > 0.05)
            xmin, ymin, xmax, ymax = _box(o)
            assert float(a.findtext("area")) == (xmax - xmin + 1) * (ymax - ymin + 1)
            seen_difficult += difficult
            seen_truncated += int(o.findtext("truncated"))
    assert seen_truncated > 0


def test_voc_imagesets(world: WorldLayout, tiny) -> None:
    main = world.voc / "ImageSets" / "Main"
    lists = {s: (main / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval", "test")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == [tiny.voc_train, tiny.voc_val, tiny.voc_test]
    assert lists["trainval"] == lists["train"] + lists["val"]
    assert not set(lists["trainval"]) & set(lists["test"])
    info = json.loads(world.meta.read_text())
    classes = info["views"]["voc"]["classes"]
    assert len(classes) == tiny.voc_classes and classes == sorted(classes)
    for c in classes:
        for line in (main / f"{c}_test.txt").read_text().splitlines():
            image, flag = line.split()
            names = {(o.findtext("name"), o.findtext("difficult"))
                     for o in _objects(world.voc / "Annotations" / f"{image}.xml")[1]}
            want = 1 if (c, "0") in names else 0 if (c, "1") in names else -1
            assert int(flag) == want


def test_classification_view_has_every_category(world: WorldLayout, tiny) -> None:
    lines = (world.classification / "LOC_synset_mapping.txt").read_text().splitlines()
    wnids = [ln.split()[0] for ln in lines]
    names = [ln.split()[1] for ln in lines]
    assert len(lines) == tiny.n_categories and wnids == sorted(wnids) and len(set(names)) == len(names)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert all(re.fullmatch(r"[a-z]+", n) for n in names)
    for split, n in (("train", tiny.cls_train_per_class), ("val", tiny.cls_val_per_class)):
        folders = sorted(p.name for p in (world.classification / split).iterdir())
        assert folders == wnids
        for w in wnids:
            files = sorted(p.name for p in (world.classification / split / w).iterdir())
            assert files == sorted(f"{w}_{k}.JPEG" for k in range(1, n + 1))
    assert [c["wnid"] for c in world.categories()] == wnids


def test_ilsvrc_set_b_has_boxes_in_train_and_val_has_all(world: WorldLayout, tiny) -> None:
    data = world.ilsvrc / "devkit" / "data"
    rows = [ln.split() for ln in (data / "map_det.txt").read_text().splitlines()]
    assert [int(r[1]) for r in rows] == list(range(1, tiny.ilsvrc_classes + 1))
    names = [r[2] for r in rows]
    assert names == sorted(names)
    b = {r[0] for r in rows[: len(rows) // 2]}
    a = {r[0] for r in rows[len(rows) // 2:]}
    train_names = set()
    xmls = sorted((world.ilsvrc / "ILSVRC2013_DET_bbox_train").rglob("*.xml"))
    assert len(xmls) == tiny.ilsvrc_train
    for xml in xmls:
        assert (world.ilsvrc / "ILSVRC2013_DET_train" / xml.parent.name / f"{xml.stem}.JPEG").is_file()
        objs = _objects(xml)[1]
        assert xml.parent.name in {o.findtext("name") for o in objs}  # its folder's category is boxed
        train_names |= {o.findtext("name") for o in objs}
    assert train_names and train_names <= b
    with open(world.objects) as f:
        obj_rows = list(csv.DictReader(f))
    train_a = [r for r in obj_rows if r["view"] == "ilsvrc" and r["split"] == "train" and r["wnid"] in a]
    assert train_a and all(r["annotated"] == "0" for r in train_a)  # A objects are there, unannotated
    # ... except in the world's every-box annotations (the oracle's): the same images, A objects too
    every = sorted((world.ilsvrc / ILSVRC.TRAIN_EVERY_BOX).rglob("*.xml"))
    assert [x.relative_to(world.ilsvrc / ILSVRC.TRAIN_EVERY_BOX) for x in every] == \
        [x.relative_to(world.ilsvrc / "ILSVRC2013_DET_bbox_train") for x in xmls]
    every_names = [o.findtext("name") for x in every for o in _objects(x)[1]]
    assert sum(n in a for n in every_names) == len(train_a) and set(every_names) >= train_names
    full = ILSVRC.read_ilsvrc_det(world.ilsvrc, "train", every_box=True)
    assert sum(o.cls in a for im in full.images for o in im.objects) == len(train_a)
    val = [r for r in obj_rows if r["view"] == "ilsvrc" and r["split"] == "val"]
    assert val and all(r["annotated"] == "1" for r in val)
    val_names = set()
    for xml in (world.ilsvrc / "ILSVRC2013_DET_bbox_val").glob("*.xml"):
        val_names |= {o.findtext("name") for o in _objects(xml)[1]}
        assert all(o.findtext("difficult") == "0" for o in _objects(xml)[1])
    assert val_names & a and val_names & b and val_names <= a | b
    assert sum(r["wnid"] in a for r in val) == sum(1 for r in val if r["wnid"] in val_names & a)


def test_ilsvrc_val_halves_and_blacklist(world: WorldLayout, tiny) -> None:
    lists = world.ilsvrc / "devkit" / "data" / "det_lists"
    halves = [[ln.split() for ln in (lists / f"val{k}.txt").read_text().splitlines()] for k in (1, 2)]
    idx = sorted(int(i) for h in halves for _, i in h)
    assert idx == list(range(1, tiny.ilsvrc_val + 1))
    assert abs(len(halves[0]) - len(halves[1])) <= 1
    for name, i in halves[0] + halves[1]:
        assert name == f"ILSVRC2013_val_{int(i):08d}"
        assert (world.ilsvrc / "ILSVRC2013_DET_val" / f"{name}.JPEG").is_file()
    wnids = {ln.split()[0] for ln in (lists.parent / "map_det.txt").read_text().splitlines()}
    for line in (lists.parent / "ILSVRC2013_det_validation_blacklist.txt").read_text().splitlines():
        i, w = line.split()
        assert 1 <= int(i) <= tiny.ilsvrc_val and w in wnids


def test_large_view_boxes_only_for_box_categories_in_train(world: WorldLayout, tiny) -> None:
    info = json.loads(world.meta.read_text())
    boxes = set(info["views"]["large"]["box_classes"])
    assert len(boxes) == round(tiny.large_box_fraction * tiny.n_categories)
    assert boxes == {c["name"] for c in world.categories() if c["large_boxes"]}
    main = world.large / "ImageSets" / "Main"
    train, test = (main / "train.txt").read_text().split(), (main / "test.txt").read_text().split()
    assert len(train) == tiny.large_train and len(test) == tiny.large_test
    for i in train:
        names = {o.findtext("name") for o in _objects(world.large / "Annotations" / f"{i}.xml")[1]}
        assert names and names <= boxes
    test_names = set()
    for i in test:
        test_names |= {o.findtext("name") for o in _objects(world.large / "Annotations" / f"{i}.xml")[1]}
    assert test_names - boxes  # categories without training boxes are annotated at test time


def test_world_json_describes_the_views(world: WorldLayout, tiny) -> None:
    info = json.loads(world.meta.read_text())
    cats = info["categories"]
    assert len(cats) == tiny.n_categories and [c["index"] for c in cats] == list(range(len(cats)))
    assert info["params"]["seed"] == tiny.seed and info["parts"] == list(PARTS)
    assert len(info["superclasses"]) == tiny.n_superclasses
    assert sum(c["voc"] for c in cats) == tiny.voc_classes
    ils = [c for c in cats if c["ilsvrc"]]
    assert len(ils) == tiny.ilsvrc_classes
    names_b = sorted(c["name"] for c in ils if c["ilsvrc"] == "B")
    assert names_b == sorted(c["name"] for c in ils)[: tiny.ilsvrc_classes // 2]
    assert info["views"]["voc"]["test"]["images"] == tiny.voc_test
    assert info["views"]["ilsvrc"]["val1"] + info["views"]["ilsvrc"]["val2"] == tiny.ilsvrc_val


def test_voc_class_masks_follow_instances_with_a_void_border(world: WorldLayout) -> None:
    """SegmentationClass agrees with SegmentationObject: away from outlines each object's pixels
    hold its class's index (1 + its place among the view's sorted classes, as readers infer),
    background stays 0, outlines and difficult objects are void (255); every image is in its
    split's ImageSets/Segmentation list, and the segmentation metric scores the truth as perfect."""
    from lsda_core.data.voc import read_segmentation_split
    from lsda_core.evaluation import segmentation
    from lsda_core.world.write import VOID_BAND

    ids, classes = read_segmentation_split(world.voc, "test")
    assert ids == (world.voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert classes[0] == "background" and classes[1:] == sorted(classes[1:])
    voids = 0
    for image_id in ids:
        inst = np.array(Image.open(world.voc / "SegmentationObject" / f"{image_id}.png"))
        cls = np.array(Image.open(world.voc / "SegmentationClass" / f"{image_id}.png"))
        _, objs = _objects(world.voc / "Annotations" / f"{image_id}.xml")
        k = 2 * VOID_BAND + 1
        pad = np.pad(inst, VOID_BAND, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(pad, (k, k))
        interior = windows.min(axis=(2, 3)) == windows.max(axis=(2, 3))
        assert (cls[interior & (inst == 0)] == 0).all()
        for i, o in enumerate(objs, start=1):
            want = 255 if o.findtext("difficult") == "1" else classes.index(o.findtext("name"))
            assert (cls[interior & (inst == i)] == want).all()
        assert (cls[~interior] == 255).all()
        voids += int((cls == 255).sum())
    assert voids > 0
    r = segmentation.evaluate_folder(world.voc, "test", world.voc / "SegmentationClass")
    assert r["mean"] == 1.0
