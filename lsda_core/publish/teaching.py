"""Teaching figures: how R-CNN and LSDA work, drawn from the chapters' own objects (R-CNN's
Figures 1 and 2, LSDA's Figures 1, 2 and 5a), and the neighbours LSDA's transfer picks.

Every step is computed by the library function the chapter uses (warping, pool5, fc7, the SVMs,
NMS, fine-tuning's window lists and sampling, the transfer's neighbours, Hoiem's types); this
module only chooses what to show and draws it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib.patches
from matplotlib.transforms import Bbox
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from IPython.display import Markdown

from lsda_core.core import boxes as B
from lsda_core.core.params import Params
from lsda_core.core.structures import DetectionDataset, ImageAnn
from lsda_core.data.images import load_image
from lsda_core.detection import features as F
from lsda_core.detection import svm as S
from lsda_core.detection.detect import detect_image
from lsda_core.detection.pipeline import Benchmark, DetectorResult, train_svm_detector
from lsda_core.evaluation import hoiem as An
from lsda_core.experiments import lsda as L
from lsda_core.experiments import rcnn as R
from lsda_core.models import finetune as FT
from lsda_core.models.nets import CaffeNet
from lsda_core.publish import plots, tables, viz
from lsda_core.store.cache import Cache

# a detection matching the ground truth, a wrong one, the ground truth (as in the chapters' examples)
RIGHT, WRONG, TRUTH = viz.PALETTE[2], viz.PALETTE[3], viz.PALETTE[5]
GREY = "#888888"
WINDOW_COLORS = [viz.PALETTE[k] for k in (4, 1, 6, 7)]  # windows followed through the pipeline figure
WIDTH = 7.2  # inches: the book's text column (`viz.figure` holds every figure to it)
FP_COLORS = {t: viz.PALETTE[k] for k, t in enumerate(An.FP_TYPES)}  # as in the chapters' trend plots


def display_warps(pixels: np.ndarray, boxes: np.ndarray, p: Params, fill: Sequence[float]) -> np.ndarray:
    """(N, S, S, 3) uint8: the regions as the network sees them (`boxes.warp_regions`: context
    padding, anisotropic warp), the part outside the image in `fill` (the network's mean, RGB)."""
    shift = torch.tensor(list(fill), dtype=torch.float32).reshape(3, 1, 1)
    img = torch.tensor(pixels).permute(2, 0, 1).float() - shift
    warped = B.warp_regions(img, torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4), p.net.input_size,
                            FT.context_pixels(p)) + shift
    return warped.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def mean_colour(model: CaffeNet) -> tuple[float, ...]:
    """The network's input mean (RGB, 0..255): what it sees outside an image."""
    return tuple(model.mean.flatten().tolist())


def best_iou(box: np.ndarray, gt: np.ndarray) -> float:
    """The largest IoU of `box` with any of the boxes `gt` (0 when there are none)."""
    if not len(gt):
        return 0.0
    return float(B.box_iou(torch.as_tensor(np.asarray(box, np.float64)[None]), torch.as_tensor(gt)).max())


def _frame(ax: Any, color: str) -> None:
    """An image axis with a coloured frame and no ticks."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(True)
        side.set_edgecolor(color)
        side.set_linewidth(2)


def sentence(text: str) -> str:
    """`text` as a sentence: first letter upper-case, a full stop; empty stays empty."""
    return f"{text[0].upper()}{text[1:]}." if text else ""


ARROWS = {"right": "\u2192", "left": "\u2190", "down": "\u2193"}


def arrow(fig: plt.Figure, a: Any, b: Any, direction: str) -> None:
    """An arrow in the gap from panel `a` to panel `b` (an axis or a list of axes taken
    together; "right", "left" or "down"), centred across the gap and on the panels' shared extent."""
    pa, pb = (Bbox.union([x.get_position() for x in (v if isinstance(v, list) else [v])]) for v in (a, b))
    if direction == "down":
        x, y = (max(pa.x0, pb.x0) + min(pa.x1, pb.x1)) / 2, (pa.y0 + pb.y1) / 2
    else:
        lo, hi = (pa, pb) if direction == "right" else (pb, pa)
        x, y = (lo.x1 + hi.x0) / 2, (max(pa.y0, pb.y0) + min(pa.y1, pb.y1)) / 2
    fig.text(x, y, ARROWS[direction], fontsize=16, ha="center", va="center", color="#444444")


