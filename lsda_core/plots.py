"""The chapters' figures (in the house style of lsda_core.viz): training curves, mAP bars,
threshold grids and example detections."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lsda_core import viz
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
    ax.axvline(0.3, color=viz.PALETTE[1], linestyle="--", label="paper's choice (0.3)")
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
