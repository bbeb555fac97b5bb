"""LSDA (Hoffman et al., 2014): turn an image classifier into a detector, also for the
categories that have no bounding boxes.

The benchmark (`load_benchmark`) is ILSVRC2013 DET's layout, the embedded world's
ILSVRC-like view or the real data: categories in `map_det` order, which is alphabetical by
name; set B is the first half (boxes at training time), set A the rest (held out: image-level
labels only). Detection training set: the val1 images with at least one set-B box plus up to
`lsda.train_per_class` train images of each B category, with B's boxes only (set-A objects
there train as background, as in the paper); the oracle trains on the same images with every
category's boxes (train images' from the world's every-box annotations when present; real
ILSVRC train has only its own synset's boxes); test set: val2 with every box; AP by the
ILSVRC rules.

The method, one function a step:
1. `classification_network`: pre-training (shared with R-CNN), then K new classifiers
   re-trained on the K categories' classification images (`pretrain.retrain`).
2. `adapt`: detection fine-tuning on B's boxes with an added background output; which layers
   adapt is a row of the paper's Table 1 (`ROWS`). Rows that keep conv1-5 frozen train on
   cached pool5 of the windows (`finetune.CachedWindows`), the others warp every window.
3. `transfer`: each A category's output layer moves by the average change of its k nearest
   B categories (Euclidean distance of L2-normalised classifier weights), eq. (1).
4. `detector`: score_i - score_background per region (no SVMs), per-class NMS, AP.
Plus `large_scale`: the same on the world's large view (few categories with boxes), with
per-class then cross-class NMS, for the paper's Figure 6.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats

from lsda_core.detection import features as F
from lsda_core.models import finetune as FT
from lsda_core.models import pretrain as PT
from lsda_core.detection import pipeline as DP
from lsda_core.experiments import rcnn as R
from lsda_core.detection import spp as SPP
from lsda_core.core.boxes import nms
from lsda_core.store.cache import Cache
from lsda_core.experiments import sources
from lsda_core.data.ilsvrc import TRAIN_EVERY_BOX, read_ilsvrc_det, read_synsets
from lsda_core.data.images import load_image
from lsda_core.data.imagenet import read_image_folder, read_synset_mapping
from lsda_core.data.voc import read_voc
from lsda_core.core.errors import DataError
from lsda_core.models.nets import CONVS, CaffeNet
from lsda_core.core.params import Params
from lsda_core.models.solver import stage_seed
from lsda_core.core.structures import DetectionDataset, concat, keep_classes, subset_classes
from lsda_core.core.structures import ImageAnn
from lsda_core.evaluation import hoiem as An
from lsda_core.evaluation.stats import Seeded, bootstrap_map, resamples
from lsda_core.perf import bench as BM
from lsda_core.store.identity import derived_key, digest, model_key

CLS_ROW = "No Adapt (Classification Network)"
ORACLE_ROW = "Oracle: Full Detection Network"
FULL_ROW = "fcbgrnd,layers1-7,fcB"


@dataclass(frozen=True)
class Row:
    """One adaptation of Table 1: which fc layers learn, whether set B's output rows learn,
    whether conv1-5 learn (the background output always learns)."""

    name: str
    fc: tuple[str, ...] = ()
    fcB: bool = False
    convs: bool = False

    def frozen(self) -> list[str]:
        """The layers that stay fixed during detection fine-tuning."""
        return ([] if self.convs else list(CONVS)) + [f for f in ("fc6", "fc7") if f not in self.fc]


ROWS = (Row("fcbgrnd"), Row("fcbgrnd,fc6", ("fc6",)), Row("fcbgrnd,fc7", ("fc7",)), Row("fcbgrnd,fcB", fcB=True),
        Row("fcbgrnd,fc6,fc7", ("fc6", "fc7")), Row("fcbgrnd,fc6,fc7,fcB", ("fc6", "fc7"), True),
        Row(FULL_ROW, ("fc6", "fc7"), True, True))


def knn_row(k: int) -> str:
    """Table 1's name of the full model with category-specific transfer from k neighbours."""
    return f"{FULL_ROW} Avg NN (k={k})"


def knn_bias_row(k: int) -> str:
    """The ablation row: the same transfer moving set A's biases too (not in the paper)."""
    return f"{knn_row(k)}, biases moved too"


@dataclass
class LsdaBenchmark:
    """The LSDA benchmark: `bench` (classes, B-only training set, test set, proposals,
    metric) for the R-CNN machinery, the two halves, the oracle's training set with every
    box, the classification images of the K categories, and display names."""

    bench: DP.Benchmark
    B: list[str]
    A: list[str]
    train_all: DetectionDataset
    cls_train: Any
    cls_val: Any
    names: dict[str, str]


