"""R-CNN end to end on a VOC-layout benchmark: each step of the paper as one cached function.

benchmark (trainval / test + selective search) -> networks (pre-trained on the
classification data, fine-tuned on warped proposals) -> region features (pool5 cached once
per network; fc6 / fc7 computed from it; HOG for the DPM stand-in) -> one linear SVM per
class with hard-negative mining -> per-class NMS -> VOC 2007 AP. The chapter's tables are
built from `DetectorResult`s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from lsda_core.detection import features as F
from lsda_core.models import finetune as FT
from lsda_core.models import pretrain as PT
from lsda_core.detection import svm as S
from lsda_core.store.cache import Cache
from lsda_core.experiments import premises as PR
from lsda_core.experiments import sources
from lsda_core.data.images import load_image
from lsda_core.data.imagenet import read_image_folder
from lsda_core.data.voc import read_voc
from lsda_core.models.nets import CaffeNet
from lsda_core.core.params import Params
from lsda_core.detection.pipeline import (Benchmark, FeatureSet, cnn_features, hog_features, proposal_config, proposals_of,
                                          svm_detector)
from lsda_core.detection.proposals import proposal_recall, selective_search
from lsda_core.detection.pipeline import (DetectorResult, bbox_refiner, softmax_detector,
                                          train_svm_detector)
from lsda_core.evaluation import hoiem as A
from lsda_core.evaluation import stats
from lsda_core.evaluation import units as U
from lsda_core.models import nets as N
from lsda_core.perf.bench import paper_params


def load_benchmark(p: Params, cache: Cache, train_split: str = "trainval", test_split: str = "test") -> Benchmark:
    """VOC-layout train/test splits (the world's VOC view, or VOC 2007 by path) and their
    selective-search proposals (cached per image)."""
    root = sources.voc_root(p, cache)
    train, test = read_voc(root, train_split), read_voc(root, test_split)
    return Benchmark(list(train.classes), train, test, proposals_of(p, cache, train, test))


def pretrained_network(p: Params, cache: Cache) -> tuple[CaffeNet, dict[str, Any]]:
    """The pre-trained network (cached): torchvision's AlexNet weights when
    `data.imagenet_weights` names them (no classification data needed then), else trained on
    the classification view's train split (val measured)."""
    if p.data.imagenet_weights:
        return PT.pretrain(p, None, None, cache)
    root = sources.classification_root(p, cache)
    return PT.pretrain(p, read_image_folder(root, "train"), read_image_folder(root, "val"), cache)


def load_networks(p: Params, cache: Cache, bench: Benchmark) -> dict[str, Any]:
    """The pre-trained network (classification data, image-level labels) and its copy
    fine-tuned on the benchmark's warped proposals; both cached."""
    pre, pre_hist = pretrained_network(p, cache)
    ft, ft_hist = FT.finetune(p, pre, bench.train, bench.proposals, cache, bench.classes)
    return {"pretrained": pre, "pretrain_history": pre_hist, "finetuned": ft, "finetune_history": ft_hist}


PREPARE_STAGES = ("proposals", "finetune", "features")


def prepare(p: Params, cache: Cache, stage: str = "features") -> list[str]:
    """Compute, or find in the cache, the chapter's expensive stages up to `stage`, with the
    chapter's own calls (so under its cache keys): "proposals" (selective search, both
    splits), "finetune" (pre-training, then fine-tuning), "features" (pool5 of both networks,
    pool5 of the grayscale images for the pre-trained one, HOG). Run under torchrun, the
    work is split across the processes (`distributed`). Returns one line per stage."""
    if stage not in PREPARE_STAGES:
        raise ValueError(f"stage {stage!r} is not one of {list(PREPARE_STAGES)}")
    upto = PREPARE_STAGES.index(stage)
    bench = load_benchmark(p, cache)
    lines = [f"proposals: {len(bench.train)} {bench.train.split} and {len(bench.test)} {bench.test.split} images"]
    if upto < 1:
        return lines
    nets = load_networks(p, cache, bench)
    lines.append(f"networks: {nets['pretrained'].cache_key}, {nets['finetuned'].cache_key}")
    if upto < 2:
        return lines
    feats = {**table2_features(p, cache, bench, nets), GRAY_ROW: grayscale_features(p, cache, bench, nets)}
    rows_of: dict[str, list[str]] = {}  # one extraction (pool5 or HOG) serves several rows
    for name, fs in feats.items():
        fs.build()
        rows_of.setdefault(fs.key.rsplit("/", 1)[0], []).append(name)
    lines += [f"features: {', '.join(names)}: {folders}" for folders, names in rows_of.items()]
    return lines


def time_per_image(p: Params, model: CaffeNet, bench: Benchmark, svm: dict[str, Any], layer: str = "fc7",
                   n_images: int = 10) -> dict[str, float]:
    """Seconds per test image, measured now on `n_images` images: selective search,
    features (warp + network), scoring (SVMs + NMS)."""
    from lsda_core.detection.detect import detect_image

    t = {"proposals": 0.0, "features": 0.0, "scoring": 0.0}
    ctx = FT.context_pixels(p)
    ims = bench.test.images[:n_images]
    for im in ims:
        img = load_image(im.path)
        t0 = time.perf_counter()
        regions = selective_search(img, proposal_config(p))
        t1 = time.perf_counter()
        with torch.inference_mode():
            pool5 = F.pool5_of_regions(model, img, regions, p.net.input_size, ctx)
            feats = F.fc_features(model, pool5, layer)
        t2 = time.perf_counter()
        detect_image(regions, S.score(feats, svm["W"], svm["b"]), p.detect.nms, p.detect.max_per_image)
        t3 = time.perf_counter()
        t["proposals"] += t1 - t0
        t["features"] += t2 - t1
        t["scoring"] += t3 - t2
    out = {k: v / max(len(ims), 1) for k, v in t.items()}
    out["total"] = sum(out.values())
    out["images"] = len(ims)
    return out


def bench_images(p: Params, cache: Cache) -> list:
    """The first `bench.images` test images of the R-CNN benchmark (the embedded world's
    VOC view, or VOC 2007 by path): what `lsda bench` times."""
    return read_voc(sources.voc_root(p, cache), "test").images[:p.bench.images]


# ---------------------------------------------------------------------------------------
# the chapter's tables and ablations, each defined once (the chapter and `prepare` call them)

HOG_ROW = "HOG + linear SVM (stand-in for DPM HOG)"
BBOX_ROW = "FT fc7 + box regression"
GRAY_ROW = "fc6, grayscale"
SOFTMAX_ROW = "FT softmax"
# Table 2's CNN rows: the row prefix, network and feature tag of each network, then its layers
TABLE2_NETWORKS = (("", "pretrained", "pre"), ("FT ", "finetuned", "ft"))
TABLE2_LAYERS = ("pool5", "fc6", "fc7")
# Figures 4 and 5: the detectors diagnosed (label -> Table 2 row), and how many superclasses are shown
DIAGNOSED = {"fc7 (no FT)": "fc7", "FT fc7": "FT fc7", "HOG": HOG_ROW}
DIAGNOSED_GROUPS = 3


@dataclass
class Comparison:
    """Detectors compared on the same test set: each one's result and its mAP on the same bootstrap
    resamples of the test images (`stats.bootstrap_map`), so differences are paired."""

    results: dict[str, DetectorResult]
    spread: dict[str, np.ndarray]


@dataclass
class Table2(Comparison):
    """Table 2's detectors, with the feature set of each row (later sections reuse them)."""

    features: dict[str, FeatureSet]


def cnn_table2_features(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any]) -> dict[str, FeatureSet]:
    """The features of Table 2's CNN rows by row name: pool5, fc6 and fc7 of the pre-trained and
    the fine-tuned network (pool5 extracted once per network, cached)."""
    return {prefix + layer: cnn_features(p, cache, nets[net], bench, layer, tag)
            for prefix, net, tag in TABLE2_NETWORKS for layer in TABLE2_LAYERS}