# ---------------------------------------------------------------------------------------
# R-CNN Figure 1: the pipeline on one test image

PIPELINE_ROW, PIPELINE_LAYER = "FT fc7", "fc7"  # the Table 2 detector shown, and its layer


@dataclass
class PipelineSteps:
    """R-CNN on one test image, step by step: its proposals, the windows shown (indices into
    the proposals) as the network saw them, their features, every proposal's SVM scores and
    the detections left after per-class NMS (class index, score, box; best first)."""

    image: ImageAnn
    pixels: np.ndarray
    classes: list[str]
    proposals: np.ndarray
    shown: np.ndarray
    crops: np.ndarray
    features: np.ndarray
    scores: np.ndarray
    detections: list[tuple[int, float, np.ndarray]]
    layer: str
    context: int


def pipeline_image(test: DetectionDataset, result: DetectorResult) -> ImageAnn:
    """The test image holding the detector's highest-scoring right detection (IoU >= 0.5 with an
    object of its class), so the example ends in a success; the first image when there is none."""
    by_id = test.by_id()
    ranked = sorted(((float(s), c, i, k) for c, d in result.detections.items()
                     for k, (i, s) in enumerate(zip(d.image_ids, d.scores))), key=lambda t: -t[0])
    for _, c, image_id, k in ranked:
        if best_iou(result.detections[c].boxes[k], by_id[image_id].boxes(c)) >= 0.5:
            return by_id[image_id]
    return test.images[0]


def pipeline_steps(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: R.Table2,
                   windows: int = 4) -> PipelineSteps:
    """R-CNN's test pipeline (the FT fc7 detector of Table 2) run on one test image
    (`pipeline_image`): every proposal warped and through the fine-tuned network (pool5 stored
    as float16, as the chapter's cache stores it), scored by Table 2's SVMs (cached), per-class
    NMS. Shown: the windows behind the best detections and the proposal scoring lowest."""
    model, fs = nets["finetuned"], t2.features[PIPELINE_ROW]
    im = pipeline_image(bench.test, t2.results[PIPELINE_ROW])
    pixels = load_image(im.path)
    props = np.asarray(bench.proposals[im.image_id], np.float32).reshape(-1, 4)
    with torch.inference_mode():
        pool5 = F.pool5_of_regions(model, pixels, props, p.net.input_size, FT.context_pixels(p))
        feats = F.fc_features(model, pool5.flatten(1).to(torch.float16), PIPELINE_LAYER)
    svm = train_svm_detector(p, cache, fs, bench)
    scores = S.score(feats, svm["W"], svm["b"])
    cls, sc, bx = detect_image(props, scores, p.detect.nms, p.detect.max_per_image)
    order = np.argsort(-sc, kind="stable")
    dets = [(int(cls[i]), float(sc[i]), bx[i]) for i in order]
    behind = [int(np.argmin(np.abs(props - box).sum(axis=1))) for _, _, box in dets]
    shown = list(dict.fromkeys(behind))[:max(windows - 1, 1)]
    lowest = int(np.argmin(scores.max(axis=1))) if len(props) else 0
    shown = np.array(shown + ([lowest] if lowest not in shown else []), dtype=np.int64)
    crops = display_warps(pixels, props[shown], p, mean_colour(model))
    return PipelineSteps(im, pixels, list(bench.classes), props, shown, crops, feats[shown], scores, dets,
                         PIPELINE_LAYER, FT.context_pixels(p))


