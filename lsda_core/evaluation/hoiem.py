"""Hoiem et al.'s diagnosis of detections ("Diagnosing error in object detectors", ECCV 2012),
as the R-CNN and LSDA papers use it: false-positive types, their trend, what each costs in
AP, and normalised AP by object characteristics.

Matching is `evaluate.match_detections` with the VOC2007 rules at IoU 0.5 (greedy by score;
difficult objects ignored). Detections are taken as given: a detector's output, i.e. after
its per-class NMS. Every false positive (FP) of a class gets the first type that fits:
- `loc`: a duplicate (IoU >= 0.5 with an object of the class already detected), or IoU in
  [`weak_iou`, 0.5) with an object of the class (difficult ones included);
- `sim`: IoU >= `weak_iou` with an object of a similar class (one sharing a similarity group);
- `oth`: IoU >= `weak_iou` with an object of any other class;
- `bg`: everything else.

Choices where the papers leave room (all documented in the functions):
- trend: the FPs of the classes of a set are interleaved by rank (each class's first FP,
  then each class's second, ...; within a rank in class order), so "the top N" weights
  every class alike, since scores of different classes are not comparable;
- AP impact: the AP (VOC2007 11-point) after *removing* one type's FPs. For Loc this is
  Hoiem's "fix" with duplicates and mislocalised detections dropped; his fuller fix can also
  turn a mislocalised detection into a TP of an undetected object, so ours is a lower bound;
- normalised AP (AP_N): precision as if every class had `N_norm = norm_fraction * n_images`
  positives, `tp' = tp * N_norm / n_pos`, `P_N = tp' / (tp' + fp)`; AP_N is the area under
  the monotone envelope of (recall, P_N);
- characteristics: for each subset of objects (e.g. "occlusion 10-50%"), the positives are
  the class's positives in the subset, and detections assigned to objects outside it (TPs
  and their duplicates) are ignored; all other FPs stay. Per class, the min and max AP_N
  over the subsets with positives; these, and the overall AP_N, are averaged over classes:
  sensitivity = max - min, impact = max - overall.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy.sparse import csr_matrix

from lsda_core.core.boxes import box_iou_pairs
from lsda_core.data.comp4 import Detections, read_comp4
from lsda_core.data.text import check_output_file, read_text, write_output
from lsda_core.core import yamltext
from lsda_core.core.errors import DataError
from lsda_core.evaluation.ap import Matching, ground_truth, GroundTruth, match_detections, voc_ap
from lsda_core.core.params import Analysis
from lsda_core.core.structures import DetectionDataset, ObjectAnn

FP_TYPES = ("loc", "sim", "oth", "bg")

# VOC similarity groups of Hoiem's tool (a class may be in several).
VOC_GROUPS: dict[str, list[str]] = {
    "animals": ["bird", "cat", "cow", "dog", "horse", "person", "sheep"],
    "vehicles": ["aeroplane", "boat", "bus", "car", "train", "bicycle", "motorbike"],
    "bikes": ["bicycle", "motorbike"],
    "furniture": ["chair", "diningtable", "sofa"],
    "air": ["aeroplane", "bird"],
}

# Occlusion fraction bins (lower edges) when annotations give a fraction: none, 1-10%, 10-50%, 50-100%.
OCCLUSION_BINS = ((0.0, "none"), (0.01, "1-10%"), (0.1, "10-50%"), (0.5, "50-100%"))
PERCENTILES = (10, 30, 70, 90)  # box area and aspect-ratio bin edges, per class
AREA_BINS = ("XS", "S", "M", "L", "XL")
ASPECT_BINS = ("XT", "T", "M", "W", "XW")  # extra-tall ... extra-wide (w / h)
_CHUNK = 65536  # false positives per vectorised IoU block

__all__ = ["FP_TYPES", "VOC_GROUPS", "ClassDiagnosis", "read_groups", "similarity_groups", "largest_groups",
           "diagnose", "fp_counts", "fp_trend", "ap_without", "ap_impact", "normalized_ap", "extreme_subsets_samples",
           "object_subsets", "characteristics", "analyze", "format_report", "analyze_command"]


# ------------------------------------------------------------------ similarity groups

def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice is an error (json keeps the last silently)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} given twice")
        out[k] = v
    return out


def read_groups(path: Path, classes: Iterable[str] | None = None) -> dict[str, list[str]]:
    """A similarity-group file (YAML or JSON): a mapping group name -> list of classes. With
    `classes`, naming any other class is an error (a typo would silently change the types)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a groups file (YAML or JSON {{group: [class, ...]}})")
    text = read_text(path, "groups file")
    try:
        raw = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix.lower() == ".json" else yamltext.load(text)
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    except yamltext.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({yamltext.problem(e)})") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a mapping of group name to a list of classes")
    groups: dict[str, list[str]] = {}
    for g, members in raw.items():
        if not isinstance(members, list) or not all(isinstance(c, str) for c in members):
            raise DataError(f"{path}: group {g!r} must be a list of class names")
        groups[str(g)] = list(members)
    if classes is not None:
        known = set(classes)
        unknown = sorted({c for m in groups.values() for c in m} - known)
        if unknown:
            raise DataError(f"{path}: classes not in the dataset: {', '.join(unknown)}")
    return groups


