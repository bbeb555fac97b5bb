"""R-CNN end to end on a VOC-layout benchmark: each step of the paper as one cached function.

benchmark (trainval / test + selective search) -> networks (pre-trained on the
classification data, fine-tuned on warped proposals) -> region features (pool5 cached once
per network; fc6 / fc7 computed from it; HOG for the DPM stand-in) -> one linear SVM per
class with hard-negative mining -> per-class NMS -> VOC 2007 AP. The chapter's tables are
built from `DetectorResult`s.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from lsda_core.detection import features as F
from lsda_core.models import finetune as FT
from lsda_core.models import pretrain as PT
from lsda_core.detection import svm as S
from lsda_core.store.cache import Cache
from lsda_core.experiments import sources
from lsda_core.data.images import load_image
from lsda_core.data.imagenet import read_image_folder
from lsda_core.data.voc import read_voc
from lsda_core.models.nets import CaffeNet
from lsda_core.core.params import Params
from lsda_core.detection.pipeline import (Benchmark, FeatureSet, cnn_features, hog_features, proposal_config, proposals_of,
                                          svm_detector)
from lsda_core.detection.proposals import selective_search


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
    for tag, model, gray in (("pre", nets["pretrained"], False), ("ft", nets["finetuned"], False),
                             ("pre", nets["pretrained"], True)):
        fs = cnn_features(p, cache, model, bench, "pool5", tag, gray=gray)
        lines.append(f"features: pool5-{tag}{' grayscale' if gray else ''} {fs.key.rsplit('/', 1)[0]}")
    lines.append(f"features: hog {hog_features(p, cache, bench).key.rsplit('/', 1)[0]}")
    return lines


def seed_spread(p: Params, cache: Cache, feats: dict[str, FeatureSet], bench: Benchmark,
                seeds: list[int]) -> list[dict[str, Any]]:
    """mAP (%) of SVM detectors retrained with each seed on the same features: the spread of
    the SVM stage (liblinear's visiting order, the feature-scale sample), which the bootstrap
    over test images does not show. One row per seed, one column per feature set."""
    rows = []
    for seed in seeds:
        q = replace(p, runtime=replace(p.runtime, seed=int(seed)))
        rows.append({"seed": int(seed), **{name: 100 * svm_detector(q, cache, fs, bench, name).map
                                          for name, fs in feats.items()}})
    return rows


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