def pipeline_figure(steps: PipelineSteps, top: int = 3) -> viz.Captioned:
    """R-CNN Figure 1's counterpart, read top left to bottom left: input and proposals -> warped
    windows -> features, then SVM scores -> the `top` detections after NMS (right ones green,
    wrong ones vermillion, ground truth dashed)."""
    n = len(steps.shown)
    colors = [WINDOW_COLORS[k % len(WINDOW_COLORS)] for k in range(n)]
    viz.style()
    fig = plt.figure(figsize=(WIDTH, 5.6))
    outer = fig.add_gridspec(2, 1, hspace=0.55)
    upper = outer[0].subgridspec(n, 3, width_ratios=[3, 0.75, 3], wspace=0.3, hspace=0.1)
    lower = outer[1].subgridspec(1, 2, width_ratios=[3, 3.2], wspace=0.3)
    ax = fig.add_subplot(upper[:, 0])
    viz.draw_boxes(ax, steps.pixels, steps.proposals, [""] * len(steps.proposals),
                   ["#ffffff"] * len(steps.proposals))
    for patch in ax.patches:
        patch.set_linewidth(0.4)
        patch.set_alpha(0.5)
    for k, (i, color) in enumerate(zip(steps.shown, colors)):
        x1, y1, x2, y2 = (float(v) for v in steps.proposals[i])
        ax.add_patch(matplotlib.patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                                  edgecolor=color, linewidth=1.8))
        ax.text(x1, y1, str(k + 1), color="white", fontsize=7, va="top",
                bbox={"facecolor": color, "pad": 1, "linewidth": 0})
    ax.set_title(f"1. input: {len(steps.proposals)} proposals", loc="left")
    first = ax
    crops = []
    for k, color in enumerate(colors):
        a = fig.add_subplot(upper[k, 1])
        a.imshow(steps.crops[k], interpolation="nearest")
        _frame(a, color)
        a.set_ylabel(str(k + 1), rotation=0, labelpad=6, va="center")
        crops.append(a)
    crops[0].set_title("2. warped", loc="left")
    feats = fig.add_subplot(upper[:, 2])
    sns.heatmap(steps.features, ax=feats, cmap="viridis", cbar=False, xticklabels=False,
                yticklabels=[str(k + 1) for k in range(n)])
    feats.tick_params(axis="y", labelrotation=0)
    feats.set_xlabel(f"{steps.features.shape[1]} units")
    feats.set_title(f"3. {steps.layer} features", loc="left")
    scores = fig.add_subplot(lower[0, 1])
    shown = steps.scores[steps.shown]
    sns.heatmap(shown, ax=scores, cmap="mako", xticklabels=steps.classes, yticklabels=[str(k + 1) for k in range(n)],
                cbar_kws={"shrink": 0.8, "pad": 0.02})
    for k, c in enumerate(shown.argmax(axis=1)):  # each window's best class
        scores.add_patch(matplotlib.patches.Rectangle((c, k), 1, 1, fill=False, edgecolor="white", linewidth=1.5))
    scores.tick_params(axis="x", labelrotation=90)
    scores.tick_params(axis="y", labelrotation=0)
    scores.set_title("4. SVM score per class", loc="left")
    out = fig.add_subplot(lower[0, 0])
    boxes, labels, cols, dashed = [], [], [], []
    for o in steps.image.objects:
        boxes.append(o.box), labels.append(""), cols.append(TRUTH), dashed.append(True)
    best_dets = steps.detections[:top]
    right = plots.judge([box for _, _, box in best_dets], [steps.classes[c] for c, _, _ in best_dets], steps.image)
    for (c, s, box), ok in zip(best_dets, right):
        boxes.append(box), labels.append(f"{steps.classes[c]} {s:.2f}")
        cols.append(RIGHT if ok else WRONG), dashed.append(False)
    viz.draw_boxes(out, steps.pixels, boxes, labels, cols, dashed)
    out.set_title(f"5. after NMS: the best {len(right)}", loc="left")
    arrow(fig, first, crops, "right")
    arrow(fig, crops, feats, "right")
    arrow(fig, feats, scores, "down")
    arrow(fig, scores, out, "left")
    best = steps.detections[0] if steps.detections else None
    lowest = f"Window {n} is the proposal that scores lowest. " \
        if steps.scores[steps.shown[-1]].max() == steps.scores.max(axis=1).min() else ""
    ending = "No proposal survives NMS." if best is None else (
        f"The best detection is a {steps.classes[best[0]]} at {best[1]:.2f}, "
        f"{'right' if right[0] else 'wrong'} (IoU {best_iou(best[2], steps.image.boxes(steps.classes[best[0]])):.2f} "
        f"with the ground truth, dashed); {sum(right)} of the best {len(right)} are right.")
    caption = (f"R-CNN on one test image ({steps.image.image_id}), read clockwise from the top left: each of its "
               f"{len(steps.proposals)} selective-search proposals is warped to {steps.crops.shape[1]} x "
               f"{steps.crops.shape[2]} px with {steps.context} px of context, described by the fine-tuned network's "
               f"{steps.layer} ({steps.features.shape[1]} numbers) and scored by one linear SVM per class (each "
               f"window's best class framed white); per-class "
               f"NMS keeps {len(steps.detections)} boxes. {lowest}{ending}")
    return viz.Captioned(fig, caption)