def similarity_groups(dataset: DetectionDataset) -> dict[str, list[str]]:
    """The groups for a dataset: the objects' `attrs["superclass"]` when they carry one (the
    embedded world), VOC's groups when the classes are VOC's, else none (no FP is then Sim).
    Members are restricted to the dataset's classes; empty groups are dropped."""
    classes = set(dataset.classes)
    supers: dict[str, set[str]] = {}
    for im in dataset.images:
        for o in im.objects:
            if "superclass" in o.attrs and o.cls in classes:
                supers.setdefault(str(o.attrs["superclass"]), set()).add(o.cls)
    if supers:
        return {g: sorted(m) for g, m in sorted(supers.items())}
    groups = {g: [c for c in m if c in classes] for g, m in VOC_GROUPS.items()}
    return {g: m for g, m in groups.items() if m}


def largest_groups(groups: Mapping[str, Sequence[str]], n: int = 3) -> list[str]:
    """The `n` groups with the most classes (ties by name): category sets for trend plots
    (on VOC: animals, vehicles, furniture, the R-CNN paper's Figure 4 sets)."""
    return sorted(groups, key=lambda g: (-len(groups[g]), g))[:n]


def _similar(names: list[str], groups: Mapping[str, Sequence[str]]) -> np.ndarray:
    """(C, C) bool: classes sharing a group (a class is not similar to itself)."""
    index = {c: i for i, c in enumerate(names)}
    sim = np.zeros((len(names), len(names)), dtype=bool)
    for members in groups.values():
        idx = [index[c] for c in members if c in index]
        sim[np.ix_(idx, idx)] = True
    np.fill_diagonal(sim, False)
    return sim


# ------------------------------------------------------------------ objects and FP types

@dataclass
class _Objects:
    """Every object of a dataset: `ground_truth`'s flat rows plus a padded per-image table."""

    gt: GroundTruth
    names: list[str]  # class names: the dataset's, then any other object class
    cls: np.ndarray  # (K,) class index of each flat row
    first: np.ndarray  # (I,) first flat row of each image (rows are in image order)
    t_box: torch.Tensor  # (I, G, 4) float64
    t_cls: np.ndarray  # (I, G) class index, -1 for padding


def _objects(dataset: DetectionDataset) -> _Objects:
    gt = ground_truth(dataset)
    names = list(dataset.classes) + sorted(set(gt.by_class) - set(dataset.classes))
    index = {c: i for i, c in enumerate(names)}
    cls = np.zeros(gt.img.shape[0], dtype=np.int64)
    for c, rows in gt.by_class.items():
        cls[rows] = index[c]
    n_img = len(dataset.images)
    count = np.bincount(gt.img, minlength=n_img)
    first = np.cumsum(count) - count
    G = max(int(count.max(initial=0)), 1)
    t_box = np.zeros((n_img, G, 4))
    t_cls = np.full((n_img, G), -1, dtype=np.int64)
    t_box[gt.img, gt.local] = gt.box
    t_cls[gt.img, gt.local] = cls
    return _Objects(gt, names, cls, first, torch.from_numpy(t_box), t_cls)


