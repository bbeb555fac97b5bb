"""The segmentation chapter's tables, figure and findings (R-CNN section 5, Tables 3 and 4)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from IPython.display import Markdown

from lsda_core.core.params import Params
from lsda_core.data.images import load_image
from lsda_core.evaluation import segmentation as S
from lsda_core.evaluation.stats import Seeded, effect
from lsda_core.experiments import segmentation as SG
from lsda_core.publish import findings as F
from lsda_core.publish import paper, viz
from lsda_core.publish.tables import Table, readable

PALETTE_VOID = (255, 255, 255)


def benchmark(sb: SG.SegBenchmark) -> Table:
    """Images, objects and mask proposals of the two splits, with O2P's proposal quality
    (best overlap per object); and of the eval split's whole pool when a ranking chose from it."""
    rows = []
    splits = [("train (SVRs, threshold)", sb.train), ("eval (Table 3)", sb.eval)]
    if sb.pools["eval"] is not sb.eval:  # a learned ranking chose the kept masks from a pool
        splits.append(("eval, every candidate (the pool ranked)", sb.pools["eval"]))
    for label, split in splits:
        q = SG.proposal_quality(split)
        rows.append({"split": f"{split.dataset.split}: {label}", "images": len(split.ids), "objects": q["objects"],
                     "masks per image": q["per_image"], "mean best overlap": q["mean_best_overlap"],
                     "objects at IoU >= 0.5": q["recall_50"]})
    return readable(pd.DataFrame(rows).set_index("split"), 2, column_digits={"masks per image": 1})


def table3(rows: dict[str, SG.SegRow], seeded: Seeded) -> Table:
    """Mean accuracy (%) of every row, its bootstrap spread over the eval images and the pasting
    threshold chosen on train, beside the paper's Table 3 (VOC 2011 val); O2P as the paper's
    reference row (not run here)."""
    out = [{"features": "O2P (second-order pooling; not run here)", "ours": None, "± (bootstrap std)": None,
            "threshold": None, "paper (VOC 2011 val)": paper.RCNN_TABLE3["O2P"]}]
    for name, r in rows.items():
        out.append({"features": name, "ours": 100 * r.score, "± (bootstrap std)": 100 * float(np.std(seeded.samples[name])),
                    "threshold": r.threshold, "paper (VOC 2011 val)": paper.RCNN_TABLE3.get(name)})
    return readable(pd.DataFrame(out).set_index("features"), 1, column_digits={"threshold": 2})


def per_class(rows: dict[str, SG.SegRow], classes: list[str]) -> Table:
    """Table 4's shape: accuracy (%) per class (background first) and the mean, every row; the
    world's classes are not VOC's, so the paper's per-class numbers stand in `paper_table4`."""
    data = {}
    for name, r in rows.items():
        s = S.score(r.confusion.sum(0), classes)
        data[name] = {**{c: 100 * v for c, v in s["iou"].items()}, "mean": 100 * s["mean"]}
    t = pd.DataFrame(data).T
    return readable(t.rename_axis("features"), 1, main=["background", "mean"], detail="Every class")


def table4(row: SG.SegRow | None, classes: list[str], p: Params) -> Table | Markdown:
    """Table 4's counterpart: the paper's best row evaluated once on the test split, its 95 %
    bootstrap interval over test images (`rcnn.bootstrap` resamples), per class in the detail,
    beside the paper's three Table 4 rows (their classes are VOC's: means and background only)."""
    if row is None:
        return Markdown("Table 4 is not run: `segmentation.test_split` is unset.")
    s = S.score(row.confusion.sum(0), classes)
    seeded = SG.seeded(p, {row.name: row})
    eff = effect([(row.name, 1.0)], seeded.points, seeded.samples, p.runtime.seed)
    out = [{"row": f"{row.name}, this run ({p.segmentation.test_split} split)", "background": 100 * s["iou"][classes[0]],
            "mean": 100 * s["mean"], "95 % interval": f"{eff.lo:.1f} to {eff.hi:.1f}",
            **{c: 100 * s["iou"][c] for c in classes[1:]}}]
    for name, (v, m) in paper.RCNN_TABLE4.items():
        out.append({"row": f"{name}, the paper (VOC 2011 test)", "background": v[0], "mean": m})
    return readable(pd.DataFrame(out).set_index("row"), 1, main=["background", "mean", "95 % interval"],
                    detail="Every class of this run")


