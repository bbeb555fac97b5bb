"""The chapters' figures (in the house style of lsda_core.publish.viz): training curves, mAP bars,
false-positive trends, sensitivity, pool5 units, threshold grids and example detections. Each
`*_figure` function (and each function a chapter passes to `viz.show`) returns a `viz.Captioned`
whose caption states the takeaway computed from the data it plots."""
from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import matplotlib.lines
import matplotlib.patches
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown

from lsda_core.core.boxes import box_iou
from lsda_core.data.images import load_image
from lsda_core.evaluation import units as U
from lsda_core.experiments import lsda as L
from lsda_core.experiments import rcnn as R
from lsda_core.publish import paper, viz
from lsda_core.publish.paper import LSDA_FIGURE3, RCNN_NEG_IOU_CHOSEN
from lsda_core.publish.report import RCNN_PAPER_ROW

# a detection is right when it overlaps an object of its class by at least this (VOC's rule)
RIGHT_IOU = 0.5


def _mark(items: list[str]) -> str:
    """Names in italics, joined for prose ('*a*', '*a* and *b*', '*a*, *b* and *c*')."""
    named = [f"*{x}*" for x in items]
    return " and ".join(named) if len(named) < 3 else ", ".join(named[:-1]) + " and " + named[-1]


def _legend_below(fig: Any, handles: list[Any], labels: list[str], ncol: int | None = None) -> None:
    """One legend for the whole figure, below its panels (constrained layout makes room)."""
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol or len(labels), frameon=False)


# ---------------------------------------------------------------------------------------
# training

