"""The one parameter schema of the study: dataclasses loaded from YAML and validated.

The CLI and every notebook (through Papermill) receive the same validated `Params`.
A preset may inherit from another with `base: other.yaml`; an unknown key, a wrong type or
an out-of-range value raises `ParamsError`, whose message names the file, the key and what
is valid.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lsda_core.core import yamltext
from lsda_core.core.errors import LsdaError


class ParamsError(LsdaError, ValueError):
    """A parameter file or override that does not fit the schema; `key` is the dotted key at
    fault, when there is one (so `load` can say whether an override or the file set it)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


PRECISIONS = ("auto", "float32", "bfloat16")  # net.precision (models.nets.resolve_precision)
SEED_MAX = 2**32 - 1  # seeds are 32-bit, as NumPy's legacy seeding and every library accept them


def _p(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
       choices: tuple | None = None, path: bool = False) -> Any:
    """A schema field with its help text and its valid range or choices."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Runtime:
    """Where and how things run; none of it changes a result except `seed`."""

    seed: int = _p(0, "master seed for every random draw of the study", lo=0, hi=SEED_MAX)
    device: str = _p("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    workers: int = _p(2, "worker processes for parallel stages (proposals, rendering)", lo=1, hi=256)
    artifacts: str = _p("artifacts", "cache folder for every expensive stage", path=True)
    progress: bool = _p(True, "show progress bars on long work")


@dataclass
class World:
    """The embedded, procedurally generated world (see lsda_core.world)."""

    seed: int = _p(0, "seed of the world: categories, scenes, every pixel", lo=0, hi=SEED_MAX)
    n_categories: int = _p(200, "categories in the world (all appear in the classification view)", lo=4, hi=5000)
    n_superclasses: int = _p(20, "superclasses; categories of one superclass share a body template", lo=1, hi=500)
    cls_size: int = _p(64, "side of the square object-centric classification images (px)", lo=16, hi=1024)
    cls_train_per_class: int = _p(40, "classification training images per category", lo=1)
    cls_val_per_class: int = _p(10, "classification validation images per category", lo=1)
    det_width: int = _p(160, "width of detection scene images (px)", lo=32, hi=4096)
    det_height: int = _p(120, "height of detection scene images (px)", lo=32, hi=4096)
    objects_min: int = _p(1, "fewest labelled objects drawn per detection scene (hidden ones are removed)", lo=1, hi=50)
    objects_max: int = _p(4, "most labelled objects per detection scene (object-centric train scenes: one fewer)", lo=1, hi=50)
    distractors_max: int = _p(3, "most distractor shapes (no category) per scene", lo=0, hi=50)
    occluders_max: int = _p(2, "most plain occluders per scene", lo=0, hi=50)
    voc_classes: int = _p(20, "categories of the VOC-like detection benchmark", lo=2)
    voc_train: int = _p(300, "VOC-like train images", lo=1)
    voc_val: int = _p(300, "VOC-like val images", lo=1)
    voc_test: int = _p(400, "VOC-like test images", lo=1)
    ilsvrc_classes: int = _p(60, "categories of the ILSVRC-DET-like benchmark (first half alphabetically has boxes)", lo=2)
    ilsvrc_train: int = _p(600, "ILSVRC-like detection train images, centred on set-B categories (boxes for B only)", lo=1)
    ilsvrc_val: int = _p(600, "ILSVRC-like val images, boxes for all categories (halved into val1 / val2)", lo=2)
    large_box_fraction: float = _p(0.1, "share of all categories with boxes in the large-scale view", lo=0.0, hi=1.0)
    large_train: int = _p(200, "large-scale view train scenes (boxes for the box categories only)", lo=1)
    large_test: int = _p(200, "large-scale view test scenes (boxes for all categories)", lo=1)


@dataclass
class Data:
    """Which data the chapters use: the embedded world or real datasets by path."""

    source: str = _p("embedded", "embedded, or real: voc2007 / ilsvrc2013", choices=("embedded", "voc2007", "ilsvrc2013"))
    voc_root: str | None = _p(None, "real PASCAL VOC root (the folder holding Annotations/, JPEGImages/)", path=True)
    ilsvrc_root: str | None = _p(None, "real ILSVRC2013 DET root (ILSVRC2013_DET_* folders and devkit/)", path=True)
    imagenet_root: str | None = _p(None, "ImageNet-style classification root (one folder per class)", path=True)
    imagenet_weights: str | None = _p(None, "ImageNet AlexNet weights on disk (torchvision cache file)", path=True)


@dataclass
class Proposals:
    """Selective search (OpenCV contrib), as R-CNN used it."""

    mode: str = _p("fast", "selective search strategy (R-CNN: fast)", choices=("fast", "quality"))
    max_boxes: int = _p(2000, "most proposals kept per image (R-CNN: about 2000)", lo=1)
    min_side: float = _p(2.0, "drop proposals thinner than this, in px of the searched image (R-CNN: 20 at 500 px)",
                         lo=0.0)
    base_k: int = _p(150, "Felzenszwalb-Huttenlocher k of the first segmentation, the next adding as much (fast mode: "
                          "k and 2k; OpenCV's default 150; R-CNN's fast mode 50, i.e. k = 50, 100)", lo=1)
    width: int = _p(0, "search an image resized to this width, boxes scaled back (0: as it is; R-CNN's "
                       "selective_search_boxes: 500)", lo=0, hi=4096)


@dataclass
class Net:
    """The CaffeNet-shaped network: conv1-5, pool5 on a 6 x 6 grid, fc6, fc7, output.
    Defaults: the embedded size; params/paper_*.yaml set CaffeNet's (227 px, 4096-wide fc)."""

    input_size: int = _p(64, "side of the square network input; warped regions have this size (paper 227)", lo=16, hi=512)
    conv_channels: list[int] = _p([16, 32, 48, 48, 32], "output channels of conv1-5 (CaffeNet 96, 256, 384, 384, 256)",
                                   lo=1, hi=8192)
    conv1_kernel: int = _p(8, "conv1 kernel (CaffeNet 11)", lo=1, hi=15)
    conv1_stride: int = _p(2, "conv1 stride (CaffeNet 4)", lo=1, hi=8)
    conv1_pad: int = _p(1, "conv1 padding (CaffeNet 0)", lo=0, hi=8)
    pool1: bool = _p(False, "max-pool 3/2 after conv1 (CaffeNet: yes)")
    conv2_kernel: int = _p(3, "conv2 kernel (CaffeNet 5)", lo=1, hi=7)
    groups: bool = _p(False, "CaffeNet's two-group conv2, conv4, conv5")
    lrn: bool = _p(False, "local response normalisation after conv1 and conv2 (CaffeNet: yes)")
    batch_norm: bool = _p(True, "batch normalisation after conv1-5 (CaffeNet: no; lets a small net train from scratch in minutes)")
    fc_width: int = _p(256, "width of fc6 and fc7 (CaffeNet 4096)", lo=8)
    dropout: float = _p(0.25, "dropout on fc6 and fc7 during training (CaffeNet 0.5)", lo=0.0, hi=0.95)
    context: int = _p(16, "context padding of warped regions, in pixels of a 227 px frame (scaled to input_size)", lo=0, hi=64)
    precision: str = _p("auto", "arithmetic of the conv and fc layers on the CPU: bfloat16 (autocast: weights, batch norm "
                              "and the returned features stay float32), float32, or auto (bfloat16 where the CPU "
                              "multiplies it natively, else float32); CUDA keeps its own path",
                        choices=PRECISIONS)


