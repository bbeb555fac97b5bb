"""Writing the world's views in the real datasets' formats: ImageNet class folders, a
VOCdevkit, the ILSVRC2013 DET release (train / val / devkit lists) and a VOC-layout
large-scale view, plus world.json (the design) and objects.csv (every drawn object).

Every image is drawn from its own seed, SeedSequence(world seed, view, split, index), and
written by whichever process drew it, so the worker count cannot change any byte.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter

from lsda_core.data.voc import write_imagesets, write_segmentation_list, write_voc_xml
from lsda_core.core.params import World
from lsda_core.store.runtime import progress as progress_bar
from lsda_core.core.structures import ImageAnn, ObjectAnn
from lsda_core.world import scenes as S
from lsda_core.world.categories import PARTS, VIEWPOINTS, Design, design

VERSION = 1
JPEG_QUALITY = 90
VIEW_CODE = {"classification": 1, "voc": 2, "ilsvrc": 3, "large": 4}
SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
ORACLE_TRAIN_BOXES = "ILSVRC2013_DET_bbox_train_every"  # the world's train XML with every category's boxes
VAL_SPLIT_TRIES = 200   # random halvings of ILSVRC val tried; the most class-balanced is kept
FIELDS = ("view", "split", "image", "category", "wnid", "superclass", "annotated", "primary",
          "x1", "y1", "x2", "y2", "full_x1", "full_y1", "full_x2", "full_y2", "difficult", "truncated", "occluded",
          "viewpoint", "occlusion", "truncation", "area", "aspect_ratio", "visible_area", "parts")


@dataclass(frozen=True)
class Job:
    """One image to draw: its view, split, index within the split, file stem and main category."""

    view: str
    split: str
    index: int
    name: str
    primary: int | None = None


def styles(world: World) -> dict[str, S.Style]:
    """How each kind of image is composed, from the world's scene parameters."""
    return {
        "cls": S.Style(primary_size=(0.45, 1.0), n_other=(0, 1), other_size=(0.15, 0.4),
                       decay=0.33, distractors=min(1, world.distractors_max),
                       occluders=min(1, world.occluders_max), truncate_p=0.2),
        "det": S.Style(primary_size=(0.0, 0.0), n_other=(world.objects_min, world.objects_max),
                       other_size=(0.0, 1.05), decay=0.65, distractors=world.distractors_max,
                       occluders=world.occluders_max, truncate_p=0.4),
        "centric": S.Style(primary_size=(0.3, 0.95), n_other=(0, max(0, world.objects_max - 2)),
                           other_size=(0.0, 0.6), decay=0.5, distractors=world.distractors_max,
                           occluders=world.occluders_max, truncate_p=0.2),
    }


def jobs(world: World, d: Design) -> list[Job]:
    """Every image of every view, in a fixed order."""
    out: list[Job] = []
    for split, n in (("train", world.cls_train_per_class), ("val", world.cls_val_per_class)):
        for c in d.categories:
            out += [Job("classification", split, c.index * n + k, f"{c.wnid}_{k + 1}", c.index) for k in range(n)]
    i = 0
    for split, n in (("train", world.voc_train), ("val", world.voc_val), ("test", world.voc_test)):
        out += [Job("voc", split, k, f"{i + k + 1:06d}") for k in range(n)]
        i += n
    b = d.ilsvrc_b
    out += [Job("ilsvrc", "train", k, f"{d.categories[b[k % len(b)]].wnid}_{k // len(b) + 1}", b[k % len(b)])
            for k in range(world.ilsvrc_train)]
    out += [Job("ilsvrc", "val", k, f"ILSVRC2013_val_{k + 1:08d}") for k in range(world.ilsvrc_val)]
    lb = d.large_boxes
    out += [Job("large", "train", k, f"{k + 1:06d}", lb[k % len(lb)]) for k in range(world.large_train)]
    out += [Job("large", "test", k, f"{world.large_train + k + 1:06d}") for k in range(world.large_test)]
    return out