def table2_features(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any]) -> dict[str, FeatureSet]:
    """The features of every Table 2 row: the CNN rows' and HOG for the DPM stand-in."""
    return {**cnn_table2_features(p, cache, bench, nets), HOG_ROW: hog_features(p, cache, bench)}


def table2(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], boot_seed: int | None = None) -> Table2:
    """R-CNN's Table 2: one SVM detector per feature set of `table2_features`, plus box regression
    (on FT pool5) applied to FT fc7's detections, with the bootstrap spread of every row's mAP
    (resamples drawn with `boot_seed`, default `runtime.seed`)."""
    feats = table2_features(p, cache, bench, nets)
    results = {name: svm_detector(p, cache, fs, bench, name) for name, fs in feats.items()}
    results[BBOX_ROW] = svm_detector(p, cache, feats["FT fc7"], bench, BBOX_ROW,
                                     refine=bbox_refiner(p, feats["FT pool5"], bench))
    spread = stats.bootstrap_map(bench, list(results.values()), n=p.rcnn.bootstrap,
                                 seed=p.runtime.seed if boot_seed is None else boot_seed, cache=cache)
    return Table2(results, spread, feats)


def layer_gains(p: Params, cache: Cache) -> dict[str, float]:
    """"What it takes" (`lsda sweep rcnn_layers`): the CNN rows of Table 2 for one seed under the
    chapter's cache keys, as the quantities the paper's layer and fine-tuning findings are
    about (fc6 - pool5, and what fine-tuning adds to each layer, in mAP points), with the
    pre-trained network's val / train top-1 that the setup gave."""
    bench = load_benchmark(p, cache)
    nets = load_networks(p, cache, bench)
    m = {name: 100 * svm_detector(p, cache, fs, bench, name).map
         for name, fs in cnn_table2_features(p, cache, bench, nets).items()}
    pre = PR.pretrain_quality(p, cache, nets["pretrained"], nets["pretrain_history"]) \
        if not p.data.imagenet_weights else {}
    return {"val_top1": pre.get("val_top1"), "train_top1": pre.get("train_top1"), "fc6 - pool5": m["fc6"] - m["pool5"],
            **{f"FT gain {layer}": m["FT " + layer] - m[layer] for layer in TABLE2_LAYERS}, "FT fc7": m["FT fc7"]}