@dataclass
class Pretrain:
    """Supervised pre-training on the classification view (image-level labels only)."""

    epochs: int = _p(24, "passes over the classification training images (CaffeNet 90)", lo=1)
    batch_size: int = _p(128, "images per SGD step", lo=1)
    lr: float = _p(0.02, "base learning rate, biases 2x (CaffeNet 0.01)", lo=0.0)
    lr_steps: list[int] = _p([16, 21], "epochs after which the learning rate is divided by 10 (CaffeNet 20, 40, 60)",
                              lo=0)
    momentum: float = _p(0.9, "SGD momentum", lo=0.0, hi=1.0)
    weight_decay: float = _p(5e-4, "L2 weight decay", lo=0.0)
    seed: int = _p(0, "seed of pre-training and of LSDA's classification re-training: fixed while runtime.seed "
                      "varies what is trained on top (fine-tuning, SVMs) over the training seeds", lo=0, hi=SEED_MAX)


@dataclass
class Finetune:
    """Fine-tuning on warped proposals (R-CNN's window-data layer)."""

    iterations: int = _p(1000, "SGD steps of fg_per_batch + bg_per_batch windows (R-CNN 70000)", lo=0)
    fg_per_batch: int = _p(32, "foreground windows per batch (R-CNN 32)", lo=1)
    bg_per_batch: int = _p(96, "background windows per batch (R-CNN 96)", lo=0)
    fg_iou: float = _p(0.5, "IoU with a ground-truth box to count as foreground", lo=0.0, hi=1.0)
    lr: float = _p(0.002, "base learning rate, a tenth of pre-training's as in R-CNN (0.001); biases 2x, new output layer 10x", lo=0.0)
    lr_step: int = _p(600, "the learning rate is divided by 10 every this many steps (R-CNN 20000)", lo=1)
    momentum: float = _p(0.9, "SGD momentum", lo=0.0, hi=1.0)
    weight_decay: float = _p(5e-4, "L2 weight decay", lo=0.0)
    mirror: bool = _p(True, "horizontal mirror with probability 0.5")


