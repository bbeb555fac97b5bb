"""Tables and findings for the chapters: our numbers beside the paper's, and plain
statements of which of the paper's findings replicate, each with its size and its noise."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from lsda_core import paper
from lsda_core.rcnn import DetectorResult

# Our Table 2 rows and the paper's row each corresponds to.
TABLE2_PAPER_ROW = {
    "pool5": "R-CNN pool5", "fc6": "R-CNN fc6", "fc7": "R-CNN fc7",
    "FT pool5": "R-CNN FT pool5", "FT fc6": "R-CNN FT fc6", "FT fc7": "R-CNN FT fc7",
    "HOG + linear SVM (stand-in for DPM HOG)": "DPM HOG",
}


def ap_table(results: Sequence[DetectorResult], classes: Sequence[str],
             spread: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Per-class AP (%) and mAP per detector, with the bootstrap std of mAP and the paper's
    VOC 2007 mAP of the corresponding row (blank where the paper has none)."""
    rows = []
    for r in results:
        row = {"detector": r.name}
        row.update({c: 100 * r.ap[c] for c in classes})
        row["mAP"] = 100 * r.map
        if spread is not None:
            row["± (bootstrap std)"] = 100 * float(np.std(spread[r.name])) if r.name in spread else np.nan
        ref = TABLE2_PAPER_ROW.get(r.name)
        row["paper mAP (VOC 2007)"] = paper.RCNN_TABLE2[ref][1] if ref else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("detector").round(1)


def paper_per_class(classes: Sequence[str]) -> pd.DataFrame | None:
    """The paper's per-class Table 2 for the classes we evaluate, when they are VOC's."""
    idx = [paper.VOC_CLASSES.index(c) for c in classes if c in paper.VOC_CLASSES]
    if len(idx) != len(classes):
        return None
    return pd.DataFrame({row: [aps[i] for i in idx] + [m] for row, (aps, m) in paper.RCNN_TABLE2.items()},
                        index=list(classes) + ["mAP"]).T


def difference(spread: dict[str, np.ndarray], a: str, b: str) -> tuple[float, float]:
    """Mean and std over bootstrap resamples of mAP(a) - mAP(b), in points."""
    d = 100 * (spread[a] - spread[b])
    return float(d.mean()), float(d.std())


def verdict(ours: float, noise: float, paper_delta: float) -> str:
    """Whether a difference of `ours` points (bootstrap std `noise`) agrees in sign with the
    paper's `paper_delta`, and whether it stands out from the noise (|d| > 2 std)."""
    clear = abs(ours) > 2 * noise
    same = np.sign(ours) == np.sign(paper_delta)
    if same and clear:
        return "replicates"
    if same:
        return "same direction, within noise"
    if clear:
        return "does not replicate (opposite, beyond noise)"
    return "does not replicate (opposite, within noise)"


def findings(results: dict[str, DetectorResult], spread: dict[str, np.ndarray],
             claims: Sequence[tuple[str, str, str, float]]) -> pd.DataFrame:
    """One row per claim (text, detector a, detector b, the paper's mAP(a) - mAP(b)): ours
    with its bootstrap std, the paper's, and the verdict."""
    rows = []
    for text, a, b, paper_delta in claims:
        if a not in results or b not in results:
            continue
        d, s = difference(spread, a, b)
        rows.append({"finding": text, "ours (points)": round(100 * (results[a].map - results[b].map), 1),
                     "bootstrap std": round(s, 1), "paper (points)": paper_delta,
                     "verdict": verdict(100 * (results[a].map - results[b].map), s, paper_delta)})
    return pd.DataFrame(rows)


def rcnn_discussion(results: dict[str, DetectorResult], grid: dict[float, DetectorResult],
                    grid_spread: dict[str, np.ndarray], classes: Sequence[str]) -> "Markdown":
    """The chapter's closing discussion, written from this run's numbers."""
    from IPython.display import Markdown

    m = {k: 100 * r.map for k, r in results.items()}
    cnn = {k: v for k, v in m.items() if k in ("pool5", "fc6", "fc7", "FT pool5", "FT fc6", "FT fc7")}
    best = max(cnn, key=cnn.get)
    hog = next((v for k, v in m.items() if k.startswith("HOG")), float("nan"))
    best_t = max(grid, key=lambda t: grid[t].map)
    aps = np.array([100 * results["FT fc7"].ap[c] for c in classes])
    aps = aps[~np.isnan(aps)]
    lines = [
        f"* **Best features.** The best CNN row here is *{best}* at {cnn[best]:.1f} mAP; in the paper it is "
        f"FT fc7 at 48.0. Fine-tuning moved fc7 by {m['FT fc7'] - m['fc7']:+.1f} points (paper +5.4) and pool5 by "
        f"{m['FT pool5'] - m['pool5']:+.1f} (paper +2.0).",
        f"* **Against HOG.** The HOG + linear SVM stand-in scores {hog:.1f}, {m['FT fc7'] - hog:+.1f} points from FT fc7 "
        f"(paper: DPM HOG 33.7, {48.0 - 33.7:+.1f}). Our stand-in has none of DPM's parts or deformations, so it "
        "is a weaker baseline than the paper's DPM.",
        f"* **Negatives.** The grid's best threshold here is {best_t:.1f} (paper 0.3); "
        f"0.5 is {100 * (grid[0.5].map - grid[best_t].map):+.1f} and 0 is {100 * (grid[0.0].map - grid[best_t].map):+.1f} "
        "points from the best (paper: -5 and -4)." if 0.0 in grid and 0.5 in grid else
        f"* **Negatives.** The grid's best threshold here is {best_t:.1f} (paper 0.3).",
        f"* **Per class.** FT fc7's AP ranges from {aps.min():.1f} to {aps.max():.1f} over the {len(aps)} classes "
        "(median {:.1f}).".format(float(np.median(aps)))
        if len(aps) else "",
        "",
        "Why results may differ from the paper's: the network here is far smaller and was pre-trained on a few "
        "thousand synthetic images rather than 1.2 million photographs, so its pool5 features are less rich and "
        "fine-tuning has more to add (or, with so little detection data, more room to overfit); the world's "
        "objects have cleaner outlines than real ones, which helps selective search and the HOG baseline; and "
        "the test set is small, so differences within about two bootstrap standard deviations should be read "
        "as ties. The world was not tuned to bring any of these numbers closer to the paper's.",
    ]
    return Markdown("\n".join(line for line in lines if line is not None))
