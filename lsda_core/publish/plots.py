"""The chapters' figures (in the house style of lsda_core.publish.viz): training curves, mAP bars,
threshold grids and example detections."""
from __future__ import annotations

from typing import Any

import matplotlib.patches
import numpy as np
import pandas as pd

from IPython.display import Markdown

from lsda_core.evaluation import units as U
from lsda_core.experiments import lsda as L
from lsda_core.experiments import rcnn as R
from lsda_core.publish import viz
from lsda_core.publish.paper import LSDA_FIGURE3, RCNN_NEG_IOU_CHOSEN
from lsda_core.data.images import load_image


def training_curves(axes, pretrain: dict[str, Any], finetune: dict[str, Any]) -> None:
    """Left: pre-training loss and validation top-1 per epoch; right: fine-tuning loss and
    foreground accuracy per logged step."""
    ax, ax2 = axes
    ep = pretrain.get("epochs", [])
    if ep:
        x = [e["epoch"] for e in ep]
        ax.plot(x, [e["train_loss"] for e in ep], label="train loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        tw = ax.twinx()
        tw.plot(x, [e.get("val_top1", np.nan) for e in ep], color=viz.PALETTE[1], label="val top-1")
        tw.set_ylabel("val top-1")
        tw.set_ylim(0, 1)
    ax.set_title(f"pre-training ({pretrain.get('source', 'trained')})")
    log = finetune.get("log", [])
    if log:
        x = [r["iteration"] for r in log]
        ax2.plot(x, [r["loss"] for r in log], label="loss")
        ax2.plot(x, [r["fg_acc"] for r in log], label="foreground accuracy")
        ax2.plot(x, [r["bg_acc"] for r in log], label="background accuracy")
        ax2.set_xlabel("SGD step (128 windows)")
        ax2.legend()
    ax2.set_title("fine-tuning on warped proposals")


def map_bars(ax, table: pd.DataFrame, ours: str = "mAP", paper: str = "paper mAP (VOC 2007)",
             err: str = "± (bootstrap std)") -> None:
    """Our mAP per detector (with bootstrap std) beside the paper's."""
    y = np.arange(len(table))
    ax.barh(y - 0.2, table[ours], height=0.4, xerr=table[err] if err in table else None, label="ours",
            color=viz.PALETTE[0])
    ax.barh(y + 0.2, table[paper].fillna(0), height=0.4, label="paper (VOC 2007)", color=viz.PALETTE[1])
    ax.set_yticks(y, table.index)
    ax.invert_yaxis()
    ax.set_xlabel("mAP (%)")
    ax.legend(loc="lower right")


def threshold_grid(ax, grid: dict[float, Any], spread: dict[str, np.ndarray]) -> None:
    """mAP against the SVM negatives' IoU threshold, with bootstrap std."""
    t = sorted(grid)
    m = [100 * grid[k].map for k in t]
    s = [100 * float(np.std(spread[grid[k].name])) for k in t]
    ax.errorbar(t, m, yerr=s, marker="o", capsize=3, label="ours")
    ax.axvline(RCNN_NEG_IOU_CHOSEN, color=viz.PALETTE[1], linestyle="--",
               label=f"paper's choice ({RCNN_NEG_IOU_CHOSEN})")
    ax.set_xlabel("negatives: IoU below")
    ax.set_ylabel("mAP (%)")
    ax.legend()


def example_detections(test, result, n: int = 8, seed: int = 0, top: int = 3, cols: int = 4):
    """Test images (drawn with a seed) with the detector's `top` highest-scoring boxes
    (any class, after NMS) and the ground truth dashed grey."""
    rng = np.random.default_rng(seed)
    ims = [test.images[i] for i in sorted(rng.choice(len(test.images), min(n, len(test.images)), replace=False))]
    rows = int(np.ceil(len(ims) / cols))
    fig, axes = viz.figure(rows, cols, width=2.2 * cols, height=1.8 * rows, squeeze=False)
    for ax in axes.flat[len(ims):]:
        ax.set_axis_off()
    for ax, im in zip(axes.flat, ims):
        boxes, labels, colors, dashed = [], [], [], []
        for o in im.objects:
            boxes.append(o.box), labels.append(o.cls), colors.append("#888888"), dashed.append(True)
        mine = [(d.scores[i], k, cls, d.boxes[i]) for k, (cls, d) in enumerate(result.detections.items())
                for i, x in enumerate(d.image_ids) if x == im.image_id]
        for score, k, cls, box in sorted(mine, key=lambda t: -t[0])[:top]:
            boxes.append(box), labels.append(f"{cls} {score:.2f}")
            colors.append(viz.PALETTE[k % len(viz.PALETTE)]), dashed.append(False)
        viz.draw_boxes(ax, load_image(im.path), boxes, labels, colors, dashed)
    return fig


def unit_montage(rows: list[U.UnitTop], dataset, p, n: int | None = None, cols: int | None = None,
                 fill: tuple[float, float, float] = (0.0, 0.0, 0.0), crop_inches: float = 0.6):
    """pool5 units' top regions as one mosaic (R-CNN Figures 3 and 6): each crop is the warped
    region the network saw, with the unit's receptive field in white and, at its upper-left
    corner, the activation divided by the channel's maximum. One row of `n` crops per unit
    (Figure 3: 16), or with `cols` each unit's crops wrapped `cols` to a row (Figure 6: 96 as
    8 x 12). `fill`: colour outside the image (the network's mean shows what it saw)."""
    rows = [r.head(n) for r in rows]
    S = p.net.input_size
    gap = max(2, S // 16)
    step = S + gap
    width = cols or max((len(r.image_ids) for r in rows), default=1)
    lines = [max(1, -(-len(r.image_ids) // width)) for r in rows]
    canvas = np.full((sum(lines) * step - gap, width * step - gap, 3), 255, np.uint8)
    marks, ticks, line0 = [], [], 0
    for r, n_lines in zip(rows, lines):
        rf = U.receptive_box(p.net, r.unit)
        for j, (crop, v) in enumerate(zip(U.unit_crops(r, dataset, p, fill), r.normalised)):
            y0, x0 = (line0 + j // width) * step, (j % width) * step
            canvas[y0:y0 + S, x0:x0 + S] = crop
            marks.append((x0 + rf[0], y0 + rf[1], rf[2] - rf[0], rf[3] - rf[1], v))
        ticks.append(line0 * step + S / 2)
        line0 += n_lines
    fig, ax = viz.figure(width=width * crop_inches + 1.4, height=sum(lines) * crop_inches + 0.2)
    ax.imshow(canvas, interpolation="nearest")
    for x, y, w, h, v in marks:
        # pixel edges: pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
        ax.add_patch(matplotlib.patches.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="white",
                                                  linewidth=0.7))
        ax.text(x, y, f"{v:.2f}", color="white", fontsize=5, ha="left", va="top",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.4, "linewidth": 0})
    ax.set_xticks([])
    ax.set_yticks(ticks, [str(r.unit) for r in rows])
    ax.tick_params(length=0)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    return fig


FP_LABELS = {"loc": "Loc", "sim": "Sim", "oth": "Oth", "bg": "BG"}
# Hoiem's short names of the characteristics (x labels of the sensitivity plot)
CHARACTERISTIC_LABELS = {"occlusion": "occ", "truncation": "trn", "area": "size", "aspect": "asp",
                         "viewpoint": "view", "parts": "part"}


def fp_trend(ax, trend: dict[str, Any], title: str, legend: bool = True) -> None:
    """Hoiem's trend plot: stacked shares of Loc / Sim / Oth / BG among the top N false
    positives (an `analysis.fp_trend` result) against N on a log axis; `legend` outside,
    right (in a row of panels, give it to the last only)."""
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
        ax.set_title(f"{title}\n(only {trend['n_available']} FPs)")
    else:
        ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.set_xlabel("total false positives")
    ax.set_ylabel("percentage of each type")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)


def sensitivity(ax, characteristics: dict[str, Any]) -> None:
    """Hoiem's sensitivity and impact plot: per characteristic the min and max normalised AP
    (averaged over classes) joined by a bar, and the overall normalised AP dashed."""
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
            ax.text(xi + 0.08, a, f"{a:.3f}", fontsize=7, va="top")
            ax.text(xi + 0.08, b, f"{b:.3f}", fontsize=7, va="bottom")
    ax.axhline(characteristics["overall"], color="k", linestyle="--", linewidth=1,
               label=f"overall {characteristics['overall']:.3f}")
    ax.set_xticks(x, [CHARACTERISTIC_LABELS.get(k, k) for k in names])
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(0, 1)
    ax.set_ylabel("normalised AP")
    ax.legend(loc="lower right", fontsize=7)


# ---------------------------------------------------------------------------------------
# LSDA

def held_out_bars(ax, ours: dict[str, float], paper: dict[str, float], spread: dict[str, float] | None = None) -> None:
    """LSDA Figure 3: held-out mAP per detector, ours (with its std when given) beside the paper's."""
    names = list(ours)
    y = np.arange(len(names))
    err = [spread.get(k, 0.0) for k in names] if spread else None
    ax.barh(y - 0.2, [ours[k] for k in names], height=0.4, xerr=err, label="ours", color=viz.PALETTE[0])
    ax.barh(y + 0.2, [paper.get(k, np.nan) for k in names], height=0.4, label="paper (ILSVRC2013 val2)",
            color=viz.PALETTE[1])
    for i, (yi, k) in enumerate(zip(y, names)):
        ax.text(ours[k] + (err[i] if err else 0.0), yi - 0.2, f" {ours[k]:.1f}", va="center", fontsize=7)
        if k in paper:
            ax.text(paper[k], yi + 0.2, f" {paper[k]:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("held-out mAP (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))


def before_after(examples: list[dict[str, Any]], names: dict[str, str] | None = None, cols: int = 3):
    """LSDA Figure 4: on each image the classification network's box (red) and LSDA's box
    (green) for a held-out category, the ground truth dashed grey."""
    n = max(len(examples), 1)
    rows = int(np.ceil(n / cols))
    fig, axes = viz.figure(rows, cols, width=2.6 * cols, height=2.1 * rows, squeeze=False)
    for ax in axes.flat[len(examples):]:
        ax.set_axis_off()
    for ax, e in zip(axes.flat, examples):
        label = (names or {}).get(e["class"], e["class"])
        boxes = list(e["gt"]) + [e["cls"], e["lsda"]]
        labels = [""] * len(e["gt"]) + [f"classification net: {label}", f"LSDA: {label}"]
        colors = ["#888888"] * len(e["gt"]) + [viz.PALETTE[3], viz.PALETTE[2]]
        dashed = [True] * len(e["gt"]) + [False, False]
        viz.draw_boxes(ax, load_image(e["image"].path), boxes, labels, colors, dashed)
    return fig


def large_scale_detections(items: list[tuple[Any, list[tuple[str, np.ndarray, float]]]], boxed: set[str],
                           cols: int = 4):
    """LSDA Figure 6: each image's top detections after cross-class NMS, green when the
    category had training boxes, orange when it was learnt from classification data only."""
    n = max(len(items), 1)
    rows = int(np.ceil(n / cols))
    fig, axes = viz.figure(rows, cols, width=2.3 * cols, height=1.9 * rows, squeeze=False)
    for ax in axes.flat[len(items):]:
        ax.set_axis_off()
    for ax, (im, dets) in zip(axes.flat, items):
        viz.draw_boxes(ax, load_image(im.path), [d[1] for d in dets], [f"{d[0]} {d[2]:.1f}" for d in dets],
                       [viz.PALETTE[2] if d[0] in boxed else viz.PALETTE[1] for d in dets])
    handles = [matplotlib.patches.Patch(color=viz.PALETTE[2], label="category with training boxes"),
               matplotlib.patches.Patch(color=viz.PALETTE[1], label="category from classification data only")]
    fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    return fig


# ---------------------------------------------------------------------------------------
# the chapters' whole figures: one call each, laid out here

MONTAGE_COLS = 12  # Figure 6's crops per row


def training_figure(nets: dict[str, Any]):
    """Pre-training and fine-tuning curves side by side (`training_curves`)."""
    fig, axes = viz.figure(1, 2, width=8)
    training_curves(axes, nets["pretrain_history"], nets["finetune_history"])
    return fig


def table2_figure(table: pd.DataFrame):
    """Table 2's mAP per detector beside the paper's (`map_bars`)."""
    fig, ax = viz.figure(width=7)
    map_bars(ax, table)
    return fig


def fp_trend_figure(diag: R.Diagnosis):
    """R-CNN Figure 4: one row of FP-type trends per diagnosed detector, one panel per largest superclass."""
    sets, n = diag.shown, len(diag.results)
    fig, axes = viz.figure(n, len(sets), width=3.2 * len(sets) + 0.8, height=2.4 * n, squeeze=False)
    for row, (label, r) in zip(axes, diag.results.items()):
        for k, (ax, g) in enumerate(zip(row, sets)):
            fp_trend(ax, r["trend"][g], f"{label}: {g}", legend=k == len(sets) - 1)
    fig.tight_layout()
    return fig


def sensitivity_figure(diag: R.Diagnosis):
    """R-CNN Figure 5: one sensitivity panel per diagnosed detector."""
    n = len(diag.results)
    fig, axes = viz.figure(1, n, width=4.2 * n, height=3.2, squeeze=False)
    for ax, (label, r) in zip(axes[0], diag.results.items()):
        sensitivity(ax, r["characteristics"])
        ax.set_title(label)
    fig.tight_layout()
    return fig


def pool5_units_figure(units: R.Pool5Units, dataset, p):
    """R-CNN Figure 3: one row of `units.top` top regions per chosen unit."""
    return unit_montage(units.tops, dataset, p, n=p.units.top, fill=units.fill)


def pool5_montage_figure(units: R.Pool5Units, dataset, p):
    """R-CNN Figure 6: the first unit's `units.montage_top` top regions, `MONTAGE_COLS` to a row."""
    return unit_montage(units.tops[:1], dataset, p, n=p.units.montage_top, cols=MONTAGE_COLS, fill=units.fill)


def threshold_figure(grid: R.NegIouGrid):
    """mAP against the negatives' IoU threshold (`threshold_grid`)."""
    fig, ax = viz.figure(width=5)
    threshold_grid(ax, grid.results, grid.spread)
    return fig


def held_out_figure(held: L.HeldOut):
    """LSDA Figure 3: held-out mAP of its four detectors with bootstrap std, beside the paper's."""
    fig, ax = viz.figure(width=6)
    held_out_bars(ax, {k: held.maps[row]["held-out (A)"] for k, row in held.figure3.items()}, LSDA_FIGURE3,
                  {k: 100 * float(np.std(held.spread[row])) for k, row in held.figure3.items()})
    return fig


def lsda_examples(examples: list[dict[str, Any]], names: dict[str, str]):
    """LSDA Figure 4 (`before_after`), or a note when this run has no such image."""
    if not examples:
        return Markdown("No held-out test image has LSDA right and the classification network wrong in this run.")
    return before_after(examples, names)


def held_out_fp_figure(fps: dict[str, dict[str, Any]]):
    """LSDA Figure 5: the held-out FP-type trend of each detector (`lsda.held_out_fps`)."""
    fig, axes = viz.figure(1, len(fps), width=4 * len(fps), height=3.0, squeeze=False)
    for k, (ax, (name, f)) in enumerate(zip(axes[0], fps.items())):
        fp_trend(ax, f["trend"], f"{name}: held-out", legend=k == len(fps) - 1)
    fig.tight_layout()
    return fig


def sweep_figure(table: pd.DataFrame, key: str):
    """`lsda sweep`'s table: each metric against the grid's first parameter (one panel per
    metric; other grid parameters as separate lines)."""
    metrics = list(table.columns)
    fig, axes = viz.figure(1, len(metrics), width=3.2 * len(metrics), height=3.0, squeeze=False)
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
