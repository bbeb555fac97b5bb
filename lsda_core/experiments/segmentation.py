"""R-CNN section 5: semantic segmentation with CNN features of mask proposals (Tables 3 and 4).

The embedded world's VOC view (or a VOC 2011/2012 segmentation root by path) gives class and
instance masks; every image gets about 150 mask proposals (`detection.mask_proposals`); each
proposal is described three ways (*full*, *fg*, *full+fg*) from fc6 or fc7 of the pre-trained
network, as the paper's Table 3, and optionally of the fine-tuned one; one linear SVR per class
predicts each proposal's overlap with that class (`detection.o2p`), trained on the train split;
the background threshold of pasting is chosen on the train split too; the eval split is
labelled and scored with VOC's segmentation accuracy (`evaluation.segmentation`).

Each row's result is cached (stage `segment`): the per-image confusion matrices of the eval
split (so the bootstrap over test images is a reweighting), the chosen threshold and a few
labellings for the chapter's examples.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lsda_core.core.errors import DataError
from lsda_core.core.params import Params
from lsda_core.core.structures import DetectionDataset, ImageAnn
from lsda_core.data.images import load_image, load_labels
from lsda_core.data.voc import read_segmentation_split, read_voc
from lsda_core.detection import o2p
from lsda_core.detection.features import fc_features
from lsda_core.detection import mask_ranking as MR
from lsda_core.detection.mask_proposals import (MaskProposalConfig, MaskProposals, best_overlap, load_mask_proposals,
                                                mask_proposals_entry)
from lsda_core.evaluation import segmentation as S
from lsda_core.evaluation.stats import Seeded, resamples
from lsda_core.experiments import sources
from lsda_core.models.nets import CaffeNet
from lsda_core.store.cache import Cache, entry_ref
from lsda_core.store.files import atomic_save_npz, atomic_write_bytes
from lsda_core.store.runtime import progress as progress_bar
from lsda_core.store.identity import array_digest, dataset_identity, model_key

STRATEGIES = ("full", "fg", "full+fg")
LAYERS = ("fc6", "fc7")
FT_ROW = "FT full+fg fc6"  # the fine-tuned network's row (`segmentation.finetuned`)
TABLE4_ROW = "full+fg fc6"  # the paper's best row, the one its Table 4 evaluates on the test split
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(13))  # pasting's background threshold, chosen on train
RECALL_CUTS = (150, 300)  # `proposal_premise` also reports coverage by the first this many masks
EXAMPLES = 4  # eval images whose labellings each row keeps for the chapter


@dataclass
class SegSplit:
    """One split: its images (annotations in XML order), instance and class masks, proposals,
    and per image each proposal's atom pixel counts per true class (void left out)."""

    dataset: DetectionDataset
    objects: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    props: dict[str, MaskProposals]
    source: str = ""  # the mask proposals' cache entry (and "ranked" once `ranked` cut them)
    descriptors: list[np.ndarray] | None = field(default=None, repr=False, compare=False)  # set by `describe`

    @property
    def ids(self) -> list[str]:
        return [im.image_id for im in self.dataset.images]

    def describe(self, progress: bool) -> list[np.ndarray]:
        """Each image's mask descriptors (`mask_ranking.describe`), computed once per split: a
        cold build trains the ranker on the train split and then ranks that same split."""
        if self.descriptors is None:
            self.descriptors = [MR.describe(self.props[im.image_id], load_image(im.path))
                                for im in progress_bar(self.dataset.images, "mask descriptors", progress)]
        return self.descriptors


@dataclass
class SegBenchmark:
    """Classes (background first, as mask indices), the train and eval splits (their kept
    masks), and both splits with their whole pools ("train", "eval": what the learned ranking
    is trained on and chooses from; the kept masks themselves with the hierarchy's ranking)."""

    classes: list[str]
    train: SegSplit
    eval: SegSplit
    pools: dict[str, SegSplit]