def training_curves(axes: Any, pretrain: dict[str, Any], finetune: dict[str, Any]) -> None:
    """Left: pre-training loss and validation top-1 per epoch; right: fine-tuning loss and
    foreground / background accuracy per logged step; each panel's legend below it."""
    ax, ax2 = axes
    ep = pretrain.get("epochs", [])
    if ep:
        x = [e["epoch"] for e in ep]
        line = ax.plot(x, [e["train_loss"] for e in ep], marker="o", markersize=3, label="train loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        tw = ax.twinx()
        tw.grid(False)
        twin = tw.plot(x, [e.get("val_top1", np.nan) for e in ep], marker="s", markersize=3, color=viz.PALETTE[1],
                       label="val top-1 (right axis)")
        tw.set_ylabel("val top-1")
        tw.set_ylim(0, 1)
        tw.spines["right"].set_visible(True)
        ax.legend(line + twin, [h.get_label() for h in line + twin], loc="upper center",
                  bbox_to_anchor=(0.5, -0.22), ncol=2)
    else:
        ax.text(0.5, 0.5, "not trained here: no curve", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("pre-training (classification images)")
    log = finetune.get("log", [])
    if log:
        x = [r["iteration"] for r in log]
        for key, label in (("loss", "loss"), ("fg_acc", "foreground acc."), ("bg_acc", "background acc.")):
            ax2.plot(x, [r[key] for r in log], marker="o" if len(x) < 30 else None, markersize=3, label=label)
        ax2.set_xlabel("SGD step (128 windows)")
        ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    ax2.set_title("fine-tuning (warped proposals)")


def _training_caption(pretrain: dict[str, Any], finetune: dict[str, Any]) -> str:
    """What the training curves show, and where each training ended."""
    parts = [("Left: pre-training loss per epoch and validation top-1 (right axis); right: fine-tuning "
              "loss and foreground / background accuracy per logged step.")]
    ep = pretrain.get("epochs", [])
    if ep:
        top1 = ep[-1].get("val_top1")
        parts.append(f"Pre-training ran {len(ep)} epoch{'s' * (len(ep) != 1)}, ending at training loss "
                     f"{ep[-1]['train_loss']:.2f}" + (f" and validation top-1 {top1:.2f}." if top1 is not None else "."))
    else:
        parts.append("The pre-trained weights were not trained here, so there is no pre-training curve.")
    log = finetune.get("log", [])
    if log:
        loss = (f"went from {log[0]['loss']:.2f} to {log[-1]['loss']:.2f} over" if len(log) > 1 else
                f"was {log[-1]['loss']:.2f} after")
        parts.append(f"Fine-tuning's loss {loss} {log[-1]['iteration']} steps, ending at foreground accuracy "
                     f"{log[-1]['fg_acc']:.2f} and background accuracy {log[-1]['bg_acc']:.2f}.")
    return " ".join(parts)


def training_figure(nets: dict[str, Any]) -> viz.Captioned:
    """Pre-training and fine-tuning curves side by side (`training_curves`)."""
    fig, axes = viz.figure(1, 2, width=7.2, height=3.2)
    training_curves(axes, nets["pretrain_history"], nets["finetune_history"])
    return viz.Captioned(fig, _training_caption(nets["pretrain_history"], nets["finetune_history"]))


# ---------------------------------------------------------------------------------------
# mAP bars

def bars_vs_paper(ax: Any, ours: dict[str, float], err: dict[str, float], paper_maps: dict[str, float],
                  paper_label: str, xlabel: str) -> None:
    """Horizontal bars per detector: ours (with ± `err` error bars) beside the paper's, each bar
    labelled with its value; a detector the paper has no number for gets no paper bar."""
    names = list(ours)
    long = pd.DataFrame([{"detector": k, "source": "ours", "value": ours[k]} for k in names]
                        + [{"detector": k, "source": paper_label, "value": paper_maps[k]} for k in names
                           if k in paper_maps])
    sns.barplot(long, y="detector", x="value", hue="source", orient="h", ax=ax, errorbar=None,
                palette=viz.PALETTE[:2], saturation=1, order=names, hue_order=["ours", paper_label])
    mine, theirs = ax.containers[0], ax.containers[1] if len(ax.containers) > 1 else []
    ys = [bar.get_y() + bar.get_height() / 2 for bar in mine]
    xs = [ours[k] for k in names]
    es = [err.get(k, 0.0) for k in names]
    ax.errorbar(xs, ys, xerr=es, fmt="none", ecolor="black", elinewidth=1, capsize=2)
    for bar, x, e in zip(mine, xs, es):
        ax.text(x + e, bar.get_y() + bar.get_height() / 2, f" {x:.1f}", va="center", fontsize=7)
    for bar, k in zip(theirs, [k for k in names if k in paper_maps]):
        ax.text(paper_maps[k], bar.get_y() + bar.get_height() / 2, f" {paper_maps[k]:.1f}", va="center", fontsize=7)
    top = max([x + e for x, e in zip(xs, es)] + [paper_maps.get(k, 0.0) for k in names])
    ax.set_xlim(0, top * 1.15 + 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    sns.move_legend(ax, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=None)


def _gap(maps: dict[str, float]) -> tuple[str, str, float]:
    """The best detector, the runner-up and the gap between them (points)."""
    order = sorted(maps, key=maps.get, reverse=True)
    return order[0], order[1], maps[order[0]] - maps[order[1]]


def table2_figure(t2: R.Comparison) -> viz.Captioned:
    """Table 2's mAP per detector (± one bootstrap standard deviation) beside the paper's VOC 2007
    mAP (`bars_vs_paper`); the caption names the best detector, its margin and fine-tuning's effect."""
    ours = {k: 100 * r.map for k, r in t2.results.items()}
    err = {k: 100 * float(np.std(t2.spread[k])) for k in ours if k in t2.spread}
    theirs = {k: paper.RCNN_MAP[RCNN_PAPER_ROW[k]] for k in ours if k in RCNN_PAPER_ROW}
    fig, ax = viz.figure(width=6.4, height=0.42 * len(ours) + 1.2)
    bars_vs_paper(ax, ours, err, theirs, "paper (VOC 2007)", "mAP (%)")
    n = len(next(iter(t2.spread.values()), []))
    best, second, gap = _gap(ours)
    text = (f"Test mAP of each Table 2 detector, ours (error bars: ± one standard deviation over {n} bootstrap "
            f"resamples of the test images) beside the paper's. The best here is *{best}* at {ours[best]:.1f}, "
            f"{gap:.1f} points above *{second}*")
    text += f" (its bootstrap std is {err[best]:.1f})." if best in err else "."
    if "fc7" in ours and "FT fc7" in ours:
        ft = ours["FT fc7"] - ours["fc7"]
        text += (f" Fine-tuning {'raised' if ft > 0 else 'lowered'} fc7 by {abs(ft):.1f} points"
                 + (f" (the paper: {theirs['FT fc7'] - theirs['fc7']:+.1f})." if {"fc7", "FT fc7"} <= set(theirs)
                    else "."))
    return viz.Captioned(fig, text)


def held_out_figure(held: L.HeldOut) -> viz.Captioned:
    """LSDA Figure 3: held-out mAP of its four detectors (± one bootstrap std) beside the paper's;
    the caption gives the step from the classification network to full LSDA and each step's share."""
    ours = {k: held.maps[row]["held-out (A)"] for k, row in held.figure3.items()}
    err = {k: 100 * float(np.std(held.spread[row])) for k, row in held.figure3.items()}
    fig, ax = viz.figure(width=6.4, height=0.5 * len(ours) + 1.2)
    bars_vs_paper(ax, ours, err, LSDA_FIGURE3, "paper (ILSVRC2013 val2)", "held-out mAP (%)")
    names = list(ours)
    first, last = names[0], names[-1]
    steps = [f"*{b}* {ours[b] - ours[a]:+.1f}" for a, b in pairwise(names)]
    text = (f"Held-out mAP (categories without training boxes) of each step from the classification network to "
            f"full LSDA, ours (error bars: ± one bootstrap standard deviation) beside the paper's. Here LSDA "
            f"goes from {ours[first]:.1f} to {ours[last]:.1f} ({ours[last] - ours[first]:+.1f} points; the paper "
            f"{LSDA_FIGURE3[last] - LSDA_FIGURE3[first]:+.1f}); step by step: {', '.join(steps)}.")
    return viz.Captioned(fig, text)


# ---------------------------------------------------------------------------------------
# the negative-overlap grid

def threshold_grid(ax: Any, grid: dict[float, Any], spread: dict[str, np.ndarray]) -> None:
    """mAP against the SVM negatives' IoU threshold, with ± one bootstrap std."""
    t = sorted(grid)
    m = [100 * grid[k].map for k in t]
    s = [100 * float(np.std(spread[grid[k].name])) for k in t]
    ax.errorbar(t, m, yerr=s, marker="o", capsize=3, label="ours (± bootstrap std)")
    ax.axvline(RCNN_NEG_IOU_CHOSEN, color=viz.PALETTE[1], linestyle="--", zorder=0,
               label=f"paper's choice ({RCNN_NEG_IOU_CHOSEN})")
    ax.set_xlabel("negatives: IoU below")
    ax.set_ylabel("mAP (%)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)


def threshold_figure(grid: R.NegIouGrid) -> viz.Captioned:
    """mAP against the negatives' IoU threshold (`threshold_grid`); the caption compares the
    best threshold here with the paper's choice."""
    fig, ax = viz.figure(width=5, height=3.0)
    threshold_grid(ax, grid.results, grid.spread)
    m = {t: 100 * r.map for t, r in grid.results.items()}
    best = max(m, key=m.get)
    text = (f"FT fc7's test mAP for each IoU threshold below which a proposal is an SVM negative (± one bootstrap "
            f"standard deviation). The best threshold here is {best} ({m[best]:.1f} mAP)")
    if RCNN_NEG_IOU_CHOSEN in m and best != RCNN_NEG_IOU_CHOSEN:
        text += (f"; the paper's choice, {RCNN_NEG_IOU_CHOSEN}, gives {m[RCNN_NEG_IOU_CHOSEN]:.1f}, "
                 f"{m[best] - m[RCNN_NEG_IOU_CHOSEN]:.1f} points less.")
    else:
        text += ", the paper's choice." if best == RCNN_NEG_IOU_CHOSEN else "."
    return viz.Captioned(fig, text)


# ---------------------------------------------------------------------------------------
# detections on images

def judge(boxes: list[np.ndarray], classes: list[str], image: Any) -> list[bool]:
    """Whether each detection (best first) is right: IoU >= `RIGHT_IOU` with an object of its
    class that no better detection has claimed (VOC's matching)."""
    claimed: set[int] = set()
    out = []
    for box, cls in zip(boxes, classes):
        idx = [i for i, o in enumerate(image.objects) if o.cls == cls and i not in claimed]
        if not idx:
            out.append(False)
            continue
        iou = box_iou(torch.as_tensor(np.asarray(box, np.float64)[None]),
                      torch.as_tensor(np.stack([image.objects[i].box for i in idx]).astype(np.float64)))[0]
        j = int(torch.argmax(iou))
        ok = float(iou[j]) >= RIGHT_IOU
        if ok:
            claimed.add(idx[j])
        out.append(ok)
    return out


def _truth_handles() -> list[Any]:
    """Legend entries for right and wrong detections and the ground truth."""
    return [matplotlib.patches.Patch(edgecolor=viz.RIGHT, facecolor="none", linewidth=1.4, label=f"right (IoU ≥ {RIGHT_IOU})"),
            matplotlib.patches.Patch(edgecolor=viz.WRONG, facecolor="none", linewidth=1.4, label="wrong"),
            matplotlib.patches.Patch(edgecolor=viz.TRUTH, facecolor="none", linestyle="--", linewidth=1.4,
                                     label="ground truth")]


def _grid(n: int, cols: int, panel: float) -> tuple[Any, np.ndarray]:
    """A figure of `n` image panels, `cols` to a row (fewer when `n` is smaller), `panel` inches
    wide each as far as the column allows."""
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    width = min(viz.MAX_WIDTH, cols * panel)
    fig, axes = viz.figure(rows, cols, width=width, height=rows * width / cols * 0.82 + 0.4, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def example_detections(test: Any, result: Any, n: int = 8, seed: int = 0, top: int = 3,
                       cols: int = 3) -> viz.Captioned:
    """Test images (drawn with a seed) with the detector's `top` highest-scoring boxes (any class,
    after NMS), green when right and red when wrong, and the ground truth dashed; the caption
    counts right and wrong boxes and the objects found."""
    rng = np.random.default_rng(seed)
    ims = [test.images[i] for i in sorted(rng.choice(len(test.images), min(n, len(test.images)), replace=False))]
    fig, axes = _grid(len(ims), cols, 2.4)
    right = wrong = objects = 0
    for ax, im in zip(axes.flat, ims):
        mine = sorted(((d.scores[i], cls, d.boxes[i]) for cls, d in result.detections.items()
                       for i, x in enumerate(d.image_ids) if x == im.image_id), key=lambda t: -t[0])[:top]
        ok = judge([b for _, _, b in mine], [c for _, c, _ in mine], im)
        right, wrong, objects = right + sum(ok), wrong + len(ok) - sum(ok), objects + len(im.objects)
        boxes = [o.box for o in im.objects] + [b for _, _, b in mine]
        labels = [""] * len(im.objects) + [f"{c} {s:.2f}" for s, c, _ in mine]
        colors = [viz.TRUTH] * len(im.objects) + [viz.RIGHT if k else viz.WRONG for k in ok]
        dashed = [True] * len(im.objects) + [False] * len(mine)
        viz.draw_boxes(ax, load_image(im.path), boxes, labels, colors, dashed)
    handles = _truth_handles()
    _legend_below(fig, handles, [h.get_label() for h in handles])
    text = (f"The detector's {top} highest-scoring boxes (SVM score, any class, after NMS) on {len(ims)} test "
            f"images, green when right (IoU ≥ {RIGHT_IOU} with an object of its class not claimed by a better "
            f"box), red when wrong; the ground truth dashed blue. {right} of the {right + wrong} boxes are "
            f"right, finding {right} of the {objects} objects in these images.")
    return viz.Captioned(fig, text)


def before_after(examples: list[dict[str, Any]], names: dict[str, str] | None = None,
                 cols: int = 3) -> viz.Captioned:
    """LSDA Figure 4: on each image the classification network's best box (red) and LSDA's
    (green) for a held-out category, named above the panel, the ground truth dashed; the caption
    says how much of the object the classification network's box covers."""
    fig, axes = _grid(len(examples), cols, 2.4)
    cover, iou_cls, iou_lsda = [], [], []
    for ax, e in zip(axes.flat, examples):
        gt = np.asarray(e["gt"], np.float64)
        viz.draw_boxes(ax, load_image(e["image"].path), list(gt) + [e["cls"], e["lsda"]], [""] * (len(gt) + 2),
                       [viz.TRUTH] * len(gt) + [viz.WRONG, viz.RIGHT], [True] * len(gt) + [False, False])
        ax.set_title((names or {}).get(e["class"], e["class"]), fontsize=8)
        pair = torch.as_tensor(np.stack([e["cls"], e["lsda"]]).astype(np.float64))
        iou = box_iou(pair, torch.as_tensor(gt))
        j = int(torch.argmax(iou[1]))  # the object LSDA found
        iou_cls.append(float(iou[0, j]))
        iou_lsda.append(float(iou[1, j]))
        c, g = pair[0].numpy(), gt[j]
        inter = max(0.0, min(c[2], g[2]) - max(c[0], g[0])) * max(0.0, min(c[3], g[3]) - max(c[1], g[1]))
        cover.append(inter / max((g[2] - g[0]) * (g[3] - g[1]), 1e-9))
    handles = [matplotlib.patches.Patch(edgecolor=viz.WRONG, facecolor="none", linewidth=1.4,
                                        label="classification network"),
               matplotlib.patches.Patch(edgecolor=viz.RIGHT, facecolor="none", linewidth=1.4, label="LSDA"),
               matplotlib.patches.Patch(edgecolor=viz.TRUTH, facecolor="none", linestyle="--", linewidth=1.4,
                                        label="ground truth")]
    _legend_below(fig, handles, [h.get_label() for h in handles])
    text = (f"{len(examples)} held-out test image{'s' * (len(examples) != 1)} where LSDA's best box for a held-out "
            f"category (named above) is right and the classification network's is not: the classification "
            f"network's box in red, LSDA's in green, the ground truth dashed blue. Against the object LSDA "
            f"found, the classification network's boxes have a median IoU of {np.median(iou_cls):.2f} (LSDA's "
            f"{np.median(iou_lsda):.2f}) and cover a median {100 * np.median(cover):.0f} % of its area.")
    return viz.Captioned(fig, text)


def lsda_examples(examples: list[dict[str, Any]], names: dict[str, str]) -> viz.Captioned | Markdown:
    """LSDA Figure 4 (`before_after`), or a note when this run has no such image."""
    if not examples:
        return Markdown("No held-out test image has LSDA right and the classification network wrong in this run.")
    return before_after(examples, names)


def large_scale_detections(items: list[tuple[Any, list[tuple[str, np.ndarray, float]]]], boxed: set[str],
                           cols: int = 3) -> viz.Captioned:
    """LSDA Figure 6: each image's top detections after cross-class NMS, green when the category
    had training boxes, orange when it was learnt from classification data only; solid when
    right, dashed when wrong (the large view's test scenes have every object boxed)."""
    fig, axes = _grid(len(items), cols, 2.4)
    tally = Counter()
    for ax, (im, dets) in zip(axes.flat, items):
        ok = judge([d[1] for d in dets], [d[0] for d in dets], im)
        for d, k in zip(dets, ok):
            tally[(d[0] in boxed, k)] += 1
        viz.draw_boxes(ax, load_image(im.path), [d[1] for d in dets], [f"{d[0]} {d[2]:.1f}" for d in dets],
                       [viz.PALETTE[2] if d[0] in boxed else viz.PALETTE[1] for d in dets], [not k for k in ok])
    handles = [matplotlib.patches.Patch(color=viz.PALETTE[2], label="category with training boxes"),
               matplotlib.patches.Patch(color=viz.PALETTE[1], label="from classification data only"),
               matplotlib.lines.Line2D([], [], color="0.3", label=f"right (IoU ≥ {RIGHT_IOU})"),
               matplotlib.lines.Line2D([], [], color="0.3", linestyle="--", label="wrong")]
    _legend_below(fig, handles, [h.get_label() for h in handles], ncol=2)

    def share(b: bool) -> str:
        n = tally[(b, True)] + tally[(b, False)]
        return f"{tally[(b, True)]} of {n}" if n else "none"
    text = (f"LSDA's top detections (after per-class and cross-category NMS) on {len(items)} test scenes of the "
            f"large view: green for categories with training boxes, orange for those learnt from classification "
            f"data only; solid when right (IoU ≥ {RIGHT_IOU} with an object of the category), dashed when wrong. "
            f"Right: {share(True)} detections of categories with boxes, {share(False)} of categories without.")
    return viz.Captioned(fig, text)


# ---------------------------------------------------------------------------------------
# pool5 units

def unit_votes(top: U.UnitTop, dataset: Any) -> Counter:
    """What a unit's top regions cover: per region the class of the object it overlaps by IoU >=
    `RIGHT_IOU` (the best such object), or 'background' when it covers none; counted."""
    images = {im.image_id: im for im in dataset.images}
    votes: Counter = Counter()
    for image_id, box in zip(top.image_ids, top.boxes):
        im = images[image_id]
        if not im.objects:
            votes["background"] += 1
            continue
        iou = box_iou(torch.as_tensor(np.asarray(box, np.float64)[None]), torch.as_tensor(im.boxes()))[0]
        j = int(torch.argmax(iou))
        votes[im.objects[j].cls if float(iou[j]) >= RIGHT_IOU else "background"] += 1
    return votes


def unit_category(top: U.UnitTop, dataset: Any) -> tuple[str, int]:
    """The category a unit responds to: what most of its top regions cover (`unit_votes`), and
    how many do."""
    votes = unit_votes(top, dataset)
    return votes.most_common(1)[0] if votes else ("background", 0)


def why_chosen(label: str) -> str:
    """Why a unit was chosen, in words (`units.svm_units` / `generic_units` labels)."""
    if label.endswith((" +", " -")):
        return f"{label[:-2]} SVM, {'positive' if label.endswith('+') else 'negative'} weight"
    return {"generic": "every SVM's weight", "chosen": "chosen by hand"}.get(label, label or "unit")


def unit_montage(rows: list[U.UnitTop], dataset: Any, p: Any, n: int | None = None, cols: int = 8,
                 fill: tuple[float, ...] = (0.0, 0.0, 0.0)) -> Any:
    """pool5 units' top regions (R-CNN Figures 3 and 6) as one mosaic as wide as the book's column,
    `cols` crops to a line, each unit's crops on lines of their own under a heading: the unit
    (y, x, channel), why it was chosen and what its regions cover (`unit_votes`: the category it
    responds to first). Each crop is the warped region the network saw, with the unit's
    receptive field in white and the activation divided by the channel's maximum at its upper-left
    corner. `fill`: colour outside the image (the network's mean shows what it saw)."""
    rows = [r.head(n) for r in rows]
    S = p.net.input_size
    gap = max(2, S // 16)
    step, head = S + gap, max(12, S // 4)
    lines = [max(1, -(-len(r.image_ids) // cols)) for r in rows]
    tops = np.cumsum([0] + [head + k * step + gap for k in lines])
    canvas = np.full((int(tops[-1]) - 2 * gap, cols * step - gap, 3), 255, np.uint8)
    marks, heads = [], []
    for r, top in zip(rows, tops):
        rf = U.receptive_box(p.net, r.unit)
        for j, (crop, v) in enumerate(zip(U.unit_crops(r, dataset, p, fill), r.normalised)):
            y0, x0 = int(top) + head + (j // cols) * step, (j % cols) * step
            canvas[y0:y0 + S, x0:x0 + S] = crop
            marks.append((x0 + rf[0], y0 + rf[1], rf[2] - rf[0], rf[3] - rf[1], v))
        covers = ", ".join(f"{c} {k}" for c, k in unit_votes(r, dataset).most_common(2))
        heads.append((top + head - gap, (f"unit ({r.unit.y}, {r.unit.x}, {r.unit.channel}) · {why_chosen(r.unit.label)} · "
                                          f"its {len(r.image_ids)} regions cover {covers}")))
    width = viz.MAX_WIDTH
    fig, ax = viz.figure(width=width, height=width * canvas.shape[0] / canvas.shape[1])
    ax.imshow(canvas, interpolation="nearest")
    for x, y, w, h, v in marks:
        # pixel edges: pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
        ax.add_patch(matplotlib.patches.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="white",
                                                  linewidth=0.8))
        ax.text(x, y, f"{v:.2f}", color="white", fontsize=6.5, ha="left", va="top",
                bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.5, "linewidth": 0})
    for y, text in heads:
        ax.text(-0.5, y, text, fontsize=8.5, ha="left", va="bottom")
    ax.set_axis_off()
    return fig


def pool5_units_figure(units: R.Pool5Units, dataset: Any, p: Any) -> viz.Captioned:
    """R-CNN Figure 3: each chosen unit's `units.top` top regions; the caption says which units
    respond mostly to one category, and how often the units with a category SVM's largest positive
    weights fire on that category."""
    tops = [t.head(p.units.top) for t in units.tops]
    fig = unit_montage(tops, dataset, p, fill=units.fill)
    votes = [unit_votes(t, dataset) for t in tops]
    named = [f"({t.unit.y}, {t.unit.x}, {t.unit.channel}) *{v.most_common(1)[0][0]}* "
             f"({v.most_common(1)[0][1]}/{len(t.image_ids)})"
             for t, v in zip(tops, votes) if v and v.most_common(1)[0][0] != "background"]
    text = (f"The top {p.units.top} test regions of each of {len(tops)} pool5 units of the fine-tuned network, as "
            f"the network saw them (warped, with context), the unit's receptive field in white and its activation "
            f"divided by the channel's maximum; above each unit, why it was chosen and what its regions cover "
            f"(the class of an object overlapped by IoU ≥ {RIGHT_IOU}, else background). ")
    text += (f"{len(named)} of the {len(tops)} units respond mostly to one category: {', '.join(named)}." if named
             else "Every unit's regions mostly cover background in this run.")
    own = [(t.unit.label[:-2], v, len(t.image_ids)) for t, v in zip(tops, votes) if t.unit.label.endswith(" +")]
    if own:
        cat = own[0][0]
        text += (f" The units with the largest positive weights in the *{cat}* SVM cover a {cat} in "
                 f"{sum(v[cat] for _, v, _ in own)} of their {sum(n for _, _, n in own)} regions.")
    return viz.Captioned(fig, text)


MONTAGE_COLS = 8  # Figure 6's crops per line (the paper's 12 would make them too small to read)


def pool5_montage_figure(units: R.Pool5Units, dataset: Any, p: Any) -> viz.Captioned:
    """R-CNN Figure 6: the first unit's `units.montage_top` top regions, `MONTAGE_COLS` to a line."""
    top = units.tops[0].head(p.units.montage_top)
    fig = unit_montage([top], dataset, p, cols=MONTAGE_COLS, fill=units.fill)
    cat, k = unit_category(top, dataset)
    u = top.unit
    text = (f"The top {len(top.image_ids)} test regions of one unit, ({u.y}, {u.x}, {u.channel}) "
            f"({why_chosen(u.label)}), drawn as in the figure above. {k} of them cover "
            + (f"an object of *{cat}*: what this unit responds to." if cat != "background" else
               "no object: this unit responds mostly to background."))
    return viz.Captioned(fig, text)


# ---------------------------------------------------------------------------------------
# Hoiem et al.'s diagnosis

FP_LABELS = {"loc": "Loc", "sim": "Sim", "oth": "Oth", "bg": "BG"}
# Hoiem's short names of the characteristics (x labels of the sensitivity plot)
CHARACTERISTIC_LABELS = {"occlusion": "occ", "truncation": "trn", "area": "size", "aspect": "asp",
                         "viewpoint": "view", "parts": "part"}


def fp_trend(ax: Any, trend: dict[str, Any], title: str, legend: bool = True) -> None:
    """Hoiem's trend plot: stacked shares of Loc / Sim / Oth / BG among the top N false
    positives (an `analysis.fp_trend` result) against N on a log axis; `legend` outside,
    right (a whole figure puts one legend below its panels instead)."""
    n = np.asarray(trend["n"], dtype=float)
    shares = [100 * np.asarray(trend["shares"][t], dtype=float) for t in FP_LABELS]
    colors = [viz.PALETTE[k] for k in range(len(FP_LABELS))]
    if n.size >= 2:
        ax.stackplot(n, shares, labels=list(FP_LABELS.values()), colors=colors)
        ax.set_xscale("log")
        ax.set_xlim(n[0], n[-1])
        ticks = n[:-1] if trend.get("truncated") else n  # the last point of a truncated trend is in the title
        ax.set_xticks(ticks, [f"{int(v)}" for v in ticks])
        ax.minorticks_off()
    elif n.size == 1:  # one point (fewer FPs than the smallest N): a stacked bar
        bottom = 0.0
        for s, color, label in zip(shares, colors, FP_LABELS.values()):
            ax.bar([0], [s[0]], bottom=bottom, color=color, label=label, width=0.6)
            bottom += s[0]
        ax.set_xticks([0], [f"{int(n[0])}"])
    else:
        ax.text(0.5, 0.5, "no false positives", ha="center", va="center", transform=ax.transAxes)
    if trend.get("truncated") and n.size:
        ax.set_title(f"{title}\n(only {trend['n_available']} FPs)", fontsize=8)
    else:
        ax.set_title(title, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_xlabel("total false positives")
    ax.set_ylabel("% of each type")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)


def _fp_handles() -> list[Any]:
    """Legend entries of the four false-positive types."""
    return [matplotlib.patches.Patch(color=viz.PALETTE[k], label=v) for k, v in enumerate(FP_LABELS.values())]


def _dominant(trends: list[dict[str, Any]]) -> tuple[str, float, int]:
    """Over several trends' last points (all their top FPs shown): the most common type, its
    share (%) and the number of false positives."""
    counts = {t: sum(tr["counts"][t][-1] for tr in trends if tr["n"]) for t in FP_LABELS}
    total = sum(counts.values())
    top = max(counts, key=counts.get)
    return FP_LABELS[top], 100 * counts[top] / max(total, 1), total


def fp_trend_figure(diag: R.Diagnosis) -> viz.Captioned:
    """R-CNN Figure 4: one row of FP-type trends per diagnosed detector, one panel per largest
    superclass, one legend below; the caption names each detector's most common error."""
    sets, n = diag.shown, len(diag.results)
    fig, axes = viz.figure(n, len(sets), width=viz.MAX_WIDTH, height=2.0 * n + 0.5, squeeze=False,
                           sharey=True)
    for row, (label, r) in zip(axes, diag.results.items()):
        for ax, g in zip(row, sets):
            fp_trend(ax, r["trend"][g], f"{label}: {g}", legend=False)
        for ax in row[1:]:
            ax.set_ylabel("")
    _legend_below(fig, _fp_handles(), list(FP_LABELS.values()))
    parts = []
    for label, r in diag.results.items():
        kind, share, total = _dominant([r["trend"][g] for g in sets])
        parts.append(f"*{label}* {kind} ({share:.0f} % of {total})" if total else f"*{label}* none")
    text = (f"The share of each false-positive type among the top N false positives (N on a log axis) of the "
            f"classes of the {len(sets)} largest superclasses (columns), for each diagnosed detector (rows). Over "
            f"all the top false positives shown, the most common type is: {'; '.join(parts)}.")
    return viz.Captioned(fig, text)


def held_out_fp_figure(fps: dict[str, dict[str, Any]]) -> viz.Captioned:
    """LSDA Figure 5: the held-out FP-type trend of each detector (`lsda.held_out_fps`); the caption
    gives each detector's share of Loc and BG among the false positives shown."""
    fig, axes = viz.figure(1, len(fps), width=min(viz.MAX_WIDTH, 3.4 * len(fps)), height=2.8, squeeze=False,
                           sharey=True)
    for ax, (name, f) in zip(axes[0], fps.items()):
        fp_trend(ax, f["trend"], f"{name}: held-out", legend=False)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    _legend_below(fig, _fp_handles(), list(FP_LABELS.values()))
    parts = []
    for name, f in fps.items():
        tr = f["trend"]
        total = sum(tr["counts"][t][-1] for t in FP_LABELS) if tr["n"] else 0
        both = sum(tr["counts"][t][-1] for t in ("loc", "bg")) if tr["n"] else 0
        parts.append(f"*{name}* {100 * both / total:.0f} % of {total}" if total else f"*{name}* no false positives")
    text = ("The share of each false-positive type among the top N false positives on the held-out categories "
            f"(N on a log axis). Localisation and background errors together: {'; '.join(parts)}.")
    return viz.Captioned(fig, text)


def sensitivity(ax: Any, characteristics: dict[str, Any], legend: bool = True) -> None:
    """Hoiem's sensitivity and impact plot: per characteristic the min and max normalised AP
    (averaged over classes) joined by a bar, and the overall normalised AP dashed; `legend`
    above the panel (a whole figure puts one legend below its panels instead)."""
    per = characteristics["per_characteristic"]
    names = list(per)
    x = np.arange(len(names))
    lo = np.array([per[k]["min"] for k in names], dtype=float)
    hi = np.array([per[k]["max"] for k in names], dtype=float)
    ax.vlines(x, lo, hi, color=viz.PALETTE[0], linewidth=2)
    ax.plot(x, lo, "v", color=viz.PALETTE[0], label="min over subsets")
    ax.plot(x, hi, "^", color=viz.PALETTE[3], label="max over subsets")
    for xi, a, b in zip(x, lo, hi):
        if np.isfinite(a) and np.isfinite(b):
            ax.text(xi, a - 0.03, f"{a:.2f}", fontsize=6, ha="center", va="top")
            ax.text(xi, b + 0.03, f"{b:.2f}", fontsize=6, ha="center", va="bottom")
    ax.axhline(characteristics["overall"], color="k", linestyle="--", linewidth=1, label="overall")
    ax.set_xticks(x, [CHARACTERISTIC_LABELS.get(k, k) for k in names])
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(-0.1, 1.1)  # room for the labels below 0 and above 1
    ax.set_ylabel("normalised AP")
    if legend:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=7)


def _sensitivity_caption(diag: R.Diagnosis) -> str:
    """Fine-tuning's effect on the worst and best subsets, and the most sensitive characteristic."""
    text = ("Per object characteristic, the normalised AP of the worst (▼) and the best (▲) subset, averaged over "
            "classes, and the overall normalised AP dashed; one panel per diagnosed detector. A long bar is a "
            "detector sensitive to that characteristic.")
    label = {row: lab for lab, row in R.DIAGNOSED.items()}
    if "fc7" in label and "FT fc7" in label and {label["fc7"], label["FT fc7"]} <= set(diag.results):
        a = diag.results[label["fc7"]]["characteristics"]["per_characteristic"]
        b = diag.results[label["FT fc7"]]["characteristics"]["per_characteristic"]
        keys = [k for k in b if k in a and all(np.isfinite([a[k]["min"], a[k]["max"], b[k]["min"], b[k]["max"]]))]
        if keys:
            up_lo = sum(b[k]["min"] > a[k]["min"] for k in keys)
            up_hi = sum(b[k]["max"] > a[k]["max"] for k in keys)
            span = max(keys, key=lambda k: b[k]["max"] - b[k]["min"])
            text += (f" Fine-tuning (*{label['FT fc7']}* against *{label['fc7']}*) raised the worst subset for "
                     f"{up_lo} and the best for {up_hi} of {len(keys)} characteristics; *{label['FT fc7']}* is "
                     f"most sensitive to {CHARACTERISTIC_LABELS.get(span, span)} "
                     f"({b[span]['max'] - b[span]['min']:.2f} between its worst and best subset).")
    return text


def sensitivity_figure(diag: R.Diagnosis) -> viz.Captioned:
    """R-CNN Figure 5: one sensitivity panel per diagnosed detector, one legend below."""
    n = len(diag.results)
    fig, axes = viz.figure(1, n, width=viz.MAX_WIDTH, height=3.0, squeeze=False, sharey=True)
    for ax, (label, r) in zip(axes[0], diag.results.items()):
        sensitivity(ax, r["characteristics"], legend=False)
        ax.set_title(label)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    handles, labels = axes[0][0].get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    return viz.Captioned(fig, _sensitivity_caption(diag))


# ---------------------------------------------------------------------------------------
# `lsda sweep` (saved by the command, not shown in the book)

def sweep_figure(table: pd.DataFrame, key: str) -> Any:
    """`lsda sweep`'s table: each metric against the grid's first parameter (one panel per
    metric; other grid parameters as separate lines)."""
    metrics = list(table.columns)
    fig, axes = viz.figure(1, len(metrics), width=min(viz.MAX_WIDTH, 3.2 * len(metrics)), height=3.0,
                           squeeze=False)
    flat = table.reset_index()
    others = [k for k in table.index.names if k != key]
    groups = flat.groupby(others, sort=False) if others else [("", flat)]
    for ax, m in zip(axes[0], metrics):
        for label, g in groups:
            ax.plot(g[key].astype(str), g[m], marker="o", label=str(label) if others else None)
        ax.set_xlabel(key)
        ax.set_title(m)
        if others:
            ax.legend(title=", ".join(others), fontsize="small")
    return fig
