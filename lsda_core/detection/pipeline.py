"""R-CNN's detection pipeline as library pieces shared by every chapter: the benchmark (classes,
splits, proposals), region feature sets (pool5 once per network, fc6 / fc7 from it, HOG), SVM
detectors with hard-negative mining, scoring and NMS into cached detections, box regression,
the softmax detector."""
from __future__ import annotations

import dataclasses

import io
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lsda_core.detection import bbox_reg as BR
from lsda_core.store import distributed as D
from lsda_core.evaluation import ap as E
from lsda_core.detection import features as F
from lsda_core.detection import hog as H
from lsda_core.detection import svm as S
from lsda_core.store.cache import Cache, Lazy
from lsda_core.store.files import atomic_save_npz, atomic_write_bytes, atomic_write_text
from lsda_core.data.comp4 import Detections, write_detections
from lsda_core.data.images import load_image
from lsda_core.detection.detect import detect
from lsda_core.models.nets import CaffeNet
from lsda_core.core.params import Params
from lsda_core.detection.proposals import ProposalConfig, compute_proposals, proposal_recall

from lsda_core.core.structures import DetectionDataset
from lsda_core.store.identity import dataset_identity, digest, images_identity, model_key


@dataclass
class Benchmark:
    """The detection benchmark: classes, the training and test splits, their proposals, and
    the evaluation rules (`evaluate` metrics: voc07 for VOC, ilsvrc for ILSVRC DET)."""

    classes: list[str]
    train: DetectionDataset
    test: DetectionDataset
    proposals: dict[str, np.ndarray]
    metric: str = "voc07"


def proposal_config(p: Params) -> ProposalConfig:
    return ProposalConfig(**dataclasses.asdict(p.proposals))


def proposals_of(p: Params, cache: Cache, *datasets: DetectionDataset) -> dict[str, np.ndarray]:
    """Selective-search proposals of every image of the datasets (cached per image)."""
    props: dict[str, np.ndarray] = {}
    for ds in datasets:
        props.update(compute_proposals(ds, cache, proposal_config(p), p.runtime.workers, p.runtime.progress))
    return props


def recall_table(bench: Benchmark, ious: tuple[float, ...] = (0.5, 0.7)) -> list[dict[str, Any]]:
    """Proposal recall (non-difficult objects) and proposals per image, per split."""
    rows = []
    for ds in (bench.train, bench.test):
        r = {f"recall@{t}": proposal_recall(ds, bench.proposals, t)["recall"] for t in ious}
        base = proposal_recall(ds, bench.proposals, ious[0])
        rows.append({"split": ds.split, "images": len(ds), "objects": base["objects"],
                     "proposals / image": round(base["per_image"], 1), **r})
    return rows


MEMO_BYTES = 3 << 30  # features of one FeatureSet kept in memory after their first use


@dataclass
class FeatureSet:
    """Features of the training regions (ground truth first) and of the test proposals.
    `load(split, image_id)` returns (N, D) float32 features of `regions[split][image_id]`."""

    name: str
    key: str  # identifies the features, for the cache keys of what is trained on them
    regions: dict[str, dict[str, np.ndarray]]
    n_gt: dict[str, int]
    load: Callable[[str, str], np.ndarray]
    entries: tuple[Lazy, ...] = ()  # the cache entries `load` reads, built on first read

    def build(self) -> list[Path]:
        """Build (or find) every cache entry the features are read from, now; their folders."""
        return [e.folder() for e in self.entries]