@dataclass
class ClassDiagnosis:
    """One class's detections in descending score order: the `matching` (IoU 0.5, VOC2007
    rules) and `fp_type`, an index into FP_TYPES per detection (-1: a TP or ignored)."""

    cls: str
    matching: Matching
    fp_type: np.ndarray

    def counts(self) -> dict[str, int]:
        """Number of false positives of each type."""
        n = np.bincount(self.fp_type[self.fp_type >= 0], minlength=len(FP_TYPES))
        return {t: int(k) for t, k in zip(FP_TYPES, n)}


def _classify(objs: _Objects, dataset: DetectionDataset, cls: str, dets: Detections, sim: np.ndarray,
              weak_iou: float) -> ClassDiagnosis:
    m = match_detections(dataset, cls, dets, "voc07", 0.5, _gt=objs.gt)
    fp_type = np.full(len(dets), -1, dtype=np.int8)
    loc = m.fp & ((m.gt_index >= 0) | (m.iou >= weak_iou))  # FPs with gt_index >= 0 are duplicates
    fp_type[loc] = 0
    ci = objs.names.index(cls) if cls in objs.names else -1
    sim_row = np.append(sim[ci] if ci >= 0 else np.zeros(len(objs.names), dtype=bool), False)  # [-1]: padding
    rest = np.nonzero(m.fp & ~loc)[0]
    boxes = torch.from_numpy(dets.boxes[m.order])
    for s0 in range(0, rest.size, _CHUNK):
        d = rest[s0:s0 + _CHUNK]
        img = m.image_index[d]
        iou = box_iou_pairs(boxes[d][:, None, :], objs.t_box[img]).numpy()
        oc = objs.t_cls[img]
        touch = (iou >= weak_iou) & (oc >= 0) & (oc != ci)
        is_sim = (touch & sim_row[oc]).any(axis=1)
        is_oth = touch.any(axis=1)
        fp_type[d] = np.where(is_sim, 1, np.where(is_oth, 2, 3))
    return ClassDiagnosis(cls, m, fp_type)


def diagnose(dataset: DetectionDataset, detections: Mapping[str, Detections],
             groups: Mapping[str, Sequence[str]], weak_iou: float = 0.1,
             *, _objs: _Objects | None = None) -> dict[str, ClassDiagnosis]:
    """Match and type the false positives of every class of `dataset.classes` (a class
    missing from `detections` has none)."""
    objs = _objs if _objs is not None else _objects(dataset)
    sim = _similar(objs.names, groups)
    return {c: _classify(objs, dataset, c, detections.get(c) or Detections(), sim, weak_iou)
            for c in dataset.classes}


def fp_counts(diags: Mapping[str, ClassDiagnosis]) -> dict[str, dict[str, int]]:
    """class -> {"loc": n, "sim": n, "oth": n, "bg": n} over all of its false positives."""
    return {c: d.counts() for c, d in diags.items()}


# ------------------------------------------------------------------ trend

def fp_trend(diags: Mapping[str, ClassDiagnosis], classes: Iterable[str] | None = None,
             ns: Sequence[int] = (25, 50, 100, 200, 400, 800, 1600, 3200)) -> dict[str, Any]:
    """Share of each FP type among the top N false positives of a set of classes (all when
    None), the classes' FPs interleaved by rank (see the module docstring). N runs over `ns`
    up to the number available; when that is smaller than the largest N, the last point is
    all available FPs and `truncated` is true."""
    classes = list(diags) if classes is None else [c for c in classes if c in diags]
    per = [diags[c].fp_type[diags[c].fp_type >= 0] for c in classes]
    types = np.concatenate(per + [np.zeros(0, dtype=np.int8)]).astype(np.int64)
    rank = np.concatenate([np.arange(t.size) for t in per] + [np.zeros(0, dtype=np.int64)])
    owner = np.concatenate([np.full(t.size, k) for k, t in enumerate(per)] + [np.zeros(0, dtype=np.int64)])
    seq = types[np.lexsort((owner, rank))]
    cum = np.cumsum(np.eye(len(FP_TYPES), dtype=np.int64)[seq], axis=0)
    avail = int(seq.size)
    wanted = sorted({int(n) for n in ns if int(n) > 0})
    points = [n for n in wanted if n <= avail]
    truncated = bool(wanted) and avail < wanted[-1]
    if truncated and avail > 0 and (not points or points[-1] != avail):
        points.append(avail)
    counts = {t: [int(cum[n - 1, k]) for n in points] for k, t in enumerate(FP_TYPES)}
    return {"classes": classes, "n": points, "n_available": avail, "truncated": truncated, "counts": counts,
            "shares": {t: [v / n for v, n in zip(counts[t], points)] for t in FP_TYPES}}