@dataclass
class SVM:
    """One linear SVM per class with hard-negative mining (liblinear's settings in R-CNN)."""

    C: float = _p(1e-3, "regularisation constant C", lo=0.0)
    pos_weight: float = _p(2.0, "weight of positive examples", lo=0.0)
    bias: float = _p(10.0, "bias feature value (intercept scaling)", lo=0.0)
    neg_iou: float = _p(0.3, "negatives: proposals with IoU below this with every instance of the class", lo=0.0, hi=1.0)
    feature_norm: float = _p(20.0, "features scaled so their mean L2 norm is this", lo=0.0)
    hard_thresh: float = _p(-1.0001, "hard negatives: those scoring above this are added", hi=0.0)
    evict_thresh: float = _p(-1.2, "easy negatives scoring below this are evicted after each retrain", hi=0.0)
    retrain_every: int = _p(2000, "retrain after this many new hard negatives", lo=1)


@dataclass
class Detect:
    """Scoring proposals into detections."""

    nms: float = _p(0.3, "per-class NMS: suppress boxes with IoU above this with a kept box", lo=0.0, hi=1.0)
    max_per_image: int = _p(100, "most boxes kept per class and image before NMS", lo=1)
    bbox_reg_iou: float = _p(0.6, "box regression trains on proposals with IoU above this", lo=0.0, hi=1.0)
    bbox_reg_lambda: float = _p(1000.0, "ridge regularisation of box regression", lo=0.0)


@dataclass
class Hog:
    """The HOG + linear SVM detector on the same proposals: the study's stand-in for R-CNN's
    DPM HOG baseline (lsda_core.detection.hog; trained like the CNN SVMs)."""

    window: int = _p(64, "side of the square window each proposal is warped to for HOG (px)", lo=16, hi=512)
    context: int = _p(16, "context padding of the warp, in pixels of a 227 px frame (scaled to window)", lo=0, hi=64)
    cell: int = _p(8, "HOG cell side (px)", lo=2, hi=64)
    block: int = _p(2, "HOG block side in cells (L2-Hys normalised, stride one cell)", lo=1, hi=8)
    orientations: int = _p(9, "unsigned orientation bins over 0-180 degrees", lo=2, hi=36)
    interpolation: str = _p("trilinear", "votes: trilinear (Dalal-Triggs), orientation only, or none (scikit-image's hard binning)",
                            choices=("trilinear", "orientation", "none"))