def paper_table4() -> Table:
    """R-CNN's Table 4 as printed (VOC 2011 test, per class), for the shape of ours."""
    t = pd.DataFrame({name: {**dict(zip(paper.SEG_CLASSES, v)), "mean": m} for name, (v, m) in paper.RCNN_TABLE4.items()}).T
    return readable(t.rename_axis("the paper's row"), 1, main=["background", "mean"], detail="Every class")


def _colour(labels: np.ndarray, n: int) -> np.ndarray:
    """An RGB picture of a labelling: background black, class k a palette colour, void white."""
    colours = np.array([(0, 0, 0)] + viz.palette_rgb(n - 1), np.uint8)
    out = colours[np.minimum(labels, n - 1)]
    out[labels == S.VOID] = PALETTE_VOID
    return out


def examples_figure(sb: SG.SegBenchmark, rows: dict[str, SG.SegRow], names: tuple[str, ...]) -> viz.Captioned:
    """Eval images with their ground truth (void white) and the labellings of `names`, with each
    labelling's accuracy on its image."""
    first = rows[names[0]]
    ids = list(first.examples)
    n = len(sb.classes)
    fig, axes = viz.figure(len(ids), 2 + len(names), width=2.0 * (2 + len(names)), height=1.6 * len(ids),
                           squeeze=False)
    per_image = {}
    for r, image_id in enumerate(ids):
        k = sb.eval.ids.index(image_id)
        panels = [("image", load_image(sb.eval.dataset.images[k].path)), ("ground truth", _colour(sb.eval.truth[image_id], n))]
        for name in names:
            acc = 100 * S.score(rows[name].confusion[k], range(n))["mean"]
            per_image.setdefault(name, []).append(acc)
            panels.append((f"{name}: {acc:.0f}", _colour(rows[name].examples[image_id], n)))
        for ax, (title, pic) in zip(axes[r], panels):
            ax.imshow(pic, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(title, fontsize=8)
    best = max(names, key=lambda nm: rows[nm].score)
    caption = (f"Eval images, their ground truth (void border white) and the labellings pasted from the "
               f"{', '.join(names)} rows; titles give each labelling's mean class accuracy on its image. "
               f"Over the whole eval split, {best} is the best of these ({100 * rows[best].score:.1f} %).")
    return viz.Captioned(fig, caption)


def findings(p: Params, seeded: Seeded, folder: str | None = None,
             measured: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """R-CNN's segmentation claims (`paper.SEG_CLAIMS`) judged on the rows (one network: the
    intervals cover the eval images); handed to the build with the chapter's premises
    (`measured`) when `folder` is given."""
    found = F.judge(paper.SEG_CLAIMS, seeded.points, seeded.samples, "segmentation", seed=p.runtime.seed)
    F.write_part(folder, "segmentation", found, F.premise_rows(measured or {}))
    return found


def discussion(rows: dict[str, SG.SegRow]) -> Markdown:
    """What the rows say, in words, from the numbers (fc6 vs fc7 per strategy, the best row)."""
    acc = {k: 100 * r.score for k, r in rows.items()}
    fc6_wins = [s for s in SG.STRATEGIES if acc[f"{s} fc6"] > acc[f"{s} fc7"]]
    best = max(acc, key=acc.get)
    lines = [f"fc6 is above fc7 for {len(fc6_wins)} of {len(SG.STRATEGIES)} strategies "
             f"({', '.join(fc6_wins) if fc6_wins else 'none'}); the paper found it for all three.",
             f"The best row is {best} ({acc[best]:.1f} %); the paper's is full+fg fc6 "
             f"({paper.RCNN_TABLE3['full+fg fc6']:.1f} %)."]
    if SG.FT_ROW in acc:
        d = acc[SG.FT_ROW] - acc["full+fg fc6"]
        lines.append(f"Fine-tuning for detection moves full+fg fc6 by {d:+.1f} points (the paper did not run it; "
                     f"it expected a gain).")
    return Markdown("\n".join(f"- {ln}" for ln in lines))