def fp_share_samples(diags: Mapping[str, ClassDiagnosis], classes: Iterable[str] | None, types: Sequence[str],
                     n: int, picks: np.ndarray) -> tuple[float, np.ndarray]:
    """Share of `types` among the top `n` false positives of `classes` (interleaved by rank, as
    `fp_trend`), on all test images and on each bootstrap resample of them (`picks`: (B, images)
    counts, an image drawn k times contributing k copies of its false positives). Returns
    (share on the test set, (B,) shares), so a figure's claim gets an interval."""
    classes = list(diags) if classes is None else [c for c in classes if c in diags]
    want = np.isin(np.arange(len(FP_TYPES)), [FP_TYPES.index(t) for t in types])
    per = []
    for c in classes:
        d = diags[c]
        keep = d.fp_type >= 0
        per.append((want[d.fp_type[keep].astype(np.int64)], d.matching.image_index[keep]))

    def share(weights: np.ndarray | None) -> float:
        hits, ranks, owners = [], [], []
        for k, (hit, img) in enumerate(per):
            w = np.ones(len(img), np.int64) if weights is None else weights[img]
            h = np.repeat(hit, w)
            hits.append(h)
            ranks.append(np.arange(h.size))
            owners.append(np.full(h.size, k))
        if not hits:
            return float("nan")
        h, r, o = np.concatenate(hits), np.concatenate(ranks), np.concatenate(owners)
        top = h[np.lexsort((o, r))][:n]
        return float(top.mean()) if top.size else float("nan")

    return share(None), np.array([share(w) for w in picks])


# ------------------------------------------------------------------ AP impact and normalised AP