# ---------------------------------------------------------------------------------------
# R-CNN Figure 2: warped training windows at fine-tuning's thresholds

@dataclass
class TrainingWindows:
    """Windows of one fine-tuning batch (`finetune.sample_windows` on `finetune.window_lists`):
    per kind ("foreground", "background") the windows shown (image index into the training split,
    box) as the network saw them (mirrored when the batch flips them), their label ("" for
    background), their IoU with the nearest ground-truth box and whether they were mirrored; the
    foreground threshold, the sizes of the two global lists and the batch's composition."""

    images: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    crops: dict[str, np.ndarray]
    labels: dict[str, list[str]]
    ious: dict[str, np.ndarray]
    flipped: dict[str, np.ndarray]
    fg_iou: float
    list_sizes: dict[str, int]
    batch: dict[str, int]


def training_windows(p: Params, bench: Benchmark, model: CaffeNet, n: int = 16) -> TrainingWindows:
    """The first `n` foreground and background windows of a batch drawn as fine-tuning draws it
    (`finetune.fg_per_batch` + `finetune.bg_per_batch` windows, mirrored with p = 0.5 when
    `finetune.mirror`), from `bench.train`'s ground-truth boxes and proposals, with the seed
    `runtime.seed`; warped with the network's context padding and mean fill."""
    cfg = p.finetune
    windows = FT.window_lists(bench.train, bench.proposals, bench.classes, cfg.fg_iou)
    batch = FT.sample_windows(windows, cfg.fg_per_batch, cfg.bg_per_batch,
                              torch.Generator().manual_seed(p.runtime.seed), cfg.mirror)
    label = batch["label"].numpy()
    fill = mean_colour(model)
    out: dict[str, dict[str, Any]] = {"images": {}, "boxes": {}, "crops": {}, "labels": {}, "ious": {}, "flipped": {}}
    for kind, key, pick in (("foreground", "fg", label > 0), ("background", "bg", label == 0)):
        index = {(int(i), int(w)): k for k, (i, w) in enumerate(zip(windows[f"{key}_image"], windows[f"{key}_window"]))}
        sel = np.flatnonzero(pick)[:n]
        images, boxes = batch["image"].numpy()[sel], batch["box"].numpy()[sel]
        crops = np.zeros((len(sel), p.net.input_size, p.net.input_size, 3), np.uint8)
        for i in np.unique(images):
            at = images == i
            crops[at] = display_warps(load_image(bench.train.images[i].path), boxes[at], p, fill)
        flip = batch["flip"].numpy()[sel]
        crops[flip] = crops[flip][:, :, ::-1]
        k = [index[int(i), int(w)] for i, w in zip(images, batch["window"].numpy()[sel])]
        out["images"][kind], out["boxes"][kind] = images, boxes
        out["crops"][kind], out["flipped"][kind] = crops, flip
        out["ious"][kind] = windows[f"{key}_iou"][k]
        out["labels"][kind] = [bench.classes[c - 1] if c > 0 else "" for c in label[sel]]
    return TrainingWindows(**out, fg_iou=cfg.fg_iou,
                           list_sizes={"foreground": len(windows["fg_image"]), "background": len(windows["bg_image"])},
                           batch={"foreground": int((label > 0).sum()), "background": int((label == 0).sum())})