def feature_regions(bench: Benchmark) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Regions whose features are computed: per training image its ground-truth boxes then
    its proposals (R-CNN's SVM positives come first), per test image its proposals; and the
    number of ground-truth boxes at the front of each training image's regions."""
    train, n_gt = F.regions_with_gt(bench.train, bench.proposals, bench.classes)
    test = {im.image_id: np.asarray(bench.proposals[im.image_id], np.float32) for im in bench.test.images}
    return train, test, n_gt


def grayscale(ds: DetectionDataset, cache: Cache) -> DetectionDataset:
    """The same split with every image converted to grayscale (kept as 3 equal channels),
    for R-CNN's colour ablation; the images are written once to the cache (PNG, lossless;
    under torchrun each rank its share)."""
    from PIL import Image

    config = {"images": images_identity(ds.images)}

    def build(out: Path) -> None:
        for im in D.shard(ds.images):
            dest = out / f"{F.file_stem(im.image_id)}.png"
            if dest.is_file():
                continue
            buf = io.BytesIO()
            Image.fromarray(load_image(im.path)).convert("L").convert("RGB").save(buf, format="PNG")
            atomic_write_bytes(dest, buf.getvalue())

    folder = cache.entry("grayscale", config, build, resumable=True,
                         ranks="shard")
    images = [replace(im, path=folder / f"{F.file_stem(im.image_id)}.png") for im in ds.images]
    return replace(ds, images=images, name=ds.name + "-gray")


def cnn_features(p: Params, cache: Cache, model: CaffeNet, bench: Benchmark, layer: str, tag: str,
                 gray: bool = False) -> FeatureSet:
    """pool5 of every region from `model`, extracted once (cached) for train and test when
    first read (a warm chapter whose detectors are cached never reads them); `layer` (pool5 /
    fc6 / fc7) is computed from it on load."""
    train_regions, test_regions, n_gt = feature_regions(bench)
    train_ds, test_ds = (grayscale(bench.train, cache), grayscale(bench.test, cache)) if gray else (bench.train, bench.test)
    entries = {"train": F.pool5_entry(model, train_ds, train_regions, p, cache, tag),
               "test": F.pool5_entry(model, test_ds, test_regions, p, cache, tag)}
    memo: dict[tuple[str, str], np.ndarray] = {}
    room = [MEMO_BYTES]

    def load(split: str, image_id: str) -> np.ndarray:
        # features are computed once per image and kept (read-only) while they fit in
        # MEMO_BYTES: SVM training with hard-negative mining, every detector and every grid
        # point read them again (the embedded default's largest set: about 0.8 GB)
        f = memo.get((split, image_id))
        if f is None:
            f = F.fc_features(model, F.load_pool5(entries[split].folder(), image_id), layer)
            if f.nbytes <= room[0]:
                f.setflags(write=False)
                memo[split, image_id] = f
                room[0] -= f.nbytes
        return f

    key = f"{entries['train'].key}/{entries['test'].key}/{layer}"
    return FeatureSet(f"{tag} {layer}", key, {"train": train_regions, "test": test_regions}, n_gt, load,
                      (entries["train"], entries["test"]))


def hog_features(p: Params, cache: Cache, bench: Benchmark) -> FeatureSet:
    """HOG of every region warped to `hog.window` px: the features of the DPM HOG stand-in
    (cached per image when first read; under torchrun each rank its share of the images)."""
    train_regions, test_regions, n_gt = feature_regions(bench)
    entries = {"train": H.hog_entry(bench.train, train_regions, p, cache),
               "test": H.hog_entry(bench.test, test_regions, p, cache)}

    def load(split: str, image_id: str) -> np.ndarray:
        return np.load(entries[split].folder() / f"{F.file_stem(image_id)}.npy").astype(np.float32)

    key = f"{entries['train'].key}/{entries['test'].key}/hog"
    return FeatureSet("HOG", key, {"train": train_regions, "test": test_regions}, n_gt, load,
                      (entries["train"], entries["test"]))


@dataclass
class DetectorResult:
    """A trained and evaluated detector: its name, per-class AP (VOC 2007), mAP, and what
    it was trained on."""

    name: str
    ap: dict[str, float]
    map: float
    detections: dict[str, Detections] = field(repr=False, default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def region_sets(fs: FeatureSet, bench: Benchmark) -> list[S.RegionSet]:
    """The SVM training data: per training image its regions (ground truth first), the
    classes of its ground-truth boxes and a loader of its features."""
    index = {c: i for i, c in enumerate(bench.classes)}
    out = []
    for im in bench.train.images:
        gt = np.array([index[o.cls] for o in im.objects if o.cls in index], dtype=np.int64)
        assert len(gt) == fs.n_gt[im.image_id]
        out.append(S.RegionSet(fs.regions["train"][im.image_id], gt,
                               (lambda i=im.image_id: fs.load("train", i)), im.image_id))
    return out


def train_svm_detector(p: Params, cache: Cache, fs: FeatureSet, bench: Benchmark,
                       neg_iou: float | None = None, scale: float | None = None) -> dict[str, Any]:
    """Per-class SVMs on `fs` (cached): W, b, the feature scale and the training history."""
    svm_p = replace(p.svm, neg_iou=p.svm.neg_iou if neg_iou is None else neg_iou)
    config = {"features": fs.key, "svm": asdict(svm_p), "seed": p.runtime.seed, "classes": bench.classes,
              "scale": scale}

    def build(out: Path) -> None:
        sets = region_sets(fs, bench)
        W, b, hist = S.train_svms(sets, bench.classes, svm_p, seed=p.runtime.seed, progress=p.runtime.progress,
                                  scale=scale)
        np.savez(out / "svm.npz", W=W, b=b)
        atomic_write_text(out / "history.json", json.dumps({k: v for k, v in hist.items() if k != "retrains"},
                                                          default=_jsonable))

    folder = cache.entry("svm", config, build)
    z = np.load(folder / "svm.npz")
    return {"W": z["W"], "b": z["b"], "history": json.loads((folder / "history.json").read_text()),
            "key": f"{folder.parent.name}/{folder.name}"}


def _jsonable(x: Any) -> Any:
    return x.tolist() if isinstance(x, np.ndarray) else (x.item() if isinstance(x, np.generic) else str(x))


def run_detector(p: Params, fs: FeatureSet, bench: Benchmark, scorer: Callable[[np.ndarray], np.ndarray],
                 refine: Callable[[str, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
                 ) -> dict[str, Detections]:
    """Score every test proposal (`scorer(feats) -> (N, C)`), then per class the top boxes
    per image and NMS. `refine(image_id, boxes, regions, classes)` moves boxes before NMS."""
    def items():
        for im in bench.test.images:
            boxes = fs.regions["test"][im.image_id]
            scores = scorer(fs.load("test", im.image_id)) if len(boxes) else np.zeros((0, len(bench.classes)))
            if refine is None:
                yield im.image_id, boxes, scores
            else:
                yield im.image_id, boxes, scores, (lambda r, c, i=im.image_id, bx=boxes: refine(i, bx, r, c))

    return detect(items(), bench.classes, p.detect.nms, p.detect.max_per_image)


def cached_detections(cache: Cache, bench: Benchmark, config: dict[str, Any],
                      run: Callable[[], dict[str, Detections]]) -> dict[str, Detections]:
    """A detector's detections on the test set, cached on `config` (what made the scores: the
    trained model's and the features' cache keys, the detection settings) and the test set,
    so a warm rebuild of a chapter skips scoring and NMS (evaluation is cheap and reruns).

    Stored compactly, 24 bytes a detection: per class the test image's index (int32, in
    `bench.test.images` order), the score and the box (float32, the precision they were
    computed in); the detections returned are always those read back from the file, so a
    cold and a warm build give the same numbers."""
    config = {**config, "test": dataset_identity(bench.test), "classes": bench.classes}
    ids = np.array([im.image_id for im in bench.test.images], dtype=object)

    def build(out: Path) -> None:
        dets = run()
        index = {image_id: i for i, image_id in enumerate(ids)}
        arrays = {}
        for i, c in enumerate(bench.classes):
            d = dets.get(c, Detections())
            arrays[f"image{i}"] = np.array([index[x] for x in d.image_ids], dtype=np.int32)
            arrays[f"scores{i}"] = np.asarray(d.scores, np.float32)
            arrays[f"boxes{i}"] = np.asarray(d.boxes, np.float32)
        atomic_save_npz(out / "detections.npz", **arrays)

    folder = cache.entry("detections", config, build)
    z = np.load(folder / "detections.npz")
    return {c: Detections(ids[z[f"image{i}"]].tolist(), z[f"scores{i}"], z[f"boxes{i}"])
            for i, c in enumerate(bench.classes)}


def score_detections(name: str, bench: Benchmark, dets: dict[str, Detections], **info: Any) -> DetectorResult:
    res = E.evaluate(bench.test, dets, bench.metric)
    return DetectorResult(name, res["ap"], res["map"], dets, info)


def svm_detector(p: Params, cache: Cache, fs: FeatureSet, bench: Benchmark, name: str,
                 neg_iou: float | None = None, scale: float | None = None, refine=None) -> DetectorResult:
    """Train (cached) and evaluate one SVM detector on one feature set (its detections are
    cached too; a `refine` must carry a `key` attribute naming what it does, as
    `bbox_refiner`'s does)."""
    m = train_svm_detector(p, cache, fs, bench, neg_iou, scale)
    config = {"scores": "svm", "svm": m["key"], "features": fs.key, "detect": asdict(p.detect),
              "refine": None if refine is None else refine.key}
    dets = cached_detections(cache, bench, config,
                             lambda: run_detector(p, fs, bench, lambda f: S.score(f, m["W"], m["b"]), refine))
    return score_detections(name, bench, dets, scale=m["history"].get("scale"), features=fs.name)


def softmax_detector(p: Params, cache: Cache, model: CaffeNet, fs_fc7: FeatureSet, bench: Benchmark,
                     name: str) -> DetectorResult:
    """Scores from the fine-tuned network's own softmax (class probability), no SVMs; the
    detections cached like an SVM detector's."""
    @torch.inference_mode()
    def scorer(f: np.ndarray) -> np.ndarray:
        logits = model.head(torch.tensor(f, device=model.mean.device))  # a copy: cached features are read-only
        return torch.softmax(logits, dim=1)[:, 1:].cpu().numpy()

    config = {"scores": "softmax", "model": model_key(model), "features": fs_fc7.key, "detect": asdict(p.detect)}
    return score_detections(name, bench, cached_detections(cache, bench, config,
                                                           lambda: run_detector(p, fs_fc7, bench, scorer)))


def bbox_regressor(p: Params, pool5: FeatureSet, bench: Benchmark) -> BR.BBoxRegModel:
    """R-CNN's class-specific box regression on pool5 features of training regions with
    IoU > `detect.bbox_reg_iou` with a ground-truth box."""
    feats, props, gts, gcls, ious = [], [], [], [], []
    index = {c: i for i, c in enumerate(bench.classes)}
    for im in bench.train.images:
        regions = pool5.regions["train"][im.image_id]
        objs = [o for o in im.objects if o.cls in index]
        g, c, iou = BR.assign_gt(regions, np.array([o.box for o in objs]).reshape(-1, 4),
                                 np.array([index[o.cls] for o in objs], np.int64))
        keep = iou > p.detect.bbox_reg_iou
        if keep.any():
            feats.append(pool5.load("train", im.image_id)[keep])
            props.append(regions[keep]), gts.append(g[keep]), gcls.append(c[keep]), ious.append(iou[keep])
    sets = region_sets(pool5, bench)
    scale = S.scale_from_norms(S.sample_norms(sets, p.runtime.seed), p.svm.feature_norm)
    return BR.train_bbox_reg(np.concatenate(feats), np.concatenate(props), np.concatenate(gts),
                             np.concatenate(gcls), np.concatenate(ious), bench.classes,
                             lam=p.detect.bbox_reg_lambda, min_iou=p.detect.bbox_reg_iou, scale=scale)


def bbox_refiner(p: Params, pool5: FeatureSet, bench: Benchmark):
    """A `refine` for `run_detector`: regress each kept box with its region's pool5. The
    regressor (`bbox_regressor`) is trained on the first box it refines, so a detector whose
    detections are cached never trains it; its `key` names what makes it (the features, the
    training split, the settings it reads, this code through the detections stage)."""
    sizes = {im.image_id: (im.width, im.height) for im in bench.test.images}
    model: list[BR.BBoxRegModel] = []

    def refine(image_id: str, boxes: np.ndarray, regions: np.ndarray, classes: np.ndarray) -> np.ndarray:
        if not model:
            model.append(bbox_regressor(p, pool5, bench))
        f = pool5.load("test", image_id)[regions]
        return BR.apply_bbox_reg(boxes[regions], f, model[0], classes, image_size=sizes[image_id])

    made_of = {"train": dataset_identity(bench.train), "classes": bench.classes, "seed": p.runtime.seed,
               "iou": p.detect.bbox_reg_iou, "lambda": p.detect.bbox_reg_lambda, "norm": p.svm.feature_norm}
    refine.key = f"bbox regression {digest(made_of)} on {pool5.key}"
    return refine


def write_results(folder: Path, bench: Benchmark, result: DetectorResult) -> list[Path]:
    """The detector's detections in the VOC devkit's comp4 format (so `lsda eval` scores
    them the same way)."""
    return write_detections(folder, bench.test.split, result.detections)