def _curve(tp: np.ndarray, fp: np.ndarray, n_pos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall and cumulative TP / FP counts of counted detections in score order."""
    tpc, fpc = np.cumsum(tp), np.cumsum(fp)
    return tpc / max(n_pos, 1), tpc, fpc


def ap_without(diag: ClassDiagnosis, types: Iterable[str] = (), use_07: bool = True) -> float:
    """The class's AP (VOC2007 11-point, or the envelope area) with the false positives of
    `types` removed (none: its plain AP); NaN without positives."""
    m = diag.matching
    if m.n_pos == 0:
        return math.nan
    drop = np.isin(diag.fp_type, [FP_TYPES.index(t) for t in types])
    keep = (m.tp | m.fp) & ~drop
    rec, tpc, fpc = _curve(m.tp[keep], m.fp[keep], m.n_pos)
    return voc_ap(rec, tpc / np.maximum(tpc + fpc, 1), use_07=use_07)


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(sum(v) / len(v)) if v else math.nan


def ap_impact(diags: Mapping[str, ClassDiagnosis], use_07: bool = True) -> dict[str, Any]:
    """AP per class and its mean, and the same after removing each FP type's false positives
    (`without[type][class]`, `mean_without[type]`; Loc removed = Hoiem's fix, see the module
    docstring). `gain[type]` = mean_without - mean AP: what that error type costs."""
    ap = {c: ap_without(d, (), use_07) for c, d in diags.items()}
    without = {t: {c: ap_without(d, (t,), use_07) for c, d in diags.items()} for t in FP_TYPES}
    m = _nanmean(ap.values())
    mean_without = {t: _nanmean(v.values()) for t, v in without.items()}
    return {"ap": ap, "map": m, "without": without, "mean_without": mean_without,
            "gain": {t: v - m for t, v in mean_without.items()}}


def normalized_ap(tp: Any, fp: Any, n_pos: int, n_norm: float) -> float:
    """Hoiem's AP_N of counted detections (`tp`, `fp` flags in score order): precision as if
    the class had `n_norm` positives, `tp' = tp * n_norm / n_pos`; area under the envelope.
    NaN without positives."""
    tp = np.asarray(tp, dtype=bool)
    return float(normalized_ap_weighted(tp, np.asarray(fp, dtype=bool), np.zeros(tp.size, np.int64),
                                        np.ones((1, 1)), np.array([n_pos]), n_norm)[0])


def normalized_ap_weighted(tp: np.ndarray, fp: np.ndarray, image: np.ndarray, weights: np.ndarray,
                           n_pos: np.ndarray, n_norm: float) -> np.ndarray:
    """`normalized_ap` of the same detections under B weightings of the images at once:
    `image` (n,) each detection's image, `weights` (B, images) copies of each image (a
    bootstrap resample's counts), `n_pos` (B,). Equal to repeating each detection its image's
    count of times: along a run of copies precision only rises (TPs) or falls (FPs), so the
    envelope needs the curve only at the TPs, and there the FPs before each TP count, summed
    per image by one sparse product. (B,), NaN where a weighting has no positives."""
    tp, fp, image = np.asarray(tp, dtype=bool), np.asarray(fp, dtype=bool), np.asarray(image, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    n_pos = np.asarray(n_pos, dtype=np.float64)
    before = np.cumsum(tp)  # for an FP, the TPs ranked above it: it counts from TP `before` on
    n_tp = int(tp.sum())
    late = fp & (before < n_tp)  # FPs below the last TP only lower precision where recall is flat
    fp_runs = csr_matrix((np.ones(int(late.sum())), (before[late], image[late])), shape=(n_tp, w.shape[1]))
    fpc = np.cumsum(np.asarray(fp_runs @ w.T).T, axis=1)  # (B, TPs) FP copies ranked above each TP
    rec = np.cumsum(w[:, image[tp]], axis=1) / np.maximum(n_pos, 1)[:, None]
    tpn = rec * n_norm
    prec = np.divide(tpn, tpn + fpc, out=np.zeros_like(tpn), where=(tpn + fpc) > 0)
    envelope = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    step = np.diff(rec, axis=1, prepend=0.0)
    return np.where(n_pos > 0, (step * envelope).sum(axis=1), np.nan)


# ------------------------------------------------------------------ characteristics

def _bin_by_class(values: np.ndarray, cls: np.ndarray, positive: np.ndarray, labels: Sequence[str]) -> list[str]:
    """Per object, its bin at its class's PERCENTILES of `values` (over the class's positives,
    or all its objects when it has none)."""
    out = np.empty(values.size, dtype=object)
    for c in np.unique(cls):
        rows = np.nonzero(cls == c)[0]
        ref = rows[positive[rows]] if positive[rows].any() else rows
        out[rows] = np.asarray(labels, dtype=object)[np.digitize(values[rows], np.percentile(values[ref], PERCENTILES))]
    return out.tolist()


def _occlusion(objects: list[ObjectAnn]) -> list[str]:
    """Occlusion bins: from `attrs["occlusion"]` fractions when every object has one, else VOC's flag."""
    if objects and all(isinstance(o.attrs.get("occlusion"), (int, float)) for o in objects):
        return [[name for lo, name in OCCLUSION_BINS if float(o.attrs["occlusion"]) >= lo][-1] for o in objects]
    return ["occluded" if o.occluded else "not occluded" for o in objects]