def training_windows_figure(tw: TrainingWindows, cols: int = 8) -> viz.Captioned:
    """R-CNN Figure 2's counterpart: foreground windows (class and IoU) above background ones
    (IoU), as fine-tuning feeds them to the network."""
    kinds = [k for k in ("foreground", "background") if len(tw.crops[k])]
    lines = {k: -(-len(tw.crops[k]) // cols) for k in kinds}
    viz.style()
    fig = plt.figure(figsize=(WIDTH, sum(lines.values()) * WIDTH / cols * 1.3 + 0.4 * len(kinds)))
    outer = fig.add_gridspec(len(kinds), 1, height_ratios=[lines[k] for k in kinds], hspace=0.25)
    for row, kind in enumerate(kinds):
        inner = outer[row].subgridspec(lines[kind], cols, wspace=0.08, hspace=0.45)
        color = RIGHT if kind == "foreground" else GREY
        for j, crop in enumerate(tw.crops[kind]):
            ax = fig.add_subplot(inner[j // cols, j % cols])
            ax.imshow(crop, interpolation="nearest")
            _frame(ax, color)
            name = f"{tw.labels[kind][j]}\n" if tw.labels[kind][j] else ""
            ax.set_title(f"{name}IoU {tw.ious[kind][j]:.2f}" + (" \u2194" if tw.flipped[kind][j] else ""),
                         fontsize=6.5, pad=2)
            if j == 0:
                ax.set_ylabel(kind, fontsize=8)
    fg, bg = tw.ious.get("foreground", np.zeros(0)), tw.ious.get("background", np.zeros(0))
    parts = []
    if len(fg):
        parts.append(f"the foreground windows shown have IoU {fg.min():.2f} to {fg.max():.2f} "
                     f"({int((fg >= 1).sum())} are ground-truth boxes themselves)")
    if len(bg):
        parts.append(f"{int((bg > 0).sum())} of the {len(bg)} background windows shown overlap an object "
                     f"(up to IoU {bg.max():.2f}), the rest show none")
    caption = (f"Warped training windows of one fine-tuning batch ({tw.batch['foreground']} foreground and "
               f"{tw.batch['background']} background windows, drawn from global lists of "
               f"{tw.list_sizes['foreground']} and {tw.list_sizes['background']}): foreground means IoU >= "
               f"{tw.fg_iou:g} with a ground-truth box, labelled with its class; background is everything "
               f"below (\u2194: mirrored). " + sentence("; ".join(parts)))
    return viz.Captioned(fig, caption)


def rcnn_figures(p: Params, cache: Cache, bench: Benchmark, nets: dict[str, Any], t2: R.Table2,
                 figures_dir: str) -> None:
    """In the R-CNN chapter: show the pipeline figure (`rcnn_pipeline`) and the training windows
    (`rcnn_windows`), numbered and captioned (`viz.show`)."""
    viz.show(pipeline_figure(pipeline_steps(p, cache, bench, nets, t2)), "rcnn_pipeline", figures_dir)
    viz.show(training_windows_figure(training_windows(p, bench, nets["finetuned"])), "rcnn_windows", figures_dir)


# ---------------------------------------------------------------------------------------
# LSDA Figures 1 and 2: the idea and the network

def transfer_k(p: Params, lb: L.LsdaBenchmark) -> int:
    """How many set-B neighbours full LSDA's transfer averages: `lsda_k`, at most |B|."""
    return min(L.lsda_k(p, lb), len(lb.B))


ADAPTED, TRANSFERRED, NEW = viz.PALETTE[3], viz.PALETTE[1], viz.PALETTE[0]


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, color: str, size: float = 8) -> None:
    """A rounded box of `color` at (x, y) (lower left, axes units) with centred text."""
    ax.add_patch(matplotlib.patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.004,rounding_size=0.012",
                                                   facecolor=color, alpha=0.18, edgecolor=color, linewidth=1.2))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """An arrow between two points (axes units)."""
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1.0})