def seeded(p: Params, cache: Cache, bench: Benchmark, t2: Table2, gray: Comparison) -> stats.Seeded:
    """Table 2 and the colour ablation for every seed of `rcnn.seeds` (the chapter's own run is
    reused for `runtime.seed`; the others fine-tune and train SVMs again, cached), every one on
    the bootstrap resamples of `runtime.seed`, so the intervals cross seeds with test images."""
    per: list[dict[str, np.ndarray]] = []
    spreads: list[dict[str, np.ndarray]] = []
    for seed in p.rcnn.seeds:
        if seed == p.runtime.seed:
            t, g = t2, gray
        else:
            q = replace(p, runtime=replace(p.runtime, seed=int(seed)))
            nets = load_networks(q, cache, bench)
            t = table2(q, cache, bench, nets, boot_seed=p.runtime.seed)
            g = grayscale_ablation(q, cache, bench, nets, t, boot_seed=p.runtime.seed)
        both = merged(t, g)
        per.append({k: r.map for k, r in both.results.items()})
        spreads.append(both.spread)
    return stats.Seeded.stack(list(p.rcnn.seeds), per, spreads)


# Figure 4's claims: share of a false-positive type among the top N false positives, N being the
# test set's positives (as many false positives as there are objects to find)
FIG4_SHARES = {"FT fc7: Loc share": ("FT fc7", ("loc",)), "FT fc7: BG share": ("FT fc7", ("bg",)),
               "HOG: BG share": ("HOG", ("bg",))}  # statistic -> (`DIAGNOSED` label, FP types)


# Figure 5's claims: the mean over characteristics of the worst and of the best subset's
# normalised AP, without and with fine-tuning (statistic -> (`DIAGNOSED` label, "worst" / "best"))
FIG5_SUBSETS = {f"{label}: {which}-subset AP_N": (label, which)
                for label in ("fc7 (no FT)", "FT fc7") for which in ("worst", "best")}