@dataclass
class Rcnn:
    """The R-CNN chapter's experiments."""

    neg_iou_grid: list[float] = _p([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "SVM negative-IoU thresholds to compare (the paper's grid)",
                                 lo=0.0, hi=1.0)
    bootstrap: int = _p(100, "bootstrap resamples of the test images for the spread of mAP", lo=2)
    timing_images: int = _p(10, "test images timed for seconds per image", lo=1)
    seeds: list[int] = _p([0, 1, 2], "training seeds of Table 2 and the colour ablation: fine-tuning and SVMs are "
                                     "retrained with each (pre-training fixed by pretrain.seed); the findings' "
                                     "intervals cross them with the test images", lo=0, hi=SEED_MAX)


@dataclass
class Lsda:
    """The LSDA chapters' experiments (lsda_core.experiments.lsda): the classification network, which
    layers adapt on set B's boxes, the transfer to set A, the seeds and the large-scale view."""

    cls_epochs: int = _p(6, "epochs re-training the classification network's new K-way output layer (and the rest) "
                            "on the benchmark categories' classification images", lo=0)
    cls_lr: float = _p(0.002, "base learning rate of that re-training (new output layer 10x)", lo=0.0)
    train_per_class: int = _p(1000, "most ILSVRC train images per set-B category added to val1 for detection "
                                    "fine-tuning (the paper: 1000)", lo=0)
    knn: list[int] = _p([5, 10, 0], "k of the category-specific transfer rows (nearest B categories; 0 means |B|, "
                                    "the plain average; the paper: 5, 10, 100)", lo=0)
    k: int = _p(10, "k of the full LSDA model in Figure 3, the seeds and the large-scale detector (paper 10; 0: |B|)",
                lo=0)
    seeds: list[int] = _p([0, 1, 2], "training seeds of the detection fine-tuning (every layer adapted, then the "
                                     "transfer): the findings' intervals on those rows cross them with the test "
                                     "images; the classification network is fixed", lo=0, hi=SEED_MAX)
    large_row: str = _p("fcbgrnd,layers1-7,fcB", "Table 1 row whose layers the large-scale detector adapts (the paper: "
                                                "all, layers1-7)", choices=("fcbgrnd", "fcbgrnd,fc6", "fcbgrnd,fc7",
                                                                            "fcbgrnd,fcB", "fcbgrnd,fc6,fc7",
                                                                            "fcbgrnd,fc6,fc7,fcB",
                                                                            "fcbgrnd,layers1-7,fcB"))
    large_nms: float = _p(0.1, "large-scale demo: per-class NMS threshold (LSDA: 0.1)", lo=0.0, hi=1.0)
    large_cross_nms: float = _p(0.4, "large-scale demo: NMS across classes afterwards (LSDA: 0.4)", lo=0.0, hi=1.0)
    large_images: int = _p(8, "test images drawn in the large-scale figure", lo=1)
    large_top: int = _p(3, "detections drawn per image in the large-scale figure", lo=1)


@dataclass
class Analysis:
    """Hoiem et al.'s diagnosis of detections (lsda_core.evaluation.hoiem)."""

    trend_fps: list[int] = _p([25, 50, 100, 200, 400, 800, 1600, 3200],
                              "numbers of top false positives at which the FP-type shares are shown (Hoiem, R-CNN Fig. 4)",
                              lo=1)
    norm_fraction: float = _p(0.15, "normalised AP: every class counts as having this fraction of the images as positives",
                              lo=0.0, hi=10.0)
    weak_iou: float = _p(0.1, "IoU at which a false positive counts as touching an object (Loc / Sim / Oth)", lo=0.0, hi=0.5)
    part_visible: float = _p(0.5, "a part counts as visible when at least this fraction of it is visible", lo=0.0, hi=1.0)


@dataclass
class Units:
    """pool5 unit visualisation (R-CNN Figures 3 and 6): which units, how many top regions."""

    top: int = _p(16, "top regions shown per unit in the unit rows (R-CNN Figure 3: 16)", lo=1)
    montage_top: int = _p(96, "top regions in the one-unit montage (R-CNN Figure 6: 96)", lo=1)
    nms: float = _p(0.1, "NMS within each image on the unit's activation (R-CNN: 0.1)", lo=0.0, hi=1.0)
    units: list[list[int]] = _p([], "explicit units as [y, x, channel] of the 6 x 6 pool5 map; "
                                    "empty: chosen from a category's pool5 SVM", lo=0)
    category: str | None = _p(None, "category whose pool5 SVM weights pick units (null: the first class)")
    positive: int = _p(2, "units with the category SVM's largest positive weights", lo=0, hi=64)
    negative: int = _p(1, "units with the category SVM's most negative weights", lo=0, hi=64)
    generic: int = _p(3, "generic units: the largest weight averaged over every category's SVM, one per channel",
                       lo=0, hi=64)


@dataclass
class Fast:
    """The fast detector (lsda_core.detection.spp): one convolutional pass per image and spatial pyramid
    pooling over each proposal (SPP-net), instead of warping each proposal."""

    bins: list[int] = _p([6, 3, 2, 1], "pyramid levels, b x b max-pooling bins each (SPP-net 6, 3, 2, 1); "
                                       "must include 6, the level initialised from pool5's fc6", lo=1, hi=64)
    scale: int = _p(176, "shorter image side of the one conv pass (px); 176 shows the embedded world's median "
                         "proposal at the size warping gives it (SPP-net single-scale: 688)", lo=16, hi=4096)


@dataclass
class Bench:
    """`lsda bench` (lsda_core.perf.bench): how much of each stage the reduced mode (the one the
    book runs) times; `lsda bench --full` times every stage at full size instead."""

    images: int = _p(2, "test images timed per stage: proposals, warped features, the warping and fast detectors",
                     lo=1)
    regions: int = _p(64, "reduced mode on the CPU: regions of the first image through the paper-size network "
                          "(warped features and the warping detector), extrapolated linearly to the paper preset's "
                          "proposals.max_boxes (R-CNN: 2000; the fast detector, --full and CUDA: that many)", lo=1)
    classes_reduced: int = _p(1000, "reduced mode: classes N of the 2000 x 4096 by 4096 x N scoring product, "
                                    "extrapolated linearly to R-CNN's 100k (--full: 100k)", lo=1)
    svm_images: int = _p(10, "reduced mode: synthetic training images of the SVM timing "
                             "(--full: world.voc_train + world.voc_val, the R-CNN chapter's trainval)", lo=1)
    repeats: int = _p(3, "each time is the fastest of this many runs", lo=1, hi=100)
    paper_params: str = _p("params/paper_voc2007.yaml", "preset whose net, fast and proposals sections are the "
                                                        "paper size (relative paths: to the project root)", path=True)


COLOUR_SPACES = {"rgb", "hsv", "lab"}  # the mask proposals' grouping strategies (`detection.mask_proposals`)


@dataclass
class Segmentation:
    """R-CNN's semantic segmentation (section 5): mask proposals, full / fg region features,
    one SVR per class, pasting, VOC segmentation accuracy."""

    root: str | None = _p(None, "VOC segmentation root (VOC 2011/2012: SegmentationClass/, SegmentationObject/, "
                                "ImageSets/Segmentation/); none: the embedded world's VOC view", path=True)
    train_split: str = _p("train", "split the SVRs and the background threshold are trained on (R-CNN: VOC 2011 train)")
    eval_split: str = _p("val", "split of Table 3 (R-CNN: VOC 2011 val)")
    test_split: str | None = _p("test", "split Table 4's row (full+fg fc6) is evaluated on once (R-CNN: VOC 2011 test); "
                                        "none: Table 4 is not run")
    max_masks: int = _p(150, "mask proposals kept per image (O2P's CPMC: about 150)", lo=1)
    ranking: str = _p("learned", "which masks an image keeps: learned (CPMC's way: a regressor of object overlap "
                                 "trained on the train split ranks the pool) or hierarchy (selective search's "
                                 "seeded level order)", choices=("learned", "hierarchy"))
    pool: int = _p(1000, "masks of the hierarchy the learned ranking chooses from, per image", lo=1)
    scales: list[int] = _p([50, 100, 200], "Felzenszwalb k of each grouping strategy, one per colour space", lo=1)
    colour_spaces: list[str] = _p(["rgb", "hsv"], "colour spaces of the grouping strategies (rgb, hsv, lab)")
    min_size: float = _p(1.0, "smallest Felzenszwalb segment, as a multiple of its k (selective search: 1)", lo=0.0)
    svr_c: float = _p(10.0, "the SVRs' C (features scaled to mean norm 1 on the training regions)", lo=1e-6)
    finetuned: bool = _p(True, "also the fine-tuned network's fc6 full+fg (the paper expects fine-tuning to help)")


@dataclass
class Params:
    """Every parameter of the study, by section."""

    runtime: Runtime = field(default_factory=Runtime)
    world: World = field(default_factory=World)
    data: Data = field(default_factory=Data)
    proposals: Proposals = field(default_factory=Proposals)
    net: Net = field(default_factory=Net)
    pretrain: Pretrain = field(default_factory=Pretrain)
    finetune: Finetune = field(default_factory=Finetune)
    svm: SVM = field(default_factory=SVM)
    detect: Detect = field(default_factory=Detect)
    hog: Hog = field(default_factory=Hog)
    rcnn: Rcnn = field(default_factory=Rcnn)
    lsda: Lsda = field(default_factory=Lsda)
    fast: Fast = field(default_factory=Fast)
    units: Units = field(default_factory=Units)
    analysis: Analysis = field(default_factory=Analysis)
    bench: Bench = field(default_factory=Bench)
    segmentation: Segmentation = field(default_factory=Segmentation)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready)."""
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Stable hash of the named sections (all when none): a cache-key ingredient."""
        d = self.to_dict()
        picked = {s: d[s] for s in (sections or tuple(d))}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# loading and validation