def lsda_idea_figure(p: Params, lb: L.LsdaBenchmark) -> viz.Captioned:
    """LSDA's Figures 1 and 2 as one diagram: top, the method's four steps with this run's sets;
    bottom, the network, each layer coloured by what trains it (set B's boxes, the transfer)."""
    k, n_b, n_a = transfer_k(p, lb), len(lb.B), len(lb.A)
    n_cls = len(lb.cls_train) if lb.cls_train is not None else 0
    viz.style()
    fig, ax = plt.subplots(figsize=(WIDTH, 4.2))
    ax.set_axis_off()
    ax.set_xlim(-0.015, 1.015)
    ax.set_ylim(0, 1)
    steps = [(f"1. Classification net:\n{n_b + n_a} classifiers $W^c$\nfrom {n_cls} images\nwith labels only", NEW),
             (f"2. Fine-tune for\ndetection on set B:\n{n_b} categories, {len(lb.bench.train)}\nimages with boxes",
              ADAPTED),
             (f"3. Transfer to set A\n({n_a} categories, no box):\n$W^c_j$ + mean change\nof its {k} nearest in B",
              TRANSFERRED),
             (f"4. Detect all {n_b + n_a}:\nscore$_i$ \u2212 score$_{{bg}}$\nper proposal,\nthen NMS", NEW)]
    w = 0.21
    gap = (1 - 4 * w) / 3
    for i, (text, color) in enumerate(steps):
        x = i * (w + gap)
        _box(ax, x, 0.6, w, 0.3, text, color)
        if i:
            _arrow(ax, (x - gap + 0.008, 0.75), (x - 0.008, 0.75))
    ax.text(0, 0.93, "the method", fontsize=9, weight="bold", va="bottom")
    ax.text(0, 0.46, "the network: a warped region in, a score per category and background out", fontsize=9,
            weight="bold", va="bottom")
    layers = [f"conv{i + 1}\n{c}" for i, c in enumerate(p.net.conv_channels)] + \
             [f"fc6\n{p.net.fc_width}", f"fc7\n{p.net.fc_width}"]
    lw, step = 0.052, 0.074
    _box(ax, 0, 0.14, lw + 0.01, 0.24, f"region\n{p.net.input_size}\u00b2", GREY, size=7)
    for i, text in enumerate(layers):
        x = 0.09 + i * step
        _box(ax, x, 0.14, lw, 0.24, text, ADAPTED, size=7)
        _arrow(ax, (x - step + lw + (0.01 if i == 0 else 0) + 0.005, 0.26), (x - 0.005, 0.26))
    x8 = 0.09 + len(layers) * step + 0.04
    heads = [("background: 1 (new)", ADAPTED), (f"fcB: {n_b} (fine-tuned)", ADAPTED),
             (f"fcA: {n_a} (moved by the transfer)", TRANSFERRED)]
    for j, (text, color) in enumerate(heads):
        _box(ax, x8, 0.31 - j * 0.1, 1 - x8, 0.08, text, color)
        _arrow(ax, (x8 - 0.045, 0.26), (x8 - 0.003, 0.35 - j * 0.1))
    ax.text(x8, 0.4, "fc8, the output layer", fontsize=8, va="bottom")
    handles = [matplotlib.patches.Patch(facecolor=c, alpha=0.4, edgecolor=c, label=t)
               for c, t in ((ADAPTED, "learnt from set B's boxes"), (TRANSFERRED, "moved by the transfer"),
                            (NEW, "from image labels / as is"))]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, -0.06), ncol=3, fontsize=8)
    caption = (f"LSDA's idea and network on this run: a classification network over all {n_b + n_a} categories is "
               f"fine-tuned for detection on the {n_b} categories of set B, whose boxes it sees, with a new background "
               f"output; the {n_a} categories of set A never show it a box, and their classifiers only move by the "
               f"average change of their {k} nearest set-B classifiers (the transfer, equation below).")
    return viz.Captioned(fig, caption)