def figure_stats(p: Params, bench: Benchmark, diag: Diagnosis) -> stats.Seeded:
    """Figures 4 and 5's statistics (`FIG4_SHARES`, `FIG5_SUBSETS`) from the chapter's diagnosis,
    on the test set and on the chapter's bootstrap resamples (one seed: the chapter's detectors)."""
    n = sum(1 for im in bench.test.images for o in im.objects if not o.difficult)
    picks = stats.resamples(len(bench.test.images), p.rcnn.bootstrap, p.runtime.seed)
    rows = {name: A.fp_share_samples(diag.diagnoses[label], None, types, n, picks)
            for name, (label, types) in FIG4_SHARES.items()}
    n_norm = p.analysis.norm_fraction * len(bench.test.images)
    extremes = {label: A.extreme_subsets_samples(bench.test, diag.diagnoses[label], n_norm, p.analysis.part_visible,
                                                 picks) for label in {lb for lb, _ in FIG5_SUBSETS.values()}}
    rows.update({name: extremes[label][which] for name, (label, which) in FIG5_SUBSETS.items()})
    return stats.Seeded.once(p.runtime.seed, rows)


def premises(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: Table2) -> dict[str, float | None]:
    """The chapter's premises, measured (`premises.PREMISES`): proposal recall on the test split,
    the pre-trained network's val top-1 and its fit, how flat fine-tuning's loss is at the end
    and how many passes over the foreground windows it made, and the best Table 2 row's mAP."""
    pre = PR.pretrain_quality(p, cache, nets["pretrained"], nets["pretrain_history"]) \
        if not p.data.imagenet_weights else {}
    ft = nets["finetune_history"]
    return {"recall": proposal_recall(bench.test, bench.proposals, 0.5)["recall"],
            "pretrain_val": pre.get("val_top1"), "pretrain_fit": pre.get("fit_gap"),
            "finetune_plateau": PR.plateau([r["loss"] for r in ft["log"]]),
            "finetune_passes": p.finetune.iterations * p.finetune.fg_per_batch / max(ft["n_fg_windows"], 1),
            "rcnn_headroom": 100 * max(r.map for r in t2.results.values())}


@dataclass
class Diagnosis:
    """Hoiem et al.'s diagnosis of the `DIAGNOSED` detectors: the similarity groups (superclasses),
    the largest ones (shown per group), `hoiem.analyze`'s result per detector label, and the
    typed false positives it was made from (`diagnoses`, for `figure_stats`)."""

    groups: dict[str, list[str]]
    shown: list[str]
    results: dict[str, dict[str, Any]]
    diagnoses: dict[str, dict[str, A.ClassDiagnosis]]


def diagnosis(p: Params, bench: Benchmark, t2: Table2) -> Diagnosis:
    """Figures 4 and 5: every false positive of the diagnosed detectors typed (Loc, Sim, Oth, BG),
    and their normalised AP per object characteristic."""
    groups = A.similarity_groups(bench.test)
    shown = A.largest_groups(groups, DIAGNOSED_GROUPS)
    diags = {label: A.diagnose(bench.test, t2.results[row].detections, groups, p.analysis.weak_iou)
             for label, row in DIAGNOSED.items()}
    return Diagnosis(groups, shown, {label: A.analyze(bench.test, t2.results[row].detections, groups, p.analysis,
                                                      diags=diags[label])
                                     for label, row in DIAGNOSED.items()}, diags)


@dataclass
class Pool5Units:
    """Figures 3 and 6: the pool5 units shown, their top test regions, the colour the network saw
    outside an image (its mean), a pool5 unit's receptive field (size, stride) in pixels of the
    `input_size` px input, and the same three for CaffeNet (the paper-size network)."""

    units: list[U.Unit]
    tops: list[U.UnitTop]
    fill: tuple[float, ...]
    receptive_field: int
    stride: int
    input_size: int
    caffenet: tuple[int, int, int]