@dataclass(frozen=True)
class Field:
    """One key of the schema described for a reader: the `lsda params --schema` line and a row
    of the book's parameter reference."""

    section: str
    key: str
    type: str
    default: Any
    allowed: str  # "one of [...]", "in [lo, hi]", ">= lo" (each, for lists); "" when any value of the type
    help: str
    path: bool = False  # a file or folder of the machine that runs (not part of any result)


def _fields(section: str, cls: type) -> list[Field]:
    """The keys of one section (a dataclass of the schema), in schema order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        m, tp = f.metadata, hints[f.name]
        allowed = ""
        if m.get("choices"):
            allowed = f"one of {list(m['choices'])}"
        elif m.get("lo") is not None or m.get("hi") is not None:
            allowed = f"{'each ' if typing.get_origin(tp) is list else ''}{_range_rule(m)}"
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append(Field(section, f.name, _type_name(tp), default, allowed, m.get("help", ""),
                         bool(m.get("path"))))
    return out


def _describe(cls: type) -> str:
    """One line per key of a section: name, type, default and help (used in errors)."""
    return "\n".join(f"  {f.key} ({f.type}{', ' + f.allowed if f.allowed else ''}, default {f.default!r}): {f.help}"
                     for f in _fields("", cls))


def _range_rule(m: Any) -> str:
    """A field's valid range in words: 'in [lo, hi]', '>= lo' or '<= hi'."""
    lo, hi = m.get("lo"), m.get("hi")
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _show(value: Any, width: int = 60) -> str:
    """A value's repr for an error message, shortened to `width` characters."""
    r = repr(value)
    return r if len(r) <= width else r[:width - 3] + "..."


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp`; ints are accepted where floats are expected."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ParamsError:
                pass
        raise ParamsError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")
    if tp is type(None):
        if value is None:
            return None
    elif typing.get_origin(tp) is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
            if not math.isfinite(number):
                raise ParamsError(f"{where}: {_show(value)} is not a finite number", key=where)
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ParamsError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")


def _check_range(value: Any, m: Any, key: str) -> None:
    """A number (or every number of a list, at any depth) against the field's `lo` / `hi`."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(v, m, f"{key}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if m.get("lo") is not None and value < m["lo"] or m.get("hi") is not None and value > m["hi"]:
            raise ParamsError(f"{key}: {_show(value)} is out of range (must be {_range_rule(m)})")


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, validating every key and value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(data, dict):
        if not where:
            raise ParamsError(f"expected a mapping of sections at the top level, got {_show(data)}")
        first = next(iter(fields))
        raise ParamsError(f"{where}: is a section, not a value (got {_show(data)}); set one of its keys, e.g. "
                          f"{where}.{first} (keys: {', '.join(fields)})", key=where)
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        valid = ", ".join(fields)
        raise ParamsError(f"{where or 'top level'}: unknown key {unknown[0]!r} (valid: {valid}; "
                          f"'lsda params --schema' explains each)",
                          key=f"{where}.{unknown[0]}" if where else str(unknown[0]))
    kwargs = {}
    for name, value in data.items():
        f, tp, key = fields[name], hints[name], f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        try:
            value = _coerce(value, tp, key)
            m = f.metadata
            if m.get("choices") and value not in m["choices"]:
                raise ParamsError(f"{key}: {_show(value)} is not one of {list(m['choices'])}")
            _check_range(value, m, key)
            if m.get("path") and isinstance(value, str):
                if not value.strip():
                    raise ParamsError(f"{key}: an empty path names no file or folder"
                                      + (" (null: none)" if type(None) in typing.get_args(tp) else ""))
                value = os.path.expanduser(os.path.expandvars(value))
        except ParamsError as e:
            raise ParamsError(str(e), key=key) from None
        kwargs[name] = value
    return cls(**kwargs)


def check_world(w: World) -> None:
    """The world's cross-field rules (a `World` built directly, not loaded, is checked here too)."""
    if w.objects_min > w.objects_max:
        raise ParamsError(f"world.objects_min ({w.objects_min}) exceeds world.objects_max ({w.objects_max})")
    for key in ("voc_classes", "ilsvrc_classes", "n_superclasses"):
        if getattr(w, key) > w.n_categories:
            raise ParamsError(f"world.{key} ({getattr(w, key)}) exceeds world.n_categories ({w.n_categories})")


def _check(p: Params) -> None:
    """Cross-field rules that a single field's range cannot say."""
    check_world(p.world)
    spaces = p.segmentation.colour_spaces
    if not spaces or set(spaces) - COLOUR_SPACES or len(set(spaces)) != len(spaces):
        raise ParamsError(f"segmentation.colour_spaces: need distinct names of {', '.join(sorted(COLOUR_SPACES))}, "
                          f"got {spaces}", key="segmentation.colour_spaces")
    bins = p.fast.bins
    if 6 not in bins or min(bins) < 1 or len(set(bins)) != len(bins):
        raise ParamsError(f"fast.bins: need distinct positive bin counts including 6 (pool5's grid), got {bins}")
    dev = p.runtime.device
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ParamsError(f"runtime.device: {dev!r} is not auto, cpu, cuda or cuda:N", key="runtime.device")
    ch = p.net.conv_channels
    if len(ch) != 5:
        raise ParamsError(f"net.conv_channels: need 5 channel counts (conv1-5), got {ch}", key="net.conv_channels")
    for i, u in enumerate(p.units.units):
        if len(u) != 3 or u[0] > 5 or u[1] > 5 or u[2] >= ch[-1]:
            raise ParamsError(f"units.units[{i}]: {u} is not a pool5 unit [y, x, channel] (y, x in 0-5, channel in "
                              f"0-{ch[-1] - 1}: net.conv_channels[4] is {ch[-1]})", key="units.units")


def _merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into a copy of `base` (mappings merge, anything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a preset, resolving its `base:` chain (a file name relative to the preset's folder)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ParamsError(f"{path}: circular 'base:' chain ({' -> '.join(str(s) for s in _seen + (path,))})")
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, not a parameter file (a YAML preset such as params/embedded.yaml)")
    if not path.is_file():
        raise ParamsError(f"{path}: parameter file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not a text file (byte {e.start} is not UTF-8), so not a parameter file") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read the parameter file ({e.strerror or e})") from None
    try:
        data = yamltext.load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({yamltext.problem(e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ParamsError(f"{path}: base: expected the file name of another preset (relative to this file's "
                              f"folder), got {base!r}")
        target = (path.parent / base).resolve()
        if target.is_dir():
            raise ParamsError(f"{path}: base: {base!r} is a folder ({target}), not a parameter file")
        if not target.is_file():
            raise ParamsError(f"{path}: base: {base!r} not found ({target})")
        data = _merge(read_yaml(target, _seen + (path,)), data)
    return data


def parse_overrides(pairs: list[tuple[str, str]] | dict[str, Any] | None) -> dict[str, Any]:
    """The one parser of overrides: {dotted key: value}, in the order given.

    `pairs` is either `(dotted key, text)` pairs as the command line gives them
    (`-p world.seed 3`): each text is parsed as YAML here, exactly once (`'007'` stays the
    string 007, `007` is the number 7, an empty text is the empty string); or a
    {dotted key: value} dict of values already parsed (a notebook's `overrides`, which the
    CLI fills from this function): those values are taken as they are, never parsed again.
    A key given twice keeps its last value. Keys are checked for their form here and
    against the schema by `load`.
    """
    if not pairs:
        return {}
    from_text = not isinstance(pairs, dict)
    out: dict[str, Any] = {}
    for key, value in (pairs.items() if isinstance(pairs, dict) else pairs):
        if not isinstance(key, str) or not all(part.strip() for part in key.split(".")):
            raise ParamsError(f"overrides: {key!r} is not a parameter key (section.key, e.g. svm.C)")
        if from_text and isinstance(value, str) and value.strip():
            try:
                value = yamltext.load(value)
            except yaml.YAMLError as e:
                raise ParamsError(f"overrides: {key}: {_show(value)} is not a valid YAML value ({yamltext.problem(e)}); "
                                  "a string with YAML's special characters needs quotes, e.g. \"'a: b'\"",
                                  key=key) from None
        out.pop(key, None)
        out[key] = value
    return out


def _nest(flat: dict[str, Any]) -> dict:
    """{dotted key: value} as nested mappings; a later key wins over an earlier one it overlaps."""
    nested: dict = {}
    for key, value in flat.items():
        for part in reversed(key.split(".")):
            value = {part: value}
        nested = _merge(nested, value)
    return nested


def _overlaps(key: str, other: str) -> bool:
    """Whether two dotted keys name the same parameter, or one holds the other."""
    key = key.split("[")[0]
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def load(path: str | Path | None = None, overrides: list[tuple[str, str]] | dict | None = None) -> Params:
    """Load and validate a preset (None: the schema defaults) with dotted overrides on top
    (see `parse_overrides`). An error names its source: the preset's path, or `overrides`
    when an override set the key at fault."""
    data = read_yaml(path) if path is not None else {}
    over = parse_overrides(overrides)
    data = _merge(data, _nest(over))
    where = str(path) if path is not None else "params"
    try:
        p = _build(Params, data, "")
        _check(p)
    except ParamsError as e:
        if e.key is not None and any(_overlaps(e.key, k) for k in over):
            where = "overrides"
        raise ParamsError(f"{where}: {e}", key=e.key) from None
    return p


def schema_sections() -> dict[str, str]:
    """Each section of the schema with its docstring (what the section is for), in schema order."""
    hints = typing.get_type_hints(Params)
    return {f.name: " ".join((hints[f.name].__doc__ or "").split()) for f in dataclasses.fields(Params)}


def schema_fields() -> list[Field]:
    """Every key of the schema, section by section in schema order: for `lsda params --schema`
    and the book's parameter reference (one source for both)."""
    hints = typing.get_type_hints(Params)
    return [row for f in dataclasses.fields(Params) for row in _fields(f.name, hints[f.name])]


def schema_help() -> str:
    """Every section and key with type, default and help, for `lsda params`."""
    out = []
    for f in dataclasses.fields(Params):
        out.append(f"{f.name}:")
        out.append(_describe(typing.get_type_hints(Params)[f.name]))
    return "\n".join(out)