# ---------------------------------------------------------------------------------------
# the transfer's neighbours

def neighbour_table(p: Params, lb: L.LsdaBenchmark, cls_model: CaffeNet) -> tables.Table:
    """Per held-out category, the set-B categories whose change the transfer averages
    (`lsda.neighbours` on the classification network's output weights, k = `lsda_k`, closest
    first), marking (*) those of the same superclass (the world's; VOC's groups on VOC), with how
    many siblings it picked, how many set B holds, and how many k random picks would hold. A
    readable table: the lists are shown whole (pandas cuts text past 50 characters)."""
    classes = lb.bench.classes
    k = L.lsda_k(p, lb)
    bi, ai = [classes.index(c) for c in lb.B], [classes.index(c) for c in lb.A]
    nn = L.neighbours(cls_model.head.weight.detach().cpu().numpy(), bi, ai, k)
    member: dict[str, set[str]] = {c: set() for c in classes}
    for ds in (lb.train_all, lb.bench.test):  # a category without test objects is named in training
        for g, m in An.similarity_groups(ds).items():
            for c in m:
                member[c].add(g)
    def name(c: str) -> str:
        return lb.names.get(c, c)

    rows = []
    for a, picks in zip(lb.A, nn):
        chosen = [lb.B[i] for i in picks]
        sib = [bool(member[a] & member[b]) for b in chosen]
        in_b = sum(bool(member[a] & member[b]) for b in lb.B)
        rows.append({"held-out category": name(a), "superclass": ", ".join(sorted(member[a])) or "\u2014",
                     f"its {len(chosen)} nearest set-B categories (* same superclass)":
                         ", ".join(name(b) + ("*" if s else "") for b, s in zip(chosen, sib)),
                     "siblings picked": sum(sib), "siblings in set B": in_b,
                     "expected by chance": f"{len(chosen) * in_b / max(len(lb.B), 1):.1f}"})
    return tables.readable(pd.DataFrame(rows).set_index("held-out category"))


def neighbour_note(table: pd.DataFrame) -> Markdown:
    """One sentence on `neighbour_table`: do the picks favour superclass siblings beyond chance?"""
    if not len(table) or (table["superclass"] == "\u2014").all():
        return Markdown("The benchmark names no superclasses, so siblings cannot be marked.")
    picked, in_b = int(table["siblings picked"].sum()), int(table["siblings in set B"].sum())
    if in_b and (table["expected by chance"].astype(float) == table["siblings in set B"]).all():  # k = |B|
        return Markdown("Here k covers the whole of set B, so every held-out category averages the change of all "
                        "of them alike (the plain average); the order only shows which are nearest.")
    chance = float(table["expected by chance"].astype(float).sum())
    n = int(table.iloc[:, 1].str.split(", ").str.len().sum())
    return Markdown(f"Of the {n} neighbours the held-out categories pick, {picked} share their superclass, against "
                    f"{chance:.1f} expected from random picks in set B: the classification weights "
                    f"{'do' if picked > chance else 'do not'} group categories by superclass "
                    f"{'more often than chance' if picked > chance else 'beyond chance'}.")