def _split_b_a(classes: Sequence[str], names: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The first half of the categories alphabetically (by name) has boxes: set B."""
    order = sorted(classes, key=lambda c: (names or {}).get(c, c))
    half = len(order) // 2
    return [c for c in classes if c in set(order[:half])], [c for c in classes if c in set(order[half:])]


def _classification(p: Params, cache: Cache, classes: list[str]):
    """Classification train / val images of `classes` (image-level labels only)."""
    root = sources.classification_root(p, cache)
    return subset_classes(read_image_folder(root, "train"), classes), subset_classes(read_image_folder(root, "val"), classes)


def detection_images(val1: DetectionDataset, train: DetectionDataset, B: Sequence[str],
                     per_class: int) -> DetectionDataset:
    """The images both LSDA's detection fine-tuning and the oracle train on, with every box they
    have: the val1 images holding at least one set-B object (an image without one would teach
    only background), then up to `per_class` train images of each B category (ILSVRC train
    images live in one folder per category)."""
    b = set(B)
    kept = [im for im in val1.images if any(o.cls in b for o in im.objects)]
    per_folder: dict[str, int] = {}
    picked = []
    for im in train.images:
        folder = im.path.parent.name
        if folder in b and per_folder.get(folder, 0) < per_class:
            per_folder[folder] = per_folder.get(folder, 0) + 1
            picked.append(im)
    return concat([replace(val1, images=kept), replace(train, images=picked)], "val1+train")


def load_benchmark(p: Params, cache: Cache) -> LsdaBenchmark:
    """The ILSVRC-layout benchmark (see the module docstring) with its proposals."""
    root = sources.ilsvrc_root(p, cache)
    names = dict(read_synsets(root))
    classes = [w for w, _ in read_synsets(root)]
    B, A = _split_b_a(classes, names)
    val1, test = read_ilsvrc_det(root, "val1"), read_ilsvrc_det(root, "val2")
    train = read_ilsvrc_det(root, "train", every_box=(root / TRAIN_EVERY_BOX).is_dir())
    train_all = detection_images(val1, train, B, p.lsda.train_per_class)
    det_train = keep_classes(train_all, B, "val1+train (set B boxes)")
    props = DP.proposals_of(p, cache, train_all, test)
    cls_train, cls_val = _classification(p, cache, classes)
    bench = DP.Benchmark(classes, det_train, test, props, metric="ilsvrc")
    return LsdaBenchmark(bench, B, A, train_all, cls_train, cls_val, names)


# ---------------------------------------------------------------------------------------
# networks

def classification_network(p: Params, cache: Cache, lb: LsdaBenchmark, pre: CaffeNet | None = None,
                           ) -> tuple[CaffeNet, dict[str, Any]]:
    """The K-way classification network: pre-trained (`pre`, or the cached pre-training), its
    output layer replaced by K new classifiers re-trained on the K categories' images."""
    if pre is None:
        pre, _ = R.pretrained_network(p, cache)
    return PT.retrain(p, pre, lb.cls_train, lb.cls_val, cache)


def _head_init(p: Params, cls_model: CaffeNet) -> tuple[torch.Tensor, torch.Tensor]:
    """The detection output layer before fine-tuning: a new background row N(0, 0.01) (seeded)
    on top of the K classifiers of the classification network."""
    gen = torch.Generator().manual_seed(stage_seed(p.runtime.seed, "lsda-background"))
    w = cls_model.head.weight.detach().cpu()
    bg = torch.randn((1, w.shape[1]), generator=gen) * 0.01
    return torch.cat([bg, w]), torch.cat([torch.zeros(1), cls_model.head.bias.detach().cpu()])


def window_cache(p: Params, cache: Cache, cls_model: CaffeNet, lb: LsdaBenchmark) -> FT.CachedWindows:
    """pool5 of every training window from the classification network's conv layers,
    extracted once: every row that keeps conv1-5 frozen trains on it."""
    regions, _ = F.regions_with_gt(lb.bench.train, lb.bench.proposals, lb.bench.classes)
    entry = F.pool5_entry(cls_model, lb.bench.train, regions, p, cache, "lsda-windows")
    return FT.CachedWindows(entry.ref, lambda i: F.load_pool5(entry.folder(), i), entry)


def adapt(p: Params, cache: Cache, cls_model: CaffeNet, lb: LsdaBenchmark, row: Row,
          cached: FT.CachedWindows | None = None) -> tuple[CaffeNet, dict[str, Any]]:
    """Detection fine-tuning of the classification network on set B's boxes (one Table 1
    row): K + 1 outputs (0 = background), set A's rows fixed, B's rows learning only in the
    +fcB rows. Rows with conv1-5 frozen use `cached` windows when given."""
    classes = lb.bench.classes
    b_rows = [1 + classes.index(c) for c in lb.B]
    rows = [0] + (b_rows if row.fcB else [])
    return FT.finetune(p, cls_model, lb.bench.train, lb.bench.proposals, cache, classes, frozen=row.frozen(),
                       head_init=_head_init(p, cls_model), head_rows=rows,
                       cached=None if row.convs else cached)


def oracle(p: Params, cache: Cache, cls_model: CaffeNet, lb: LsdaBenchmark) -> tuple[CaffeNet, dict[str, Any]]:
    """The upper bound: the same full fine-tuning with the boxes of every category."""
    return FT.finetune(p, cls_model, lb.train_all, lb.bench.proposals, cache, lb.bench.classes,
                       head_init=_head_init(p, cls_model))


def neighbours(w_cls: np.ndarray, source: Sequence[int], target: Sequence[int], k: int) -> np.ndarray:
    """For each target row, the indices (into `source`) of its k nearest source rows by
    Euclidean distance between L2-normalised weight vectors (k = 0: all of them)."""
    w = w_cls / np.maximum(np.linalg.norm(w_cls, axis=1, keepdims=True), 1e-12)
    d = np.linalg.norm(w[list(target)][:, None, :] - w[list(source)][None, :, :], axis=2)
    k = len(source) if k <= 0 else min(k, len(source))
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def transfer(det_model: CaffeNet, cls_model: CaffeNet, lb: LsdaBenchmark, k: int,
             move_bias: bool = False) -> CaffeNet:
    """Category-specific adaptation, eq. (1): W_det_j = W_cls_j + mean over j's k nearest B
    categories i of (W_det_i - W_cls_i), for every j in A. The equation moves weights only: set
    A's biases stay those of the detection network (its classification biases, which adaptation
    does not touch); `move_bias` also moves them the same way (an ablation, not the paper's)."""
    classes = lb.bench.classes
    bi = [classes.index(c) for c in lb.B]
    ai = [classes.index(c) for c in lb.A]
    wc = cls_model.head.weight.detach().cpu().numpy()
    bc = cls_model.head.bias.detach().cpu().numpy()
    wd = det_model.head.weight.detach().cpu().numpy().copy()  # row 0: background
    bd = det_model.head.bias.detach().cpu().numpy().copy()
    nn_idx = np.asarray(bi)[neighbours(wc, bi, ai, k)]  # (|A|, k) class indices
    a_rows = 1 + np.asarray(ai)
    wd[a_rows] = wc[ai] + (wd[1 + nn_idx] - wc[nn_idx]).mean(axis=1)
    if move_bias:
        bd[a_rows] = bc[ai] + (bd[1 + nn_idx] - bc[nn_idx]).mean(axis=1)
    out = copy.deepcopy(det_model)
    with torch.no_grad():
        out.head.weight.copy_(torch.as_tensor(wd))
        out.head.bias.copy_(torch.as_tensor(bd))
    out.cache_key = derived_key(det_model.cache_key, f"knn{k}{'+bias' if move_bias else ''}", "derive-transfer")
    return out


# ---------------------------------------------------------------------------------------
# detection and evaluation

def proposal_features(p: Params, cache: Cache, model: CaffeNet, bench: DP.Benchmark, tag: str) -> DP.FeatureSet:
    """pool5 of every test proposal from `model` (cached when first read); scoring computes the rest."""
    regions = {im.image_id: np.asarray(bench.proposals[im.image_id], np.float32) for im in bench.test.images}
    entry = F.pool5_entry(model, bench.test, regions, p, cache, tag)
    return DP.FeatureSet(tag, entry.ref, {"test": regions}, {},
                         lambda split, image_id: F.load_pool5(entry.folder(), image_id), (entry,))


def detector(p: Params, cache: Cache, model: CaffeNet | SPP.SppHead, pool5: DP.FeatureSet, bench: DP.Benchmark,
             name: str, background: bool = True, nms_thresh: float | None = None) -> DP.DetectorResult:
    """LSDA's detector: per region score_i - score_background from the network's own output
    layer (`background=False`: the classification network's raw score_i), then per-class NMS.
    `model` may be the fast variant's `SppHead`, with `pool5` its SPP features."""
    model.eval()
    device = next(model.parameters()).device

    @torch.inference_mode()
    def scorer(f: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(f, np.float32), device=device)
        logits = model.head(model.fc(x, "fc7"))
        return (logits[:, 1:] - logits[:, :1] if background else logits).cpu().numpy()

    q = p if nms_thresh is None else replace(p, detect=replace(p.detect, nms=nms_thresh))
    config = {"scores": "lsda" if background else "raw", "model": model_key(model), "features": pool5.key,
              "detect": asdict(q.detect)}
    return DP.score_detections(name, bench, DP.cached_detections(cache, bench, config,
                                                                lambda: DP.run_detector(q, pool5, bench, scorer)))


def split_maps(result: DP.DetectorResult, lb: LsdaBenchmark) -> dict[str, float]:
    """mAP (%) over set B (trained), set A (held out) and all categories."""
    def m(cs: Sequence[str]) -> float:
        v = [result.ap[c] for c in cs if not np.isnan(result.ap.get(c, np.nan))]
        return 100 * float(np.mean(v)) if v else float("nan")
    return {"trained (B)": m(lb.B), "held-out (A)": m(lb.A), "all": m(lb.bench.classes)}


def paired_t_test(a: DP.DetectorResult, b: DP.DetectorResult, classes: Sequence[str]) -> dict[str, float]:
    """Paired-sample t-test over per-category AP of two detectors (the paper's test of
    LSDA against the classification network on the held-out categories)."""
    x = np.array([a.ap[c] for c in classes])
    y = np.array([b.ap[c] for c in classes])
    ok = ~(np.isnan(x) | np.isnan(y))
    t, pval = stats.ttest_rel(x[ok], y[ok])
    return {"t": float(t), "p": float(pval), "n": int(ok.sum()), "mean_diff": 100 * float(np.mean(x[ok] - y[ok]))}


@dataclass
class Table1:
    """Every Table 1 detector of one run, with the networks the later sections reuse."""

    results: dict[str, DP.DetectorResult]
    cls_model: CaffeNet
    cls_history: dict[str, Any]
    full_model: CaffeNet
    histories: dict[str, dict[str, Any]]


def table1(p: Params, cache: Cache, lb: LsdaBenchmark, pre: CaffeNet | None = None) -> Table1:
    """Train and evaluate every row of the paper's Table 1: the classification network, the
    seven adaptations, the transfer with each k of `lsda.knn`, and the oracle."""
    bench = lb.bench
    cls_model, cls_hist = classification_network(p, cache, lb, pre)
    cls_feats, results = cls_row(p, cache, lb, cls_model)
    windows = window_cache(p, cache, cls_model, lb)
    histories: dict[str, dict[str, Any]] = {}
    full = None
    for row in ROWS:
        model, hist = adapt(p, cache, cls_model, lb, row, windows)
        histories[row.name] = hist
        feats = proposal_features(p, cache, model, bench, "lsda-full") if row.convs else cls_feats
        results[row.name] = detector(p, cache, model, feats, bench, row.name)
        if row.name == FULL_ROW:
            full, full_feats = model, feats
    for k in p.lsda.knn:
        name = knn_row(k if k > 0 else len(lb.B))
        results[name] = detector(p, cache, transfer(full, cls_model, lb, k), full_feats, bench, name)
    name = knn_bias_row(lsda_k(p, lb))
    results[name] = detector(p, cache, transfer(full, cls_model, lb, p.lsda.k, move_bias=True), full_feats,
                             bench, name)
    results[ORACLE_ROW], histories[ORACLE_ROW] = oracle_row(p, cache, lb, cls_model)
    return Table1(results, cls_model, cls_hist, full, histories)


def cls_row(p: Params, cache: Cache, lb: LsdaBenchmark, cls_model: CaffeNet
            ) -> tuple[DP.FeatureSet, dict[str, DP.DetectorResult]]:
    """Table 1's first row, the classification network's raw scores (no adaptation), with the
    test features the frozen-conv rows reuse."""
    feats = proposal_features(p, cache, cls_model, lb.bench, "lsda-cls")
    return feats, {CLS_ROW: detector(p, cache, cls_model, feats, lb.bench, CLS_ROW, background=False)}


def oracle_row(p: Params, cache: Cache, lb: LsdaBenchmark, cls_model: CaffeNet
               ) -> tuple[DP.DetectorResult, dict[str, Any]]:
    """Table 1's last row, the oracle detector, and its fine-tuning history."""
    model, hist = oracle(p, cache, cls_model, lb)
    return detector(p, cache, model, proposal_features(p, cache, model, lb.bench, "lsda-oracle"), lb.bench,
                    ORACLE_ROW), hist


def premises(lb: LsdaBenchmark, results: dict[str, DP.DetectorResult]) -> dict[str, float | None]:
    """The chapter's premise (`premises.PREMISES`): the oracle's held-out mAP over the
    classification network's (the room LSDA has to close), and the recall of the proposals on
    the held-out categories' test objects, beside R-CNN's. `results` holds Table 1's
    classification-network and oracle rows (at least)."""
    a = {k: split_maps(results[k], lb)["held-out (A)"] for k in (CLS_ROW, ORACLE_ROW)}
    held = keep_classes(lb.bench.test, lb.A)
    return {"lsda_headroom": a[ORACLE_ROW] / a[CLS_ROW] if a[CLS_ROW] > 0 else float("nan"),
            "lsda_recall": DP.proposal_recall(held, lb.bench.proposals, 0.5)["recall"],
            "cls_held_out_map": a[CLS_ROW], "oracle_held_out_map": a[ORACLE_ROW]}


def headroom(p: Params, cache: Cache) -> dict[str, float | None]:
    """The chapter's premises from its two bounding rows alone (the classification network and
    the oracle, under the chapter's cache keys), for `lsda sweep lsda_headroom`: calibrating the
    LSDA view's sizes needs no adaptation row."""
    lb = load_benchmark(p, cache)
    cls_model, _ = classification_network(p, cache, lb)
    _, results = cls_row(p, cache, lb, cls_model)
    results[ORACLE_ROW], _ = oracle_row(p, cache, lb, cls_model)
    return premises(lb, results)


def seeded(p: Params, cache: Cache, lb: LsdaBenchmark, t1: Table1, held: HeldOut) -> Seeded:
    """Held-out mAP of every Table 1 row, with the detection fine-tuning of the every-layer row and
    of full LSDA (k = `lsda.k`) repeated for each of `lsda.seeds` (window sampling, dropout, the
    background row; the chapter's own run and its bootstrap, `held`, are reused for
    `runtime.seed`); pre-training and the classification network are shared. Every row on the
    same bootstrap resamples of the test images (`runtime.seed`), over set A's categories."""
    row = lsda_row(p, lb)
    held_map = {k: m["held-out (A)"] / 100 for k, m in held.maps.items()}
    maps: list[dict[str, float]] = []
    spreads: list[dict[str, np.ndarray]] = []
    for seed in p.lsda.seeds:
        if seed == p.runtime.seed:
            maps.append({k: held_map[k] for k in (FULL_ROW, row)})
            spreads.append({k: held.spread[k] for k in (FULL_ROW, row)})
        else:
            q = replace(p, runtime=replace(p.runtime, seed=int(seed)))
            full, _ = adapt(q, cache, t1.cls_model, lb, ROWS[-1])
            feats = proposal_features(q, cache, full, lb.bench, "lsda-full")
            res = {FULL_ROW: detector(q, cache, full, feats, lb.bench, FULL_ROW),
                   row: detector(q, cache, transfer(full, t1.cls_model, lb, q.lsda.k), feats, lb.bench, row)}
            maps.append({k: split_maps(r, lb)["held-out (A)"] / 100 for k, r in res.items()})
            spreads.append(bootstrap_map(lb.bench, list(res.values()), n=p.rcnn.bootstrap, seed=p.runtime.seed,
                                         classes=lb.A, cache=cache))
    return Seeded.stack(list(p.lsda.seeds), maps, spreads).add(held_map, held.spread)


# Figure 5's claim: the share of Loc and BG among the held-out categories' top N false positives,
# N being their positives in the test set (statistic -> `held_out_fps`' detector)
FIG5_SHARES = {"classification network: Loc+BG share": "classification network", "LSDA: Loc+BG share": "LSDA"}


def fp_shares(p: Params, lb: LsdaBenchmark, fps: dict[str, dict[str, Any]]) -> Seeded:
    """Figure 5's statistics (`FIG5_SHARES`) from `held_out_fps`' diagnoses, on the test set and
    on the chapter's bootstrap resamples (one seed)."""
    held = set(lb.A)
    n = sum(1 for im in lb.bench.test.images for o in im.objects if o.cls in held and not o.difficult)
    picks = resamples(len(lb.bench.test.images), p.rcnn.bootstrap, p.runtime.seed)
    return Seeded.once(p.runtime.seed, {name: An.fp_share_samples(fps[label]["diagnosis"], lb.A, ("loc", "bg"), n,
                                                                  picks)
                                        for name, label in FIG5_SHARES.items()})


# ---------------------------------------------------------------------------------------
# the large-scale view (Figure 6)

@dataclass
class LargeScale:
    """The large-scale detector: the benchmark, which categories had boxes, the two
    detectors (classification network and LSDA) and their mAP on both kinds of category."""

    bench: DP.Benchmark
    boxed: list[str]
    unboxed: list[str]
    cls: DP.DetectorResult
    lsda: DP.DetectorResult
    maps: list[dict[str, Any]]


def load_large(p: Params, cache: Cache, classes: list[str]) -> tuple[DP.Benchmark, list[str]]:
    """The world's large view (VOC layout over `classes`, every category; train has boxes for
    a few categories only, test for all) with proposals, and the categories with train boxes."""
    root = sources.large_root(p, cache)
    train, test = read_voc(root, "train", classes), read_voc(root, "test", classes)
    props = DP.proposals_of(p, cache, train, test)
    boxed = sorted({o.cls for im in train.images for o in im.objects}, key=train.classes.index)
    if not boxed:
        raise DataError(f"{root}: the large view's train split has no boxes")
    return DP.Benchmark(list(train.classes), train, test, props, metric="voc07"), boxed


def _reorder_head(model: CaffeNet, order: list[int]) -> CaffeNet:
    """A copy of `model` whose output rows are `order` of the original's."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.head.weight.copy_(model.head.weight[order])
        out.head.bias.copy_(model.head.bias[order])
    out.cache_key = derived_key(model_key(model), f"order-{digest(order)}", "derive-order")
    return out


def large_scale(p: Params, cache: Cache, pre: CaffeNet, pre_classes: list[str]) -> LargeScale:
    """LSDA on the large view: the pre-trained network is already the classification network
    over every category (its classifiers are put in the view's class order by name); it is
    fine-tuned for detection on the few categories with boxes (the layers of Table 1's row
    `lsda.large_row`; the paper adapted all of them) and every other category gets the
    transfer with k = `lsda.k`. Detectors use the demo's per-class NMS (`lsda.large_nms`)."""
    names = dict(read_synset_mapping(sources.classification_root(p, cache) / "LOC_synset_mapping.txt"))
    by_name = {names.get(w, w): i for i, w in enumerate(pre_classes)}
    bench, boxed = load_large(p, cache, sorted(by_name))
    order = [by_name[c] for c in bench.classes]
    cls_model = _reorder_head(pre, order)
    unboxed = [c for c in bench.classes if c not in boxed]
    lb = LsdaBenchmark(bench, boxed, unboxed, bench.train, None, None, {})
    row = next(r for r in ROWS if r.name == p.lsda.large_row)
    windows = None if row.convs else window_cache(p, cache, cls_model, lb)
    adapted, _ = adapt(p, cache, cls_model, lb, row, windows)
    lsda_model = transfer(adapted, cls_model, lb, p.lsda.k)
    nms_t = p.lsda.large_nms
    cls_feats = proposal_features(p, cache, cls_model, bench, "large-cls")
    cls = detector(p, cache, cls_model, cls_feats, bench, "classification network", background=False, nms_thresh=nms_t)
    feats = proposal_features(p, cache, adapted, bench, "large-lsda") if row.convs else cls_feats
    lsda = detector(p, cache, lsda_model, feats, bench, "LSDA", nms_thresh=nms_t)
    maps = []
    for r in (cls, lsda):
        m = split_maps(r, lb)
        maps.append({"detector": r.name, "with boxes": m["trained (B)"], "without boxes": m["held-out (A)"],
                     "all": m["all"]})
    return LargeScale(bench, boxed, unboxed, cls, lsda, maps)


def top_detections(result: DP.DetectorResult, image_id: str, cross_nms: float, top: int
                   ) -> list[tuple[str, np.ndarray, float]]:
    """The demo's output for one image: detections of every class (after per-class NMS),
    then NMS across classes at `cross_nms`, the `top` best as (class, box, score)."""
    cls, boxes, scores = [], [], []
    for c, d in result.detections.items():
        sel = np.flatnonzero(np.asarray(d.image_ids) == image_id)
        cls += [c] * len(sel)
        boxes.append(d.boxes[sel])
        scores.append(d.scores[sel])
    if not cls:
        return []
    b, s = np.concatenate(boxes), np.concatenate(scores)
    keep = nms(torch.as_tensor(b), torch.as_tensor(s), cross_nms).numpy()[:top]
    return [(cls[i], b[i], float(s[i])) for i in keep]


def held_out_examples(bench: DP.Benchmark, cls: DP.DetectorResult, lsda: DP.DetectorResult, held_out: Sequence[str],
                      n: int = 6) -> list[dict[str, Any]]:
    """Figure 4's cases: test images where, for a held-out category, LSDA's best box is right
    (IoU >= 0.5 with an object of it) and the classification network's best box is not;
    the `n` with the highest LSDA scores, one per image."""
    from lsda_core.core.boxes import box_iou

    def best(res: DP.DetectorResult, c: str, image_id: str) -> tuple[np.ndarray, float] | None:
        d = res.detections.get(c)
        if d is None:
            return None
        sel = np.flatnonzero(np.asarray(d.image_ids) == image_id)
        if not len(sel):
            return None
        i = sel[np.argmax(d.scores[sel])]
        return d.boxes[i], float(d.scores[i])

    found = []
    for im in bench.test.images:
        for c in held_out:
            gt = im.boxes(c)
            if not len(gt):
                continue
            a, b = best(lsda, c, im.image_id), best(cls, c, im.image_id)
            if a is None or b is None:
                continue
            ia = float(box_iou(torch.as_tensor(a[0][None]), torch.as_tensor(gt)).max())
            ib = float(box_iou(torch.as_tensor(b[0][None]), torch.as_tensor(gt)).max())
            if ia >= 0.5 > ib:
                found.append({"image": im, "class": c, "lsda": a[0], "cls": b[0], "score": a[1], "gt": gt})
    found.sort(key=lambda e: -e["score"])
    seen, out = set(), []
    for e in found:
        if e["image"].image_id not in seen:
            seen.add(e["image"].image_id)
            out.append(e)
    return out[:n]


# ---------------------------------------------------------------------------------------
# the fast variant (one conv pass per image, spatial pyramid pooling)

@dataclass
class Fast:
    """The fast variant's detector (with the transfer), its fine-tuning history, and the
    time per image of both variants measured on the same images and proposals."""

    result: DP.DetectorResult
    history: dict[str, Any]
    timing: dict[str, float]


def fast_variant(p: Params, cache: Cache, lb: LsdaBenchmark, full: CaffeNet, cls_model: CaffeNet,
                 n_timing: int = 10) -> Fast:
    """LSDA's fast version (SPP-net): the full LSDA network's conv layers run once per image,
    each proposal is max-pooled from conv5 into bins 6, 3, 2, 1, and the fc layers (fc6
    widened for the pyramid, started from the warping model's) are fine-tuned again on B's
    pooled windows the same way (background and B rows learn); then the transfer with
    k = `lsda.k`. Timing: seconds per image of both variants on `n_timing` test images,
    proposals excluded (the same for both)."""
    bench, classes = lb.bench, lb.bench.classes
    regions, _ = F.regions_with_gt(bench.train, bench.proposals, classes)
    train_f = SPP.spp_entry(full, bench.train, regions, p, cache, "lsda-train", mirror=p.finetune.mirror)
    rows = [0] + [1 + classes.index(c) for c in lb.B]
    head, hist = SPP.finetune_head(p, SPP.SppHead.from_model(full, p.fast.bins), bench.train, bench.proposals, cache,
                                   classes, train_f, head_rows=rows)
    test_regions = {im.image_id: np.asarray(bench.proposals[im.image_id], np.float32) for im in bench.test.images}
    test_f = SPP.spp_entry(full, bench.test, test_regions, p, cache, "lsda-test")
    fs = DP.FeatureSet("spp", test_f.ref, {"test": test_regions}, {},
                       lambda split, image_id: SPP.load_spp(test_f.folder(), image_id), (test_f,))
    result = detector(p, cache, transfer(head, cls_model, lb, p.lsda.k), fs, bench, "LSDA, fast (SPP)")
    return Fast(result, hist, time_variants(p, full, head, bench, n_timing))


def time_variants(p: Params, full: CaffeNet, head: SPP.SppHead, bench: DP.Benchmark, n: int) -> dict[str, float]:
    """Seconds per test image of the warping detector (warp every proposal, the whole net)
    and of the fast one (one conv pass, SPP, the head), measured now on the same images and
    proposals with `lsda bench`'s scorers and its harness (`bench.detector_rounds`:
    `bench.repeats` rounds, each passing both detectors in turn; each one's fastest round),
    scores of every class included, proposals and NMS excluded. With each one's work per image
    (`bench.detector_work`), which bounds the speed-up at equal FLOP rates; each one's time on no
    proposal (its fixed part: `bench.speedup_scaling`); and the lowest and highest of the rounds'
    own speed-ups, which show how much the machine moved it."""
    ims = bench.test.images[:n]
    full.eval()
    device = full.mean.device
    pixels = [np.require(load_image(im.path), requirements=["W", "C"]) for im in ims]
    boxes = [np.asarray(bench.proposals[im.image_id], np.float32) for im in ims]
    scorers = {"warping": F.warp_scorer(full, FT.context_pixels(p), True), "fast": SPP.fast_scorer(full, head, p, True)}
    with torch.inference_mode():
        runs, bx = BM.with_no_region(scorers, dict.fromkeys(scorers, boxes), list(scorers))  # the fixed parts too
        rounds = BM.detector_rounds(runs, pixels, bx, p.bench.repeats, device)
        out: dict[str, float] = {k: min(v) for k, v in rounds.items()}
        out.update({f"{k} GFLOP": BM.detector_work(f, pixels, boxes)[0] for k, f in scorers.items()})
    out["speed-up"] = out["warping"] / max(out["fast"], 1e-12)
    each = [w / max(f, 1e-12) for w, f in zip(rounds["warping"], rounds["fast"])]  # the speed-up of each round
    out["speed-up, lowest round"], out["speed-up, highest round"] = min(each), max(each)
    out["images"] = len(ims)
    out["proposals / image"] = float(np.mean([len(b) for b in boxes])) if ims else 0.0
    return out


def prepare(p: Params, cache: Cache, stage: str = "features") -> list[str]:
    """The LSDA chapter's expensive stages up to `stage`, with the chapter's own calls (so
    under its cache keys; under torchrun split across the processes): "proposals",
    "finetune" (the classification network, the full adaptation, the oracle), "features"
    (pool5 of the training windows and of the test proposals of those networks)."""
    if stage not in R.PREPARE_STAGES:
        raise ValueError(f"stage {stage!r} is not one of {list(R.PREPARE_STAGES)}")
    upto = R.PREPARE_STAGES.index(stage)
    lb = load_benchmark(p, cache)
    lines = [f"proposals: {len(lb.train_all)} training and {len(lb.bench.test)} test images"]
    if upto < 1:
        return lines
    cls_model, _ = classification_network(p, cache, lb)
    full, _ = adapt(p, cache, cls_model, lb, ROWS[-1])
    top, _ = oracle(p, cache, cls_model, lb)
    lines.append(f"networks: {cls_model.cache_key}, {full.cache_key}, {top.cache_key}")
    if upto < 2:
        return lines
    windows = window_cache(p, cache, cls_model, lb)
    windows.entry.folder()
    lines.append(f"features: windows {windows.key}")
    for tag, model in (("lsda-cls", cls_model), ("lsda-full", full), ("lsda-oracle", top)):
        fs = proposal_features(p, cache, model, lb.bench, tag)
        fs.build()
        lines.append(f"features: {tag} {fs.key}")
    return lines


# ---------------------------------------------------------------------------------------
# the chapter's figures and comparisons, each defined once

# Figure 3's bars (the paper's labels) and the Table 1 row of each; "LSDA" is `lsda_row(p, lb)`
FIGURE3 = {"Classification Net": CLS_ROW, "LSDA (bg only)": "fcbgrnd", "LSDA (bg+ft)": FULL_ROW}


def lsda_k(p: Params, lb: LsdaBenchmark) -> int:
    """k of full LSDA as the chapter reports it: `lsda.k`, or |B| when that is 0 (every B category)."""
    return p.lsda.k if p.lsda.k > 0 else len(lb.B)


def lsda_row(p: Params, lb: LsdaBenchmark) -> str:
    """Table 1's row of full LSDA: every layer adapted, then the transfer with k = `lsda_k`."""
    return knn_row(lsda_k(p, lb))


def table1_maps(t1: Table1, lb: LsdaBenchmark) -> dict[str, dict[str, float]]:
    """mAP (%) over set B, set A and all categories of every Table 1 row (`split_maps`)."""
    return {name: split_maps(r, lb) for name, r in t1.results.items()}


@dataclass
class HeldOut:
    """Figure 3 and the significance test: full LSDA's row, Figure 3's rows (label -> row), each
    row's mAP over the three sets, the bootstrap mAP over set A of every Table 1 row (paired), and
    the paired t-tests over set A's APs: the transfer against the adapted network without it (the
    paper's p-value belongs to this one) and full LSDA against the classification network."""

    lsda: str
    figure3: dict[str, str]
    maps: dict[str, dict[str, float]]
    spread: dict[str, np.ndarray]
    ttests: list[dict[str, Any]]


def held_out(p: Params, cache: Cache, lb: LsdaBenchmark, t1: Table1) -> HeldOut:
    """How Table 1's detectors do on the held-out categories, with their noise (bootstrap over
    the test images, `rcnn.bootstrap` resamples) and the paper's t-test."""
    row = lsda_row(p, lb)
    spread = bootstrap_map(lb.bench, list(t1.results.values()), n=p.rcnn.bootstrap, seed=p.runtime.seed,
                           classes=lb.A, cache=cache)
    tests = [{"key": "transfer", "comparison": f"transfer (k = {lsda_k(p, lb)}) vs the adapted network without it",
              "a": row, "b": FULL_ROW, **paired_t_test(t1.results[row], t1.results[FULL_ROW], lb.A)},
             {"key": "classification", "comparison": "LSDA vs the classification network", "a": row, "b": CLS_ROW,
              **paired_t_test(t1.results[row], t1.results[CLS_ROW], lb.A)}]
    return HeldOut(row, {**FIGURE3, "LSDA": row}, table1_maps(t1, lb), spread, tests)


@dataclass
class FastVsWarping:
    """LSDA's fast variant beside its warping detector (the row `warping` of Table 1, k = `k`):
    mAP (%) of each over set B, set A and all, and the seconds per image of both."""

    warping: str
    k: int
    warping_maps: dict[str, float]
    fast_maps: dict[str, float]
    timing: dict[str, float]


def fast_vs_warping(p: Params, cache: Cache, lb: LsdaBenchmark, t1: Table1) -> FastVsWarping:
    """The fast variant (`fast_variant`, timed on `rcnn.timing_images` images) beside full LSDA;
    both mAPs and the timing also go to the performance results file (`perf.bench`), whose
    targets include the fast detector's accuracy."""
    row = lsda_row(p, lb)
    fast = fast_variant(p, cache, lb, t1.full_model, t1.cls_model, n_timing=p.rcnn.timing_images)
    warping, fm = split_maps(t1.results[row], lb), split_maps(fast.result, lb)
    BM.record_fast_accuracy(BM.default_path(p), warping["all"], fm["all"], fast.timing)
    return FastVsWarping(row, lsda_k(p, lb), warping, fm, fast.timing)


def held_out_fps(p: Params, lb: LsdaBenchmark, t1: Table1) -> dict[str, dict[str, Any]]:
    """Figure 5: the held-out categories' false positives of the classification network and of
    full LSDA, typed by Hoiem et al.'s analysis: per detector the share of each type among the top
    N (`trend`, N over `analysis.trend_fps`), the count of each type over all (`counts`), and the
    diagnosis itself (`diagnosis`, for `fp_shares`)."""
    groups = An.similarity_groups(lb.bench.test)
    out = {}
    for name, row in (("classification network", CLS_ROW), ("LSDA", lsda_row(p, lb))):
        d = An.diagnose(lb.bench.test, t1.results[row].detections, groups, p.analysis.weak_iou)
        per_class = An.fp_counts({c: d[c] for c in lb.A if c in d})
        out[name] = {"trend": An.fp_trend(d, lb.A, p.analysis.trend_fps),
                     "counts": {t: sum(per_class.get(c, {}).get(t, 0) for c in lb.A) for t in An.FP_TYPES},
                     "diagnosis": d}
    return out


def large_examples(p: Params, ls: LargeScale) -> list[tuple[ImageAnn, list[tuple[str, np.ndarray, float]]]]:
    """Figure 6: `lsda.large_images` test scenes of the large view drawn with `runtime.seed`, each
    with LSDA's `lsda.large_top` best detections after NMS across categories (`top_detections`)."""
    images = ls.bench.test.images
    rng = np.random.default_rng(p.runtime.seed)
    pick = sorted(rng.choice(len(images), min(p.lsda.large_images, len(images)), replace=False))
    return [(images[i], top_detections(ls.lsda, images[i].image_id, p.lsda.large_cross_nms, p.lsda.large_top))
            for i in pick]