def pool5_units(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: Table2) -> Pool5Units:
    """The units of the fine-tuned network's pool5 chosen from its pool5 SVMs (Table 2's, cached) or
    by hand (`units`), and the test regions exciting each most (NMS `units.nms` within an image)."""
    fs5 = t2.features["FT pool5"]
    svm5 = train_svm_detector(p, cache, fs5, bench)
    units = U.choose_units(p, svm5, bench.classes)
    tops = U.cached_top_regions(cache, fs5, units, max(p.units.top, p.units.montage_top), p.units.nms,
                                progress=p.runtime.progress)
    fill = tuple(nets["finetuned"].mean.flatten().tolist())
    size, stride, _ = N.receptive_field(p.net, "pool5")
    caffenet = paper_params(p).net
    big, big_stride, _ = N.receptive_field(caffenet, "pool5")
    return Pool5Units(units, tops, fill, size, stride, p.net.input_size, (big, big_stride, caffenet.input_size))


@dataclass
class NegIouGrid:
    """The negative-overlap grid: the FT fc7 detector per threshold, and the bootstrap spread."""

    results: dict[float, DetectorResult]
    spread: dict[str, np.ndarray]


def neg_iou_grid(p: Params, cache: Cache, bench: Benchmark, t2: Table2) -> NegIouGrid:
    """R-CNN's grid search of the IoU below which a proposal is an SVM negative (`rcnn.neg_iou_grid`)
    on FT fc7, with one feature scale (the default detector's) for the whole grid."""
    fs = t2.features["FT fc7"]
    scale = train_svm_detector(p, cache, fs, bench)["history"]["scale"]
    grid = {t: svm_detector(p, cache, fs, bench, f"neg IoU {t:.1f}", neg_iou=t, scale=scale)
            for t in p.rcnn.neg_iou_grid}
    return NegIouGrid(grid, stats.bootstrap_map(bench, list(grid.values()), n=p.rcnn.bootstrap, seed=p.runtime.seed,
                                                cache=cache))


def grayscale_features(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any]) -> FeatureSet:
    """fc6 of the pre-trained network on grayscale copies of every image (the colour ablation)."""
    return cnn_features(p, cache, nets["pretrained"], bench, "fc6", "pre", gray=True)


def grayscale_ablation(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: Table2,
                       boot_seed: int | None = None) -> Comparison:
    """R-CNN's "grayscale world": SVMs on fc6 of grayscale images, tested on grayscale images,
    beside Table 2's fc6 row."""
    gray = svm_detector(p, cache, grayscale_features(p, cache, bench, nets), bench, GRAY_ROW)
    rows = {"fc6": t2.results["fc6"], GRAY_ROW: gray}
    return Comparison(rows, stats.bootstrap_map(bench, list(rows.values()), n=p.rcnn.bootstrap,
                                                seed=p.runtime.seed if boot_seed is None else boot_seed, cache=cache))


def softmax_ablation(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: Table2) -> Comparison:
    """The fine-tuned network's own softmax as the scorer instead of SVMs, beside FT fc7's SVMs."""
    soft = softmax_detector(p, cache, nets["finetuned"], t2.features["FT fc7"], bench, SOFTMAX_ROW)
    rows = {"FT fc7": t2.results["FT fc7"], SOFTMAX_ROW: soft}
    return Comparison(rows, stats.bootstrap_map(bench, list(rows.values()), n=p.rcnn.bootstrap, seed=p.runtime.seed,
                                                cache=cache))


def merged(*parts: Comparison) -> Comparison:
    """Every detector of `parts` in one comparison (all share the bootstrap resamples of one seed,
    so a detector in several parts has the same spread in each)."""
    out = Comparison({}, {})
    for part in parts:
        out.results.update(part.results)
        out.spread.update(part.spread)
    return out


def timing(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: Table2) -> dict[str, float]:
    """Seconds per test image of the FT fc7 detector (Table 2's SVMs, cached), measured now on
    `rcnn.timing_images` images (`time_per_image`)."""
    svm = train_svm_detector(p, cache, t2.features["FT fc7"], bench)
    return time_per_image(p, nets["finetuned"], bench, svm, n_images=p.rcnn.timing_images)