@dataclass
class SegRow:
    """One row of Table 3: per eval image its confusion matrix, the threshold chosen on train,
    and the labellings of the first `EXAMPLES` eval images."""

    name: str
    confusion: np.ndarray  # (N, K, K)
    threshold: float
    examples: dict[str, np.ndarray]

    @property
    def score(self) -> float:
        return S.score(self.confusion.sum(0), range(self.confusion.shape[1]))["mean"]


def root(p: Params, cache: Cache) -> Path:
    """The segmentation root: `segmentation.root`, or the embedded world's VOC view."""
    if p.segmentation.root:
        r = Path(p.segmentation.root)
        if not r.is_dir():
            raise DataError(f"{r}: segmentation.root does not exist or is not a folder")
        return r
    if p.data.source != "embedded":
        raise DataError("segmentation.root is not set: real data needs a VOC 2011/2012 segmentation root "
                        "(SegmentationClass/, SegmentationObject/, ImageSets/Segmentation/); pass -p segmentation.root PATH")
    return sources.voc_root(p, cache)


def mask_config(p: Params) -> MaskProposalConfig:
    """The mask proposals' strategies and how many of the hierarchy's masks are made: the pool
    the learned ranking chooses from, or the kept masks themselves when the hierarchy ranks."""
    s = p.segmentation
    return MaskProposalConfig(scales=tuple(s.scales), colour_spaces=tuple(s.colour_spaces), min_size=s.min_size,
                              max_masks=s.pool if s.ranking == "learned" else s.max_masks)


def load_split(p: Params, cache: Cache, base: Path, split: str) -> tuple[SegSplit, list[str]]:
    """A segmentation split with its masks and its (cached) mask proposals, the whole pool when
    the ranking is learned (`ranked` cuts it); and its classes."""
    ids, classes = read_segmentation_split(base, split)
    main = {im.image_id: im for im in read_voc(base, split).images} if (base / "ImageSets" / "Main" / f"{split}.txt").is_file() else {}
    missing = [i for i in ids if i not in main]
    if missing:
        raise DataError(f"{base / 'ImageSets' / 'Main' / f'{split}.txt'}: lacks {len(missing)} image(s) of the "
                        f"segmentation split {split!r}, e.g. {missing[0]!r}")
    ds = DetectionDataset("voc-seg", split, classes[1:], [main[i] for i in ids], base)
    objects = {i: load_labels(base / "SegmentationObject" / f"{i}.png") for i in ids}
    truth = {i: load_labels(base / "SegmentationClass" / f"{i}.png") for i in ids}
    entry = mask_proposals_entry(ds, cache, mask_config(p), workers=p.runtime.workers, progress=p.runtime.progress)
    return SegSplit(ds, objects, truth, load_mask_proposals(entry, ds), entry_ref(entry)), classes


def ranker_entry(p: Params, cache: Cache, train: SegSplit) -> Path:
    """The learned ranking's regressor (`mask_ranking.train_ranker`, pickled), trained on the
    train split's pools against their best object overlap; cached in stage `mask-ranker`."""
    config = {"train": train.source, "train_truth": array_digest(train.objects[i] for i in train.ids),
              "seed": p.runtime.seed}

    def build(out: Path) -> None:
        overlaps = [MR.best_object_overlap(train.props[i], train.objects[i]) for i in train.ids]
        model = MR.train_ranker(train.describe(p.runtime.progress), overlaps, seed=p.runtime.seed)
        atomic_write_bytes(out / "ranker.pkl", pickle.dumps(model))

    return cache.entry("mask-ranker", config, build)