def object_subsets(dataset: DetectionDataset, part_visible: float = 0.5) -> dict[str, dict[str, np.ndarray]]:
    """characteristic -> subset name -> (K,) bool mask over the objects (`ground_truth`'s
    order: images, then objects). Characteristics: occlusion, truncation (VOC's flag), box
    area and aspect ratio (per-class percentile bins), viewpoint (`attrs["viewpoint"]`, else a
    specified VOC pose), parts (`attrs["parts"]`: each part visible / hidden at
    `part_visible`). Those with fewer than two non-empty subsets are left out."""
    objects = [o for im in dataset.images for o in im.objects]
    box = np.array([o.box for o in objects], dtype=np.float64).reshape(-1, 4)
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    cls = np.array([o.cls for o in objects], dtype=object)
    positive = np.array([not o.difficult for o in objects], dtype=bool)
    labels: dict[str, list[list[str]]] = {
        "occlusion": [[b] for b in _occlusion(objects)],
        "truncation": [["truncated" if o.truncated else "not truncated"] for o in objects],
        "area": [[b] for b in _bin_by_class(w * h, cls, positive, AREA_BINS)],
        "aspect": [[b] for b in _bin_by_class(w / np.maximum(h, 1e-9), cls, positive, ASPECT_BINS)],
        "viewpoint": [[str(o.attrs["viewpoint"])] if "viewpoint" in o.attrs
                      else ([o.pose] if o.pose != "Unspecified" else []) for o in objects],
        "parts": [[f"{p} {'visible' if float(v) >= part_visible else 'hidden'}"
                   for p, v in sorted(o.attrs.get("parts", {}).items())]
                  if isinstance(o.attrs.get("parts"), dict) else [] for o in objects],
    }
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, per_obj in labels.items():
        subsets: dict[str, np.ndarray] = {}
        for k, subs in enumerate(per_obj):
            for s in subs:
                subsets.setdefault(s, np.zeros(len(objects), dtype=bool))[k] = True
        if len(subsets) >= 2:
            out[name] = dict(sorted(subsets.items()))
    return out


def _positive_rows(objs: _Objects, dataset: DetectionDataset, cls: str) -> np.ndarray:
    """(K,) bool: the class's positives (not difficult, not blacklisted)."""
    pos = np.zeros(objs.cls.shape[0], dtype=bool)
    if cls not in objs.names:
        return pos
    pos[(objs.cls == objs.names.index(cls)) & ~objs.gt.difficult] = True
    blocked = [i for i, im in enumerate(dataset.images) if (im.image_id, cls) in dataset.blacklist]
    if blocked:
        pos &= ~np.isin(objs.gt.img, blocked)
    return pos


