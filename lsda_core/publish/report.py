"""Tables and findings for the chapters: our numbers beside the paper's, and plain
statements of which of the paper's findings replicate, each with its size and its noise."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from lsda_core.publish import paper
from lsda_core.detection.pipeline import DetectorResult

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
             claims: Sequence[tuple[str, str, str, float]], maps: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per claim (text, detector a, detector b, the paper's mAP(a) - mAP(b)): ours
    with its bootstrap std, the paper's, and the verdict. `maps`: mAP (%) per detector to
    compare instead of each result's own (e.g. over LSDA's held-out categories only)."""
    m = maps if maps is not None else {k: 100 * r.map for k, r in results.items()}
    rows = []
    for text, a, b, paper_delta in claims:
        if a not in m or b not in m:
            continue
        _, s = difference(spread, a, b)
        rows.append({"finding": text, "ours (points)": round(m[a] - m[b], 1),
                     "bootstrap std": round(s, 1), "paper (points)": round(paper_delta, 2),
                     "verdict": verdict(m[a] - m[b], s, paper_delta)})
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


# ---------------------------------------------------------------------------------------
# LSDA

def lsda_paper_row(name: str, n_b: int) -> str | None:
    """The paper's Table 1 row for one of ours: the |B|-neighbour transfer is its k = 100."""
    if name.endswith(f"(k={n_b})") and "Avg NN" in name:
        name = name.replace(f"(k={n_b})", "(k=100)")
    return name if name in paper.LSDA_TABLE1 else None


def lsda_table(maps: dict[str, dict[str, float]], n_b: int) -> pd.DataFrame:
    """Table 1: mAP (%) on the trained (B), held-out (A) and all categories per detector,
    ours beside the paper's ILSVRC2013 val2 numbers (`maps`: `lsda.split_maps` per row)."""
    rows = []
    for name, m in maps.items():
        ref = lsda_paper_row(name, n_b)
        pb, pa, pall = paper.LSDA_TABLE1[ref] if ref else (np.nan,) * 3
        rows.append({"detector": name, "trained (B)": m["trained (B)"], "held-out (A)": m["held-out (A)"],
                     "all": m["all"], "paper trained": pb, "paper held-out": pa, "paper all": pall})
    return pd.DataFrame(rows).set_index("detector").round(2)


def lsda_discussion(table: pd.DataFrame, ttest: dict[str, float], seeds: pd.DataFrame, full: str, lsda: str,
                    cls: str, oracle: str, n_b: int, n_a: int) -> "Markdown":
    """The LSDA chapter's closing discussion, written from this run's numbers."""
    from IPython.display import Markdown

    a = table["held-out (A)"]
    b = table["trained (B)"]
    gain = seeds["LSDA"] - seeds["classification network"]
    adapt_rows = [r for r in table.index if r.startswith("fcbgrnd") and "Avg NN" not in r]
    best = max(adapt_rows, key=lambda r: a[r])
    lines = [
        f"* **Held-out categories.** The classification network detects the {n_a} held-out categories at "
        f"{a[cls]:.1f} mAP; full LSDA (k from the parameters) at {a[lsda]:.1f} (paper: 10.31 to 16.15). "
        f"Over {len(seeds)} seeds the gain is {gain.mean():+.1f} ± {gain.std(ddof=1) if len(gain) > 1 else float('nan'):.1f} "
        f"points (mean ± std); the paired t-test over per-category AP in the main run gives p = {ttest['p']:.3g} "
        f"(paper p = {paper.LSDA_T_TEST_P}).",
        f"* **Which layers matter.** Among the adaptations, *{best}* gives the held-out categories the most "
        f"({a[best]:.1f}); the background output alone gives {a['fcbgrnd']:.1f} (paper 12.22) and adapting "
        f"every layer {a[full]:.1f} (paper 15.85). On the {n_b} trained categories, the rows that also adapt "
        f"their own classifiers (+fcB) reach {b['fcbgrnd,fc6,fc7,fcB']:.1f} against {b['fcbgrnd,fc6,fc7']:.1f} "
        "without (paper 26.33 and 25.78).",
        f"* **Category-specific transfer.** Moving each held-out classifier by its neighbours' change takes "
        f"the held-out mAP from {a[full]:.1f} to {a[lsda]:.1f} (paper +0.30 for k = 10)."
        + (f" Here adapting every layer without that step *lowers* held-out mAP below the classification "
           f"network's ({a[cls]:.1f} to {a[full]:.1f}): the shared layers move towards detection while set A's "
           "classifiers still read the features they were trained on, and the transfer is what moves them along."
           if a[full] < a[cls] else ""),
        f"* **Oracle.** With boxes for every category the same network reaches {a[oracle]:.1f} on the "
        f"held-out half (paper 26.25): the gap LSDA leaves is {a[oracle] - a[lsda]:.1f} points "
        "(paper 10.1).",
        "",
        "Why results may differ from the paper's: the network is small and pre-trained on synthetic images; "
        "the benchmark has far fewer categories, images and boxes, so per-category APs are noisy and a "
        "t-test over a few dozen categories has little power; the world's categories of one superclass share "
        "a body template, which makes the neighbours of the transfer unusually informative (or, where colour "
        "and texture dominate, unusually misleading); and the oracle here sees set A's boxes only in val1. "
        "Nothing in the world was tuned to bring these numbers closer to the paper's.",
    ]
    return Markdown("\n".join(lines))


def large_discussion(maps: list[dict[str, float]], n_boxed: int, n_unboxed: int) -> "Markdown":
    """The large-scale chapter's closing lines, from this run's numbers."""
    from IPython.display import Markdown

    by = {m["detector"]: m for m in maps}
    cls, lsda = by["classification network"], by["LSDA"]
    return Markdown(
        f"On the {n_unboxed} categories learnt from classification data alone, LSDA detects at "
        f"{lsda['without boxes']:.1f} mAP against {cls['without boxes']:.1f} for the classification network "
        f"({lsda['without boxes'] - cls['without boxes']:+.1f} points); on the {n_boxed} categories with boxes, "
        f"{lsda['with boxes']:.1f} against {cls['with boxes']:.1f}. The paper gives no such number for its "
        "7604-category detector (ImageNet has no boxes for most of its categories); the world does, so this "
        "chapter can say how much of the detection quality on box-less categories the adaptation buys. The "
        "large view's training set is small and most categories appear in few test scenes, so per-category APs "
        "here are noisy.")