# ---------------------------------------------------------------------------------------
# LSDA Figure 5a: top false positives on the held-out categories

def top_false_positives(lb: L.LsdaBenchmark, result: DetectorResult, diagnosis: dict[str, An.ClassDiagnosis],
                        n: int = 6) -> list[dict[str, Any]]:
    """The `n` highest-scoring false positives of `result` on the held-out categories (one per
    image), each with its Hoiem type (`diagnosis`: `hoiem.diagnose` of `result`), its box, and
    the object it overlaps most (class and IoU; None over background)."""
    test = lb.bench.test
    found = []
    for c in lb.A:
        d = diagnosis.get(c)
        if d is None:
            continue
        m = d.matching
        for j in np.flatnonzero(d.fp_type >= 0):
            found.append((float(m.scores[j]), c, int(m.image_index[j]), result.detections[c].boxes[m.order[j]],
                          An.FP_TYPES[d.fp_type[j]]))
    found.sort(key=lambda t: -t[0])
    out, seen = [], set()
    for score, c, i, box, kind in found:
        if i in seen:
            continue
        seen.add(i)
        im = test.images[i]
        ious = [best_iou(box, o.box[None]) for o in im.objects]
        top = int(np.argmax(ious)) if ious else -1
        over = (im.objects[top].cls, ious[top]) if top >= 0 and ious[top] > 0 else None
        out.append({"image": im, "class": c, "score": score, "box": box, "type": kind, "overlaps": over})
        if len(out) == n:
            break
    return out


def false_positives_figure(fps: list[dict[str, Any]], names: dict[str, str], cols: int = 3
                           ) -> viz.Captioned | Markdown:
    """LSDA Figure 5a's counterpart: each false positive on its image, coloured by its type as
    in the trend plots, the ground truth dashed with its category."""
    if not fps:
        return Markdown("LSDA has no false positive on the held-out categories in this run.")
    def name(c: str) -> str:
        return names.get(c, c)

    rows = -(-len(fps) // cols)
    fig, axes = viz.figure(rows, cols, width=WIDTH, height=WIDTH / cols * 0.95 * rows, squeeze=False,
                           layout="constrained")
    for ax in axes.flat[len(fps):]:
        ax.set_axis_off()
    labels = {"loc": "Loc", "sim": "Sim", "oth": "Oth", "bg": "BG"}
    for ax, e in zip(axes.flat, fps):
        im = e["image"]
        boxes = [o.box for o in im.objects] + [e["box"]]
        text = [name(o.cls) for o in im.objects] + [f"{name(e['class'])} {e['score']:.1f}"]
        colors = [TRUTH] * len(im.objects) + [FP_COLORS[e["type"]]]
        viz.draw_boxes(ax, load_image(im.path), boxes, text, colors, [True] * len(im.objects) + [False])
        where = "on background" if e["type"] == "bg" or e["overlaps"] is None else \
            f"on a {name(e['overlaps'][0])} (IoU {e['overlaps'][1]:.2f})"
        ax.set_title(f"{labels[e['type']]}: {name(e['class'])}\n{where}", fontsize=8)
    counts = {t: sum(e["type"] == t for e in fps) for t in An.FP_TYPES}
    mix = ", ".join(f"{v} {labels[t]}" for t, v in counts.items() if v)
    confusions = counts["sim"] + counts["oth"]
    caption = (f"LSDA's {len(fps)} highest-scoring false positives on held-out categories (one per image; "
               f"the box's colour gives its type, ground truth dashed): {mix}. The paper's Figure 5a shows "
               f"confusions with another category (Sim or Oth here); {confusions} of these {len(fps)} are.")
    return viz.Captioned(fig, caption)