def _nanmean_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Mean over rows ignoring NaN, per column; NaN where a column has none (no warning)."""
    if not rows:
        return np.array(np.nan)
    v = np.stack(rows)
    n = (~np.isnan(v)).sum(axis=0)
    return np.where(n > 0, np.nansum(v, axis=0) / np.maximum(n, 1), np.nan)


def _characteristic_arrays(dataset: DetectionDataset, diags: Mapping[str, ClassDiagnosis], n_norm: float,
                           objs: _Objects, subsets: dict[str, dict[str, np.ndarray]], weights: np.ndarray
                           ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """`characteristics`' numbers under B weightings of the images at once (`weights` (B,
    images) counts, an image drawn k times counting its detections and positives k times;
    matching is per image, so this is exact): ({class: (B,) AP_N}, {characteristic:
    {"subsets": {subset: (B,)}, "min", "max", "overall", "n_classes": (B,)}})."""
    w = np.asarray(weights, dtype=np.float64)
    obj_w = w[:, objs.gt.img]
    overall: dict[str, np.ndarray] = {}
    per_cls: dict[str, dict[str, dict[str, np.ndarray]]] = {name: {} for name in subsets}
    for c, d in diags.items():
        m = d.matching
        counted = m.tp | m.fp
        pos = _positive_rows(objs, dataset, c)
        row = np.where(m.gt_index >= 0, objs.first[m.image_index] + m.gt_index, -1)

        def ap(keep: np.ndarray, positives: np.ndarray) -> np.ndarray:
            return normalized_ap_weighted(m.tp[keep], m.fp[keep], m.image_index[keep], w,
                                          obj_w[:, positives].sum(axis=1), n_norm)

        overall[c] = ap(counted, pos)
        for name, subs in subsets.items():
            per_cls[name][c] = {s: ap(counted & ((row < 0) | mask[np.maximum(row, 0)]), pos & mask)
                                for s, mask in subs.items()}
    result: dict[str, dict[str, Any]] = {}
    for name, by_cls in per_cls.items():
        lo, hi, base, n_classes = [], [], [], np.zeros(w.shape[0], np.int64)
        for c, aps in by_cls.items():
            v = np.stack(list(aps.values()))  # (subsets, B)
            ok = ~np.isnan(v).all(axis=0) & ~np.isnan(overall[c])
            lo.append(np.where(ok, np.where(np.isnan(v), np.inf, v).min(axis=0), np.nan))
            hi.append(np.where(ok, np.where(np.isnan(v), -np.inf, v).max(axis=0), np.nan))
            base.append(np.where(ok, overall[c], np.nan))
            n_classes += ok
        result[name] = {"subsets": {s: _nanmean_rows([aps[s] for aps in by_cls.values()]) for s in subsets[name]},
                        "min": _nanmean_rows(lo), "max": _nanmean_rows(hi), "overall": _nanmean_rows(base),
                        "n_classes": n_classes}
    return overall, result


def characteristics(dataset: DetectionDataset, diags: Mapping[str, ClassDiagnosis], n_norm: float,
                    part_visible: float = 0.5, *, weights: np.ndarray | None = None,
                    _objs: _Objects | None = None) -> dict[str, Any]:
    """Normalised AP overall and per object subset, and each characteristic's sensitivity and
    impact (see the module docstring). Returns `{"n_norm", "overall": mean AP_N,
    "ap_n": {class: AP_N}, "per_characteristic": {name: {"subsets": {subset: mean AP_N over
    classes with positives in it}, "min", "max", "overall", "sensitivity", "impact",
    "n_classes"}}}`. `weights`: (images,) counts of a bootstrap resample (see
    `_characteristic_arrays`)."""
    objs = _objs if _objs is not None else _objects(dataset)
    w = np.ones((1, len(dataset.images))) if weights is None else np.asarray(weights)[None, :]
    overall, arrays = _characteristic_arrays(dataset, diags, n_norm, objs, object_subsets(dataset, part_visible), w)
    result: dict[str, Any] = {}
    for name, a in arrays.items():
        mn, mx, ov = _scalar(a["min"]), _scalar(a["max"]), _scalar(a["overall"])
        result[name] = {"subsets": {s: _scalar(v) for s, v in a["subsets"].items()}, "min": mn, "max": mx,
                        "overall": ov, "sensitivity": mx - mn, "impact": mx - ov, "n_classes": int(a["n_classes"][0])}
    ap_n = {c: _scalar(v) for c, v in overall.items()}
    return {"n_norm": n_norm, "overall": _nanmean(ap_n.values()), "ap_n": ap_n, "per_characteristic": result}


def _scalar(values: np.ndarray) -> float:
    """The one weighting's value as a float (`math.nan` for NaN, as the module's other results)."""
    x = float(values[0])
    return math.nan if math.isnan(x) else x


def extreme_subsets_samples(dataset: DetectionDataset, diags: Mapping[str, ClassDiagnosis], n_norm: float,
                            part_visible: float, picks: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """R-CNN Figure 5's two statistics of one detector: the mean over characteristics of its
    worst and of its best subset's normalised AP (`characteristics`' "min" / "max"), on the test
    set and on each bootstrap resample (`picks`, as `fp_share_samples`), all weightings in one
    batch. Returns {"worst": (value, (B,) values), "best": (...)}."""
    w = np.vstack([np.ones((1, len(dataset.images))), np.asarray(picks).reshape(len(picks), -1)])
    subsets = object_subsets(dataset, part_visible)
    _, arrays = _characteristic_arrays(dataset, diags, n_norm, _objects(dataset), subsets, w)
    worst = _nanmean_rows([a["min"] for a in arrays.values()])
    best = _nanmean_rows([a["max"] for a in arrays.values()])
    return {"worst": (float(worst[0]), worst[1:]), "best": (float(best[0]), best[1:])}


# ------------------------------------------------------------------ everything, and the command

def analyze(dataset: DetectionDataset, detections: Mapping[str, Detections],
            groups: Mapping[str, Sequence[str]] | None = None, cfg: Analysis | None = None,
            diags: Mapping[str, ClassDiagnosis] | None = None) -> dict[str, Any]:
    """The whole diagnosis as plain, JSON-able data (NaN where a class has no positives):
    `groups`, `n_images`, `fp_types` (see `fp_counts`), `ap_impact`, `trend` (`"all"` classes
    and each similarity group) and `characteristics`. `groups` None: `similarity_groups`.
    `diags`: `diagnose`'s result for these detections, groups and `cfg.weak_iou`, when the
    caller already has it."""
    cfg = cfg if cfg is not None else Analysis()
    groups = similarity_groups(dataset) if groups is None else {g: list(m) for g, m in groups.items()}
    objs = _objects(dataset)
    if diags is None:
        diags = diagnose(dataset, detections, groups, cfg.weak_iou, _objs=objs)
    trend = {"all": fp_trend(diags, None, cfg.trend_fps)}
    trend.update({g: fp_trend(diags, m, cfg.trend_fps) for g, m in groups.items()})
    n_norm = cfg.norm_fraction * len(dataset.images)
    return {"groups": groups, "n_images": len(dataset.images), "fp_types": fp_counts(diags),
            "ap_impact": ap_impact(diags), "trend": trend,
            "characteristics": characteristics(dataset, diags, n_norm, cfg.part_visible, _objs=objs)}


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def format_report(result: dict[str, Any]) -> str:
    """A short table: FP types and AP per class, the overall trend, and the characteristics."""
    fp, imp = result["fp_types"], result["ap_impact"]
    ap_n = result["characteristics"]["ap_n"]
    width = max([len("class")] + [len(c) for c in fp])
    lines = [f"{'class':<{width}}  {'FPs':>6}  " + "  ".join(f"{t + ' %':>6}" for t in FP_TYPES)
             + f"  {'AP %':>6}  {'AP_N %':>6}"]
    for c, k in fp.items():
        n = sum(k.values())
        shares = "  ".join(f"{(100 * k[t] / n if n else 0):>6.1f}" for t in FP_TYPES)
        lines.append(f"{c:<{width}}  {n:>6d}  {shares}  {_pct(imp['ap'][c]):>6}  {_pct(ap_n[c]):>6}")
    lines.append(f"mAP {_pct(imp['map'])}; without " + ", ".join(
        f"{t}: {_pct(imp['mean_without'][t])}" for t in FP_TYPES))
    tr = result["trend"]["all"]
    lines.append("top-N false positives (all classes), shares % loc/sim/oth/bg:")
    for i, n in enumerate(tr["n"]):
        lines.append(f"  N={n:<5d} " + " / ".join(f"{100 * tr['shares'][t][i]:.0f}" for t in FP_TYPES))
    if tr["truncated"]:
        lines.append(f"  (only {tr['n_available']} false positives: the trend stops there)")
    ch = result["characteristics"]
    lines.append(f"normalised AP (N_norm = {ch['n_norm']:g}) {_pct(ch['overall'])}; per characteristic, "
                 "mean over classes of min / max AP_N %:")
    for name, r in ch["per_characteristic"].items():
        lines.append(f"  {name:<11} {_pct(r['min']):>5} / {_pct(r['max']):>5}  sensitivity "
                     f"{_pct(r['sensitivity'])}  impact {_pct(r['impact'])}")
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    """Plain JSON values: NaN as null, numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(x)
    return x