def ranked(p: Params, cache: Cache, train: SegSplit, split: SegSplit) -> SegSplit:
    """`split` with the masks each image keeps (`segmentation.max_masks`): with the learned
    ranking (`detection.mask_ranking`), the regressor of `ranker_entry` (trained on `train`'s
    pools) orders each image's pool and a diversity rule drops near-duplicates (cached in stage
    `mask-ranking`); with the hierarchy's ranking the masks already are the kept ones."""
    if p.segmentation.ranking != "learned":
        return split
    keep = p.segmentation.max_masks
    model_entry = ranker_entry(p, cache, train)
    config = {"ranker": entry_ref(model_entry), "split": split.source, "keep": keep, "diversity": MR.DIVERSITY_IOU}

    def build(out: Path) -> None:
        model = pickle.loads((model_entry / "ranker.pkl").read_bytes())
        scores = MR.predict(model, split.describe(p.runtime.progress))
        kept = [MR.rerank(split.props[i], s, keep) for i, s in zip(split.ids, scores)]
        atomic_save_npz(out / "kept.npz", counts=np.array([len(k) for k in kept]), kept=np.concatenate(kept))

    z = np.load(cache.entry("mask-ranking", config, build) / "kept.npz")
    kept = np.split(z["kept"], np.cumsum(z["counts"])[:-1])
    props = {i: MaskProposals(split.props[i].atoms, split.props[i].members[k]) for i, k in zip(split.ids, kept)}
    return replace(split, props=props, source=f"{split.source} ranked", descriptors=None)


def load_benchmark(p: Params, cache: Cache) -> SegBenchmark:
    """Train and eval splits of the segmentation root (classes must agree)."""
    base = root(p, cache)
    train, classes = load_split(p, cache, base, p.segmentation.train_split)
    test, other = load_split(p, cache, base, p.segmentation.eval_split)
    _same_classes(base, p.segmentation.train_split, classes, p.segmentation.eval_split, other)
    return SegBenchmark(classes, ranked(p, cache, train, train), ranked(p, cache, train, test),
                        {"train": train, "eval": test})


def _same_classes(base: Path, split: str, classes: list[str], other_split: str, other: list[str]) -> None:
    """A DataError unless two splits of the segmentation root have the same classes."""
    if other != classes:
        raise DataError(f"{base}: splits {split!r} and {other_split!r} have "
                        f"different classes ({', '.join(classes[1:])} vs {', '.join(other[1:])})")


def proposal_premise(p: Params, cache: Cache) -> dict[str, float]:
    """`lsda sweep seg_proposals`: the mask proposals' coverage of the eval split's objects (the
    `seg_recall` premise) and O2P's mean best overlap, without any network."""
    split = load_benchmark(p, cache).eval
    q = proposal_quality(split)
    return {"seg_recall": q["recall_50"], "mean_best_overlap": q["mean_best_overlap"], "masks_per_image": q["per_image"],
            **{f"seg_recall@{n}": proposal_quality(split, n)["recall_50"] for n in RECALL_CUTS}}


def proposal_quality(split: SegSplit, first: int | None = None) -> dict[str, float]:
    """O2P's measure of proposal quality: the mean over objects of the best overlap of any
    proposal (void ignored), the share covered at IoU >= 0.5, masks per image; of the `first`
    masks only when given (masks are ranked, so that is what `max_masks` = `first` keeps)."""
    props = {i: MaskProposals(p.atoms, p.members[:first]) for i, p in split.props.items()}
    best = np.concatenate([best_overlap(props[i], split.objects[i]) for i in split.ids])
    return {"mean_best_overlap": float(best.mean()) if best.size else float("nan"),
            "recall_50": float((best >= 0.5).mean()) if best.size else float("nan"), "objects": int(best.size),
            "per_image": float(np.mean([len(props[i].members) for i in split.ids]))}


def _object_classes(image: ImageAnn, classes: list[str]) -> list[int]:
    """The class (0-based, background left out) of each object of an image, in XML order: the
    order of its instance mask's ids."""
    index = {c: k for k, c in enumerate(classes[1:])}
    return [index[o.cls] for o in image.objects]


def _atom_truth(props: MaskProposals, truth: np.ndarray, n: int) -> np.ndarray:
    """(A, n) pixels of each true class (void left out) in each atom."""
    keep = truth != S.VOID
    a = int(props.atoms.max()) + 1
    return np.bincount(props.atoms[keep].astype(np.int64) * n + truth[keep], minlength=a * n).reshape(a, n)