# ---------------------------------------------------------------------------------------
# one image (runs in a worker)

_STATE: dict[str, Any] = {}


def _init(world: World, out: Path) -> None:
    """Worker set-up: the design is recomputed from the seed (cheap, and identical)."""
    cv2.setNumThreads(1)
    _STATE.update(world=world, design=design(world), styles=styles(world), out=Path(out))


def _jpeg(path: Path, image: np.ndarray) -> None:
    """A baseline JPEG at a fixed quality, with no metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2)
    path.write_bytes(buf.getvalue())


def _voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved label colours) as a flat palette."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


VOC_PALETTE = _voc_palette()


def _mask(path: Path, labels: np.ndarray) -> None:
    """An indexed PNG of instance ids (VOC SegmentationObject)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels, mode="P")
    im.putpalette(VOC_PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


VOID_BAND = 1  # px each side of an object's outline marked void (255) in SegmentationClass, as VOC's border


def class_mask(labels: np.ndarray, classes: Sequence[int], difficult: Sequence[bool]) -> np.ndarray:
    """VOC's `SegmentationClass` from an instance map (0 background, i the i-th object):
    each object's pixels take its class index (`classes[i - 1]`, 1-based), and void (255)
    covers a band of `VOID_BAND` px around every outline (where a 3 x 3 neighbourhood, widened
    by the band, holds two instance ids) and every difficult object, as VOC's annotators did."""
    lut = np.array([0, *classes], dtype=np.uint8)
    out = lut[labels]
    k = 2 * VOID_BAND + 1
    edge = maximum_filter(labels, size=k, mode="nearest") != minimum_filter(labels, size=k, mode="nearest")
    hard = np.array([False, *difficult])[labels]
    out[edge | hard] = 255
    return out


def _attrs(d: Design, o: S.SceneObject) -> dict[str, Any]:
    """What error analysis needs beyond VOC's fields."""
    return {"superclass": d.superclasses[d.categories[o.cat].superclass].name, "viewpoint": o.viewpoint,
            "occlusion": round(o.occlusion, 4), "truncation": round(o.truncation, 4), "area": int(o.area),
            "aspect_ratio": round(o.aspect, 4), "visible_area": o.visible_area,
            "parts": {k: round(v, 4) for k, v in o.parts.items()},
            "full_box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (int(v) for v in o.full_box)))}


def _row(job: Job, d: Design, o: S.SceneObject, annotated: bool) -> dict[str, Any]:
    """One objects.csv row (the visible box and the whole object's box, in 0-based pixel edges)."""
    c = d.categories[o.cat]
    x1, y1, x2, y2 = (int(v) for v in o.box)
    return {"view": job.view, "split": job.split, "image": job.name, "category": c.name, "wnid": c.wnid,
            "superclass": d.superclasses[c.superclass].name, "annotated": int(annotated), "primary": int(o.primary),
            "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            **{f"full_{k}": int(v) for k, v in zip(("x1", "y1", "x2", "y2"), o.full_box)},
            "difficult": int(o.difficult), "truncated": int(o.truncated),
            "occluded": int(o.occluded), "viewpoint": o.viewpoint, "occlusion": f"{o.occlusion:.4f}",
            "truncation": f"{o.truncation:.4f}", "area": int(o.area), "aspect_ratio": f"{o.aspect:.4f}",
            "visible_area": o.visible_area, "parts": ";".join(f"{k}:{v:.3f}" for k, v in o.parts.items())}


def _detection(job: Job, scene: S.Scene, root: Path, image: Path, xml: Path, folder: str,
               keep: set[int], by_wnid: bool, difficult: bool,
               every: tuple[Path, set[int]] | None = None) -> list[dict[str, Any]]:
    """Write one detection image and its XML (objects of `keep` only); with `every` = (xml,
    categories), a second XML with the objects of all those categories (the world's oracle
    annotation); returns csv rows."""
    d: Design = _STATE["design"]
    h, w = scene.image.shape[:2]
    _jpeg(root / image, scene.image)

    def annotations(cats: set[int]) -> list[ObjectAnn]:
        return [ObjectAnn(cls=d.categories[o.cat].wnid if by_wnid else d.categories[o.cat].name, box=o.box,
                          difficult=difficult and o.difficult, truncated=o.truncated, occluded=o.occluded,
                          pose=S.POSE[o.viewpoint], attrs=_attrs(d, o)) for o in scene.objects if o.cat in cats]

    write_voc_xml(root / xml, ImageAnn(job.name, root / image, w, h, annotations(keep)), folder=folder)
    if every is not None:
        write_voc_xml(root / every[0], ImageAnn(job.name, root / image, w, h, annotations(every[1])), folder=folder)
    return [_row(job, d, o, o.cat in keep) for o in scene.objects]


def render_job(job: Job) -> list[dict[str, Any]]:
    """Draw and write one image; returns its objects.csv rows."""
    world: World = _STATE["world"]
    d: Design = _STATE["design"]
    st: dict[str, S.Style] = _STATE["styles"]
    out: Path = _STATE["out"]
    rng = np.random.default_rng(np.random.SeedSequence(
        [world.seed, VIEW_CODE[job.view], SPLIT_CODE[job.split], job.index]))
    w, h = world.det_width, world.det_height
    everything = tuple(range(len(d.categories)))
    if job.view == "classification":
        scene = S.compose(rng, d, everything, world.cls_size, world.cls_size, st["cls"], primary=job.primary)
        wnid = d.categories[job.primary].wnid
        _jpeg(out / "classification" / job.split / wnid / f"{job.name}.JPEG", scene.image)
        return [_row(job, d, o, o.primary) for o in scene.objects]
    if job.view == "voc":
        scene = S.compose(rng, d, d.voc, w, h, st["det"])
        root = out / "voc"
        _mask(root / "SegmentationObject" / f"{job.name}.png", scene.labels)
        index = {c: i for i, c in enumerate(d.voc, start=1)}  # d.voc is sorted by name, as readers infer
        _mask(root / "SegmentationClass" / f"{job.name}.png",
              class_mask(scene.labels, [index[o.cat] for o in scene.objects], [o.difficult for o in scene.objects]))
        return _detection(job, scene, root, Path("JPEGImages", f"{job.name}.jpg"),
                          Path("Annotations", f"{job.name}.xml"), "VOC2007", set(d.voc), False, True)
    if job.view == "ilsvrc":
        root = out / "ilsvrc"
        if job.split == "train":
            scene = S.compose(rng, d, d.ilsvrc, w, h, st["centric"], primary=job.primary)
            wnid = d.categories[job.primary].wnid
            return _detection(job, scene, root, Path("ILSVRC2013_DET_train", wnid, f"{job.name}.JPEG"),
                              Path("ILSVRC2013_DET_bbox_train", wnid, f"{job.name}.xml"), wnid,
                              set(d.ilsvrc_b), True, False,
                              every=(Path(ORACLE_TRAIN_BOXES, wnid, f"{job.name}.xml"), set(d.ilsvrc)))
        scene = S.compose(rng, d, d.ilsvrc, w, h, st["det"])
        return _detection(job, scene, root, Path("ILSVRC2013_DET_val", f"{job.name}.JPEG"),
                          Path("ILSVRC2013_DET_bbox_val", f"{job.name}.xml"), "ILSVRC2013_val",
                          set(d.ilsvrc), True, False)
    root = out / "large"
    if job.split == "train":
        scene = S.compose(rng, d, everything, w, h, st["centric"], primary=job.primary)
        keep = set(d.large_boxes)
    else:
        scene = S.compose(rng, d, everything, w, h, st["det"])
        keep = set(everything)
    return _detection(job, scene, root, Path("JPEGImages", f"{job.name}.jpg"),
                      Path("Annotations", f"{job.name}.xml"), "large", keep, False, True)


# ---------------------------------------------------------------------------------------
# lists and metadata

def _present(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """image -> class -> 1 (a non-difficult object), 0 (only difficult ones), as the devkit."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["annotated"]:
            cls = out.setdefault(r["image"], {})
            cls[r["category"]] = max(cls.get(r["category"], 0), 1 - r["difficult"])
    return out


def _voc_lists(root: Path, rows: list[dict[str, Any]], splits: dict[str, list[str]], classes: dict[str, list[str]]) -> None:
    """ImageSets/Main lists of a VOC-layout view."""
    present = _present(rows)
    for split, ids in splits.items():
        write_imagesets(root, split, ids, classes[split], present)


def _val_halves(world: World, names: list[str], rows: list[dict[str, Any]], wnids: list[str]) -> list[int]:
    """R-CNN's val1/val2: of many seeded random halvings keep the one whose worst class is
    most evenly split (by annotated objects); returns 0/1 per val image."""
    k = {w: i for i, w in enumerate(wnids)}
    img = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(names), len(wnids)))
    for r in rows:
        if r["annotated"]:
            counts[img[r["image"]], k[r["wnid"]]] += 1
    total = counts.sum(0).clip(min=1)
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, 0xA11]))
    best, best_cost = None, np.inf
    for _ in range(VAL_SPLIT_TRIES):
        half = np.zeros(len(names), int)
        half[rng.permutation(len(names))[len(names) // 2:]] = 1
        cost = np.abs(counts[half == 0].sum(0) / total - 0.5).max()
        if cost < best_cost:
            best, best_cost = half, cost
    return best.tolist()


def _ilsvrc_lists(world: World, d: Design, root: Path, val: list[Job], rows: list[dict[str, Any]]) -> dict[str, int]:
    """devkit/data: map_det.txt, det_lists/val.txt, val1.txt, val2.txt and the validation blacklist:
    (image, category) pairs with a mostly hidden object (occlusion >= S.DIFFICULT_OCCLUSION),
    whose annotation a person could not make reliably."""
    data = root / "devkit" / "data"
    (data / "det_lists").mkdir(parents=True, exist_ok=True)
    wnids = [d.categories[c].wnid for c in d.ilsvrc]
    (data / "map_det.txt").write_text("".join(f"{d.categories[c].wnid} {i + 1} {d.categories[c].name}\n"
                                              for i, c in enumerate(d.ilsvrc)))
    names = [j.name for j in val]
    val_rows = [r for r in rows if r["view"] == "ilsvrc" and r["split"] == "val"]
    halves = _val_halves(world, names, val_rows, wnids)
    (data / "det_lists" / "val.txt").write_text("".join(f"{n} {i + 1}\n" for i, n in enumerate(names)))
    for h in (0, 1):
        (data / "det_lists" / f"val{h + 1}.txt").write_text(
            "".join(f"{n} {i + 1}\n" for i, (n, s) in enumerate(zip(names, halves)) if s == h))
    index = {n: i + 1 for i, n in enumerate(names)}
    black = sorted({(index[r["image"]], r["wnid"]) for r in val_rows if float(r["occlusion"]) >= S.DIFFICULT_OCCLUSION})
    (data / "ILSVRC2013_det_validation_blacklist.txt").write_text("".join(f"{i} {w}\n" for i, w in black))
    return {"val1": halves.count(0), "val2": halves.count(1), "blacklist": len(black)}


def _meta(world: World, d: Design, counts: dict[str, Any]) -> dict[str, Any]:
    """world.json: the design, view membership of every category, view sizes and rules."""
    b, a, boxes = set(d.ilsvrc_b), set(d.ilsvrc_a), set(d.large_boxes)
    voc = set(d.voc)
    cats = [{"name": c.name, "wnid": c.wnid, "index": c.index, "superclass": d.superclasses[c.superclass].name,
             "parts": list(d.superclasses[c.superclass].parts), "texture": c.texture, "beak": c.beak,
             "eyes": len(c.eyes), "voc": c.index in voc,
             "ilsvrc": "B" if c.index in b else "A" if c.index in a else None,
             "large_boxes": c.index in boxes} for c in d.categories]
    supers = [{"name": s.name, "index": s.index, "parts": list(s.parts), "head_shape": s.head_shape,
               "n_legs": s.n_legs, "categories": [c.name for c in d.categories if c.superclass == s.index]}
              for s in d.superclasses]
    name = lambda idx: [d.categories[i].name for i in idx]  # noqa: E731
    return {
        "generator": "lsda_core.world", "version": VERSION, "params": dataclasses.asdict(world),
        "parts": list(PARTS), "viewpoints": list(VIEWPOINTS), "poses": dict(S.POSE),
        "superclasses": supers, "categories": cats,
        "views": {
            "classification": {"root": "classification", "classes": len(d.categories), **counts["classification"]},
            "voc": {"root": "voc", "classes": name(d.voc), **counts["voc"]},
            "ilsvrc": {"root": "ilsvrc", "classes": name(d.ilsvrc), "set_b": name(d.ilsvrc_b),
                       "set_a": name(d.ilsvrc_a), **counts["ilsvrc"]},
            "large": {"root": "large", "box_classes": name(d.large_boxes), **counts["large"]},
        },
        "rules": {
            "box": "visible extent of the object (VOC's guidelines); full_box (attributes, objects.csv full_*): "
                   "its whole extent, occluded parts included, clipped to the image",
            "difficult": f"fewer than {S.DIFFICULT_PX} visible pixels or occlusion >= {S.DIFFICULT_OCCLUSION}",
            "truncated": f"more than {S.FLAG_MIN:.0%} of the object outside the image",
            "occluded": f"more than {S.FLAG_MIN:.0%} of its in-image part hidden",
            "blacklist": f"ILSVRC val (image, category) pairs with an object of occlusion >= {S.DIFFICULT_OCCLUSION}",
            "ilsvrc_difficult": "ILSVRC XML has no difficult objects (difficult is always 0)",
        },
    }


VIEWS = ("classification", "voc", "ilsvrc", "large")
COUNTS = "counts.json"  # a partial world's view sizes, merged into world.json by `write_meta`
# The parameters each view's images depend on besides the seed and the design's categories
# (`view_config`); the design's own parameters are covered by its digest. Every World field is
# in DESIGN_PARAMS or some view's list (tests/world checks it), so none can be missed.
DESIGN_PARAMS = ("seed", "n_categories", "n_superclasses", "voc_classes", "ilsvrc_classes", "large_box_fraction")
_SCENE = ("det_width", "det_height", "objects_min", "objects_max", "distractors_max", "occluders_max")
VIEW_PARAMS = {
    "classification": ("cls_size", "cls_train_per_class", "cls_val_per_class", "distractors_max", "occluders_max"),
    "voc": (*_SCENE, "voc_train", "voc_val", "voc_test"),
    "ilsvrc": (*_SCENE, "ilsvrc_train", "ilsvrc_val"),
    "large": (*_SCENE, "large_train", "large_test"),
}


def view_config(world: World, view: str, d: Design) -> dict[str, Any]:
    """What one view's files depend on: the generator's version, the seed, the part of the
    world's design `d` the view draws from (by content) and the view's own parameters. A view is
    cached on this alone, so changing the ILSVRC view's size leaves the classification images
    (and the networks trained on them) as they are."""
    used = {"classification": (), "voc": d.voc, "ilsvrc": d.ilsvrc, "large": d.large_boxes}[view]
    return {"view": view, "version": VERSION, "seed": world.seed,
            "design": repr((d.superclasses, d.categories, used)),
            "params": {k: getattr(world, k) for k in VIEW_PARAMS[view]}}


def generate(world: World, out: Path, workers: int = 1, progress: bool = False,
             views: tuple[str, ...] = VIEWS) -> None:
    """Draw and write `views` of the world under `out` (each in its folder, with its lists),
    objects.csv (their objects) and counts.json; with every view, world.json too."""
    out = Path(out)
    d = design(world)
    todo = [j for j in jobs(world, d) if j.view in views]
    if workers > 1:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=_init, initargs=(world, out)) as pool:
            results = list(progress_bar(pool.imap(render_job, todo, chunksize=8), "world", progress, len(todo)))
    else:
        _init(world, out)
        results = [render_job(j) for j in progress_bar(todo, "world", progress)]
    rows = [r for res in results for r in res]
    by = lambda view, split: [j for j in todo if j.view == view and j.split == split]  # noqa: E731
    n_obj = lambda view, split: sum(1 for r in rows if r["view"] == view and r["split"] == split  # noqa: E731
                                    and r["annotated"])
    counts: dict[str, Any] = {}
    if "classification" in views:
        (out / "classification").mkdir(parents=True, exist_ok=True)
        (out / "classification" / "LOC_synset_mapping.txt").write_text(
            "".join(f"{c.wnid} {c.name}\n" for c in d.categories))
        counts["classification"] = {s: {"images": len(by("classification", s))} for s in ("train", "val")}
    if "voc" in views:
        voc = {s: [j.name for j in by("voc", s)] for s in ("train", "val", "test")}
        voc["trainval"] = voc["train"] + voc["val"]
        _voc_lists(out / "voc", [r for r in rows if r["view"] == "voc"], voc,
                   {s: [d.categories[c].name for c in d.voc] for s in voc})
        for split, ids in voc.items():  # every image has its class mask: each split is also a segmentation split
            write_segmentation_list(out / "voc", split, ids)
        counts["voc"] = {s: {"images": len(v), "objects": sum(n_obj("voc", p) for p in
                                                              (("train", "val") if s == "trainval" else (s,)))}
                         for s, v in voc.items()}
    if "ilsvrc" in views:
        ilsvrc = _ilsvrc_lists(world, d, out / "ilsvrc", by("ilsvrc", "val"), rows)
        counts["ilsvrc"] = {"train": {"images": world.ilsvrc_train, "objects": n_obj("ilsvrc", "train")},
                            "val": {"images": world.ilsvrc_val, "objects": n_obj("ilsvrc", "val")}, **ilsvrc}
    if "large" in views:
        large = {s: [j.name for j in by("large", s)] for s in ("train", "test")}
        _voc_lists(out / "large", [r for r in rows if r["view"] == "large"], large,
                   {"train": [d.categories[c].name for c in d.large_boxes], "test": [c.name for c in d.categories]})
        counts["large"] = {s: {"images": len(v), "objects": n_obj("large", s)} for s, v in large.items()}
    (out / COUNTS).write_text(json.dumps(counts, indent=1) + "\n")
    with open(out / "objects.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, FIELDS, lineterminator="\n")
        wr.writeheader()
        wr.writerows(rows)
    if set(views) == set(VIEWS):
        write_meta(world, out, [out])


def write_meta(world: World, out: Path, parts: list[Path]) -> None:
    """world.json and objects.csv of a world whose views were drawn into `parts` (folders written
    by `generate`, in VIEWS order): their counts merged, their objects.csv concatenated."""
    counts: dict[str, Any] = {}
    lines: list[str] = []
    for part in parts:
        counts.update(json.loads((part / COUNTS).read_text()))
        body = (part / "objects.csv").read_text().splitlines(keepends=True)
        lines += body if not lines else body[1:]
    (out / "world.json").write_text(json.dumps(_meta(world, design(world), counts), indent=1) + "\n")
    if parts != [out]:
        (out / "objects.csv").write_text("".join(lines))