def analyze_command(dataset_dir: Path, split: str, results_dir: Path, groups_file: Path | None = None,
                    out: Path | None = None) -> dict[str, Any]:
    """`lsda analyze --dataset DIR --split SPLIT --results DIR [--groups FILE] [--out FILE]`.

    Reads the dataset and comp4 results as `lsda eval` does; with `out` writes the `analyze`
    result as JSON (NaN as null), else prints `format_report`. A folder with no results file
    for the split at all is an error."""
    from lsda_core.data.voc import read_voc  # noqa: PLC0415  (as in evaluate.eval_command)

    if out is not None:
        check_output_file(out, "diagnosis file (--out)")
    dataset = read_voc(Path(dataset_dir), split)
    groups = read_groups(Path(groups_file), dataset.classes) if groups_file is not None else None
    dets = read_comp4(Path(results_dir), split, dataset.classes)
    if dataset.classes and not any(Path(d.source or "").is_file() for d in dets.values()):
        raise DataError(f"{results_dir}: no results files comp4_det_{split}_<class>.txt for any of the "
                        f"{len(dataset.classes)} classes of {dataset_dir}")
    result = analyze(dataset, dets, groups)
    if out is not None:
        write_output(out, json.dumps(_jsonable(result), indent=1) + "\n", "diagnosis file (--out)")
    else:
        print(format_report(result))
    return result