def _confusions(best: np.ndarray, cls: np.ndarray, counts: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
    """(T, n, n) the confusion of one image's pasting at each threshold, from its atoms'
    best score and class and their true-class pixel counts."""
    n = counts.shape[1]
    pred = np.where(best[None, :] >= np.asarray(thresholds)[:, None], cls[None, :] + 1, 0)  # (T, A)
    onehot = np.eye(n, dtype=np.int64)[pred]  # (T, A, n)
    return np.einsum("an,tam->tnm", counts, onehot)


def _mode_features(model: CaffeNet, folder: Path, split: SegSplit, layer: str) -> np.ndarray:
    """(regions of the split, D) `layer` features of one mode's cached region pool5."""
    return fc_features(model, np.concatenate([o2p.load_region_pool5(folder, i) for i in split.ids]), layer)


def row_result(p: Params, cache: Cache, sb: SegBenchmark, model: CaffeNet, tag: str, strategy: str,
               layer: str, name: str) -> SegRow:
    """Train the row's SVRs on the train split, choose pasting's threshold there, label the eval
    split (cached in stage `segment` on the features' entries, the targets and the SVR's C)."""
    modes = ("full", "fg") if strategy == "full+fg" else (strategy,)
    entries = {split: {m: o2p.region_pool5_entry(model, getattr(sb, split).dataset, getattr(sb, split).props, m, p,
                                                  cache, tag) for m in modes} for split in ("train", "eval")}
    n = len(sb.classes)
    config = {"features": {s: {m: e.ref for m, e in es.items()} for s, es in entries.items()}, "layer": layer,
              "model": model_key(model), "truth": dataset_identity(sb.eval.dataset), "svr_c": p.segmentation.svr_c,
              "train_truth": array_digest(sb.train.objects[i] for i in sb.train.ids), "thresholds": THRESHOLDS,
              "seed": p.runtime.seed}

    def build(out: Path) -> None:
        folders = {s: {m: e.folder() for m, e in es.items()} for s, es in entries.items()}
        train = {m: _mode_features(model, folders["train"][m], sb.train, layer) for m in modes}
        # each mode scaled to mean norm 1 on the training regions, modes concatenated
        scale = {m: float(np.linalg.norm(f, axis=1).mean()) or 1.0 for m, f in train.items()}
        x = np.concatenate([train[m] / scale[m] for m in modes], axis=1)
        y = np.concatenate([o2p.overlap_targets(sb.train.props[im.image_id], sb.train.objects[im.image_id],
                                                _object_classes(im, sb.classes), n - 1) for im in sb.train.dataset.images])
        w, b = o2p.train_svr(x, y, c=p.segmentation.svr_c)
        train_conf = np.zeros((len(THRESHOLDS), n, n), np.int64)
        for i, s in _split_scores(sb.train, x @ w + b):
            best, cls = o2p.atom_scores(sb.train.props[i], s)
            train_conf += _confusions(best, cls, _atom_truth(sb.train.props[i], sb.train.truth[i], n), THRESHOLDS)
        t = o2p.choose_threshold(lambda k: S.score(train_conf[THRESHOLDS.index(k)], range(n))["mean"], THRESHOLDS)
        xe = np.concatenate([_mode_features(model, folders["eval"][m], sb.eval, layer) / scale[m] for m in modes], axis=1)
        conf, examples = [], {}
        for k, (i, s) in enumerate(_split_scores(sb.eval, xe @ w + b)):
            best, cls = o2p.atom_scores(sb.eval.props[i], s)
            conf.append(_confusions(best, cls, _atom_truth(sb.eval.props[i], sb.eval.truth[i], n), (t,))[0])
            if k < EXAMPLES:
                examples[i] = o2p.paste(sb.eval.props[i], s, t)
        atomic_save_npz(out / "row.npz", confusion=np.stack(conf), threshold=np.array(t),
                        example_ids=np.array(list(examples)), examples=np.stack(list(examples.values())))

    z = np.load(cache.entry("segment", config, build) / "row.npz")
    return SegRow(name, z["confusion"], float(z["threshold"]), dict(zip(z["example_ids"].tolist(), z["examples"])))


def _split_scores(split: SegSplit, scores: np.ndarray):
    """(image id, its proposals' rows of `scores`) in split order."""
    start = 0
    for i in split.ids:
        k = len(split.props[i].members)
        yield i, scores[start:start + k]
        start += k


def table3(p: Params, cache: Cache, sb: SegBenchmark, nets: dict[str, Any]) -> dict[str, SegRow]:
    """Table 3's six rows on the pre-trained network (and the fine-tuned one's fc6 full+fg when
    `segmentation.finetuned`)."""
    rows = {f"{s} {layer}": row_result(p, cache, sb, nets["pretrained"], "pre", s, layer, f"{s} {layer}")
            for s in STRATEGIES for layer in LAYERS}
    if p.segmentation.finetuned:
        rows[FT_ROW] = row_result(p, cache, sb, nets["finetuned"], "ft", "full+fg", "fc6", FT_ROW)
    return rows


def table4(p: Params, cache: Cache, sb: SegBenchmark, nets: dict[str, Any]) -> SegRow | None:
    """Table 4: the paper's best row (`TABLE4_ROW`, pre-trained network) trained as in Table 3
    and evaluated once on the test split (`segmentation.test_split`; None when that is unset)."""
    if not p.segmentation.test_split:
        return None
    base = root(p, cache)
    test, classes = load_split(p, cache, base, p.segmentation.test_split)
    _same_classes(base, p.segmentation.train_split, sb.classes, p.segmentation.test_split, classes)
    strategy, layer = TABLE4_ROW.split()
    return row_result(p, cache, replace(sb, eval=ranked(p, cache, sb.pools["train"], test)), nets["pretrained"], "pre",
                      strategy, layer, TABLE4_ROW)


def bootstrap(rows: dict[str, SegRow], n: int, seed: int) -> dict[str, np.ndarray]:
    """Each row's mean accuracy on `n` bootstrap resamples of the eval images (the same for every
    row): the resampled split's confusion is the images' confusions summed with their counts."""
    first = next(iter(rows.values()))
    picks = resamples(first.confusion.shape[0], n, seed).astype(np.float64)
    out = {}
    for name, r in rows.items():
        out[name] = np.nanmean(S.class_iou(np.tensordot(picks, r.confusion, axes=1)), axis=1)  # (n, K, K) -> (n,)
    return out


def seeded(p: Params, rows: dict[str, SegRow]) -> Seeded:
    """The rows as the verdict machinery reads them: one network (no training seeds), the eval
    images resampled (`rcnn.bootstrap` resamples, `runtime.seed`)."""
    spread = bootstrap(rows, p.rcnn.bootstrap, p.runtime.seed)
    return Seeded.once(p.runtime.seed, {k: (r.score, spread[k]) for k, r in rows.items()})


def background_only(row: SegRow) -> float:
    """Mean accuracy of labelling every pixel background, from a row's confusions (its true
    pixels per class): background's IoU is its share of the pixels, every other class's 0."""
    truth = row.confusion.sum(axis=(0, 2))  # true pixels per class
    present = truth > 0
    return float(truth[0] / truth.sum() / present.sum()) if truth.sum() else float("nan")


def premises(sb: SegBenchmark, rows: dict[str, SegRow]) -> dict[str, float | None]:
    """The chapter's premises (`premises.PREMISES`): the mask proposals' coverage of the eval
    objects and the best row's mean accuracy above an all-background labelling (points)."""
    best = max(rows.values(), key=lambda r: r.score)
    return {"seg_recall": proposal_quality(sb.eval)["recall_50"],
            "seg_headroom": 100 * (best.score - background_only(best))}
