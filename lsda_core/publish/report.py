"""Tables and findings for the chapters: our numbers beside the paper's, and plain
statements of which of the paper's findings replicate, each with its size and its noise."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from IPython.display import Markdown

from lsda_core.core.params import Params
from lsda_core.publish import findings as F
from lsda_core.publish import paper
from lsda_core.publish.book import presentable_path
from lsda_core.publish.tables import DASH, Table, readable
from lsda_core.detection import pipeline as DP
from lsda_core.detection.pipeline import DetectorResult
from lsda_core.evaluation import hoiem as An
from lsda_core.evaluation import stats
from lsda_core.experiments import lsda as L
from lsda_core.experiments import rcnn as R
from lsda_core.experiments import sweep
from lsda_core.perf import bench as BM

# Our R-CNN rows and the paper's row each corresponds to (its mAP: paper.RCNN_MAP).
RCNN_PAPER_ROW = {
    "pool5": "R-CNN pool5", "fc6": "R-CNN fc6", "fc7": "R-CNN fc7",
    "FT pool5": "R-CNN FT pool5", "FT fc6": "R-CNN FT fc6", "FT fc7": "R-CNN FT fc7",
    R.HOG_ROW: "DPM HOG", R.GRAY_ROW: "R-CNN fc6, grayscale",
}


AP_MAIN = ("mAP", "± (bootstrap std)", "paper mAP (VOC 2007)")  # Table 2's compact columns


def ap_table(results: Sequence[DetectorResult], classes: Sequence[str],
             spread: dict[str, np.ndarray] | None = None) -> Table:
    """Per-class AP (%) and mAP per detector, with the bootstrap std of mAP and the paper's
    VOC 2007 mAP of the corresponding row (NaN, shown as a dash, where the paper has none).
    Shown compact (`AP_MAIN`), the per-class APs in a collapsed block."""
    rows = []
    for r in results:
        row = {"detector": r.name}
        row.update({c: 100 * r.ap[c] for c in classes})
        row["mAP"] = 100 * r.map
        if spread is not None:
            row["± (bootstrap std)"] = 100 * float(np.std(spread[r.name])) if r.name in spread else np.nan
        ref = RCNN_PAPER_ROW.get(r.name)
        row["paper mAP (VOC 2007)"] = paper.RCNN_MAP[ref] if ref else np.nan
        rows.append(row)
    return readable(pd.DataFrame(rows).set_index("detector").round(1), 1, main=AP_MAIN,
                    detail="Per-class AP (%) of every detector (one row per class)")


def paper_per_class(classes: Sequence[str]) -> Table | Markdown:
    """The paper's per-class Table 2 for the classes we evaluate, when they are VOC's (else a
    note): each row's mAP, the per-class APs in a collapsed block."""
    idx = [paper.VOC_CLASSES.index(c) for c in classes if c in paper.VOC_CLASSES]
    if len(idx) != len(classes):
        return Markdown("The benchmark's classes are not VOC's, so the paper's per-class APs have no counterpart "
                        "here; its mAP per row is in the last column above.")
    t = pd.DataFrame({row: [aps[i] for i in idx] + [m] for row, (aps, m) in paper.RCNN_TABLE2.items()},
                     index=list(classes) + ["mAP"]).T
    return readable(t.rename_axis("the paper's row"), 1, main=["mAP"],
                    detail="The paper's per-class AP (%) (one row per class)")


def rcnn_discussion(parts: Sequence[R.Comparison], neg_iou: R.NegIouGrid, classes: Sequence[str]) -> Markdown:
    """The chapter's closing discussion, written from this run's numbers (every detector of `parts`)
    and the paper's."""
    results, grid, pm, chosen = R.merged(*parts).results, neg_iou.results, paper.RCNN_MAP, paper.RCNN_NEG_IOU_CHOSEN
    cost = {t: f"{-c:.0f}" for t, c in paper.RCNN_NEG_IOU_COST.items()}
    m = {k: 100 * r.map for k, r in results.items()}
    cnn = {k: v for k, v in m.items() if k in ("pool5", "fc6", "fc7", "FT pool5", "FT fc6", "FT fc7")}
    best = max(cnn, key=cnn.get)
    hog = next((v for k, v in m.items() if k.startswith("HOG")), float("nan"))
    best_t = max(grid, key=lambda t: grid[t].map)
    aps = np.array([100 * results["FT fc7"].ap[c] for c in classes])
    aps = aps[~np.isnan(aps)]
    lines = [
        f"* **Best features.** The best CNN row here is *{best}* at {cnn[best]:.1f} mAP; in the paper it is "
        f"FT fc7 at {pm['R-CNN FT fc7']:.1f}. Fine-tuning moved fc7 by {m['FT fc7'] - m['fc7']:+.1f} points (paper "
        f"{pm['R-CNN FT fc7'] - pm['R-CNN fc7']:+.1f}) and pool5 by {m['FT pool5'] - m['pool5']:+.1f} (paper "
        f"{pm['R-CNN FT pool5'] - pm['R-CNN pool5']:+.1f}).",
        f"* **Against HOG.** The HOG + linear SVM stand-in scores {hog:.1f}, {m['FT fc7'] - hog:+.1f} points from FT fc7 "
        f"(paper: DPM HOG {pm['DPM HOG']:.1f}, {pm['R-CNN FT fc7'] - pm['DPM HOG']:+.1f}). Our stand-in has none of "
        "DPM's parts or deformations, so it is a weaker baseline than the paper's DPM.",
        f"* **Negatives.** The grid's best threshold here is {best_t:.1f} (paper {chosen:.1f}); "
        f"0.5 is {100 * (grid[0.5].map - grid[best_t].map):+.1f} and 0 is {100 * (grid[0.0].map - grid[best_t].map):+.1f} "
        f"points from the best (paper: {cost[0.5]} and {cost[0.0]})."
        if 0.0 in grid and 0.5 in grid else
        f"* **Negatives.** The grid's best threshold here is {best_t:.1f} (paper {chosen:.1f}).",
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


LSDA_PAPER_COLUMNS = ("paper trained", "paper held-out", "paper all")  # the paper's two decimals


def lsda_table(maps: dict[str, dict[str, float]], n_b: int) -> Table:
    """Table 1: mAP (%) on the trained (B), held-out (A) and all categories per detector,
    ours beside the paper's ILSVRC2013 val2 numbers (`maps`: `lsda.split_maps` per row)."""
    rows = []
    for name, m in maps.items():
        ref = lsda_paper_row(name, n_b)
        pb, pa, pall = paper.LSDA_TABLE1[ref] if ref else (np.nan,) * 3
        rows.append({"detector": name, "trained (B)": m["trained (B)"], "held-out (A)": m["held-out (A)"],
                     "all": m["all"], "paper trained": pb, "paper held-out": pa, "paper all": pall})
    return readable(pd.DataFrame(rows).set_index("detector").round(2), 1,
                    column_digits=dict.fromkeys(LSDA_PAPER_COLUMNS, 2))


def lsda_discussion(table: pd.DataFrame, held: L.HeldOut, seeded: stats.Seeded, n_b: int,
                    n_a: int) -> Markdown:
    """The LSDA chapter's closing discussion, written from this run's numbers and the paper's
    (`seeded`: `lsda.seeded`'s rows per training seed)."""
    full, lsda, cls, oracle = L.FULL_ROW, held.lsda, L.CLS_ROW, L.ORACLE_ROW
    ttest = {t["key"]: t for t in held.ttests}
    pa = {row: v[1] for row, v in paper.LSDA_TABLE1.items()}  # the paper's held-out mAP per row
    pb = {row: v[0] for row, v in paper.LSDA_TABLE1.items()}  # and its trained-categories mAP
    a = table["held-out (A)"]
    b = table["trained (B)"]
    gain = pd.Series(100 * seeded.points[lsda] - a[cls])
    adapt_rows = [r for r in table.index if r.startswith("fcbgrnd") and "Avg NN" not in r]
    best = max(adapt_rows, key=lambda r: a[r])
    lines = [
        f"* **Held-out categories.** The classification network detects the {n_a} held-out categories at "
        f"{a[cls]:.1f} mAP; full LSDA (k from the parameters) at {a[lsda]:.1f} (paper: {pa[cls]:.2f} to "
        f"{pa[paper.LSDA_ROW]:.2f}). "
        f"Over {len(gain)} seeds the gain is {gain.mean():+.1f} ± {gain.std(ddof=1) if len(gain) > 1 else float('nan'):.1f} "
        f"points (mean ± std); paired t-tests over per-category AP in the main run give p = {ttest['classification']['p']:.3g} "
        f"against the classification network (the paper gives none) and p = {ttest['transfer']['p']:.3g} for the "
        f"transfer against the adapted network without it (paper p = {paper.LSDA_T_TESTS['transfer']}).",
        f"* **Which layers matter.** Among the adaptations, *{best}* gives the held-out categories the most "
        f"({a[best]:.1f}); the background output alone gives {a['fcbgrnd']:.1f} (paper {pa['fcbgrnd']:.2f}) and "
        f"adapting every layer {a[full]:.1f} (paper {pa[full]:.2f}). On the {n_b} trained categories, the rows that "
        f"also adapt their own classifiers (+fcB) reach {b['fcbgrnd,fc6,fc7,fcB']:.1f} against "
        f"{b['fcbgrnd,fc6,fc7']:.1f} without (paper {pb['fcbgrnd,fc6,fc7,fcB']:.2f} and {pb['fcbgrnd,fc6,fc7']:.2f}).",
        f"* **Category-specific transfer.** Moving each held-out classifier by its neighbours' change takes "
        f"the held-out mAP from {a[full]:.1f} to {a[lsda]:.1f} (paper {pa[paper.LSDA_ROW] - pa[full]:+.2f} for "
        f"k = {paper.LSDA_K})."
        + (f" Here adapting every layer without that step *lowers* held-out mAP below the classification "
           f"network's ({a[cls]:.1f} to {a[full]:.1f}): the shared layers move towards detection while set A's "
           "classifiers still read the features they were trained on, and the transfer is what moves them along."
           if a[full] < a[cls] else ""),
        f"* **Oracle.** With boxes for every category the same network reaches {a[oracle]:.1f} on the "
        f"held-out half (paper {pa[oracle]:.2f}): the gap LSDA leaves is {a[oracle] - a[lsda]:.1f} points "
        f"(paper {pa[oracle] - pa[paper.LSDA_ROW]:.1f}).",
        "",
        "Why results may differ from the paper's: the network is small and pre-trained on synthetic images; "
        "the benchmark has far fewer categories, images and boxes, so per-category APs are noisy and a "
        "t-test over a few dozen categories has little power; the world's categories of one superclass share "
        "a body template, which makes the neighbours of the transfer unusually informative (or, where colour "
        "and texture dominate, unusually misleading). "
        "Nothing in the world was tuned to bring these numbers closer to the paper's.",
    ]
    return Markdown("\n".join(lines))


def large_discussion(maps: list[dict[str, float]], n_boxed: int, n_unboxed: int) -> Markdown:
    """The large-scale chapter's closing lines, from this run's numbers."""
    by = {m["detector"]: m for m in maps}
    cls, lsda = by["classification network"], by["LSDA"]
    return Markdown(
        f"On the {n_unboxed} categories learnt from classification data alone, LSDA detects at "
        f"{lsda['without boxes']:.1f} mAP against {cls['without boxes']:.1f} for the classification network "
        f"({lsda['without boxes'] - cls['without boxes']:+.1f} points); on the {n_boxed} categories with boxes, "
        f"{lsda['with boxes']:.1f} against {cls['with boxes']:.1f}. The paper gives no such number for its "
        f"{paper.LSDA_LARGE_CATEGORIES}-category detector (ImageNet has no boxes for most of its categories); the "
        "world does, so this chapter can say how much of the detection quality on box-less categories the "
        "adaptation buys. The large view's training set is small and most categories appear in few test scenes, "
        "so per-category APs here are noisy.")


# ---------------------------------------------------------------------------------------
# the chapters' smaller tables and notes (so that a chapter holds no table-building code)

def seed_table(seeded: stats.Seeded) -> Table:
    """mAP (%) per training seed of every row retrained with each, then the mean and the
    standard deviation over the seeds."""
    t = pd.DataFrame(seeded.table()).set_index("seed")
    return readable(pd.concat([t, pd.DataFrame({"mean": t.mean(), "std": t.std(ddof=1)}).T]).round(2), 1)


def rcnn_benchmark(bench: DP.Benchmark) -> Markdown:
    """One line: the R-CNN benchmark's classes and splits."""
    return Markdown(f"{len(bench.classes)} classes; {len(bench.train)} {bench.train.split} and {len(bench.test)} "
                    f"{bench.test.split} images")


def recall_table(bench: DP.Benchmark) -> Table:
    """Proposal recall at IoU 0.5 and 0.7 and proposals per image, per split (`recall_table`)."""
    return readable(pd.DataFrame(DP.recall_table(bench)).round(3), 3)


def training_note(nets: dict[str, Any]) -> Markdown:
    """One line: where the pre-trained network came from, and how long both trainings took
    (shown above `pretraining_epochs`' table)."""
    pre_h, ft_h = nets["pretrain_history"], nets["finetune_history"]
    return Markdown(f"pre-training: {pre_h.get('source')}, {pre_h.get('seconds')} s; "
                    f"fine-tuning: {ft_h.get('seconds')} s")


def pretraining_epochs(nets: dict[str, Any], last: int = 5) -> Table:
    """The training note (`training_note`), then the last epochs of pre-training: loss and
    validation accuracy."""
    from IPython.display import display
    display(training_note(nets))
    return readable(pd.DataFrame(nets["pretrain_history"].get("epochs", [])).round(3).tail(last), 3)


def fp_impact_table(diag: R.Diagnosis) -> Table:
    """mAP points gained per detector if each false-positive type were removed (Figure 4's table)."""
    return readable(pd.DataFrame({label: {f"{t} (mAP +)": 100 * r["ap_impact"]["gain"][t] for t in An.FP_TYPES}
                                  for label, r in diag.results.items()}).round(1), 1)


def sensitivity_table(diag: R.Diagnosis) -> Table:
    """Sensitivity and impact (normalised AP points) per object characteristic and detector (Figure 5)."""
    return readable(pd.DataFrame({label: {f"{k} {m}": 100 * v[m]
                                          for k, v in r["characteristics"]["per_characteristic"].items()
                                          for m in ("sensitivity", "impact")}
                                  for label, r in diag.results.items()}).round(1), 1)


def receptive_field(units: R.Pool5Units) -> Markdown:
    """One line: a pool5 unit's receptive field here, beside CaffeNet's (the paper-size network)."""
    size, stride, input_size = units.caffenet
    return Markdown(f"pool5 receptive field: {units.receptive_field} x {units.receptive_field} px of the "
                    f"{units.input_size} px input, stride {units.stride} px (CaffeNet: {size} px of {input_size}, "
                    f"stride {stride})")


def neg_iou_table(grid: R.NegIouGrid) -> Table:
    """mAP and its bootstrap std per negative-overlap threshold, with the paper's cost of each
    threshold against its chosen one (where the paper gives it)."""
    paper_cost = {paper.RCNN_NEG_IOU_CHOSEN: 0.0, **{t: -c for t, c in paper.RCNN_NEG_IOU_COST.items()}}
    t = pd.DataFrame({"mAP": {t: 100 * r.map for t, r in grid.results.items()},
                      "± (bootstrap std)": {t: 100 * grid.spread[r.name].std() for t, r in grid.results.items()},
                      "paper (points from its best)": paper_cost}).round(1)
    return readable(t.rename_axis("negatives: IoU below"), 1)


def grayscale_table(gray: R.Comparison) -> Table:
    """fc6 on colour and on grayscale images, ours beside the paper's mAP."""
    return readable(pd.DataFrame({"ours mAP": [100 * r.map for r in gray.results.values()],
                                  "paper mAP": [paper.RCNN_MAP[RCNN_PAPER_ROW[name]] for name in gray.results]},
                                 index=["fc6, colour", "fc6, grayscale"]).round(1), 1)


def softmax_table(soft: R.Comparison) -> Table:
    """FT fc7 scored by its SVMs and by the network's own softmax."""
    return readable(pd.DataFrame({"mAP": [100 * r.map for r in soft.results.values()]},
                                 index=["FT fc7 + SVMs", "FT softmax"]).round(1), 1)


def rcnn_timing_table(timing: dict[str, float]) -> Table:
    """Seconds per image of each step, ours, beside the paper's totals on a GPU and a CPU."""
    return readable(pd.DataFrame({
        "ours (s / image)": {k: timing[k] for k in ("proposals", "features", "scoring", "total")},
        "paper GPU (s / image)": {"total": paper.RCNN_SECONDS_PER_IMAGE["gpu"]},
        "paper CPU (s / image)": {"total": paper.RCNN_SECONDS_PER_IMAGE["cpu"]}}).round(3), 3,
        column_digits={"paper GPU (s / image)": None, "paper CPU (s / image)": None})


def rcnn_findings(p: Params, seeded: stats.Seeded, grid: R.NegIouGrid, shares: stats.Seeded,
                  folder: str | None = None, measured: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """R-CNN's claims (`paper.RCNN_CLAIMS`) judged on Table 2 and the colour ablation over the
    training seeds (`rcnn.seeded`), the negative-overlap grid and Figure 4's shares (one seed);
    handed to the build with the chapter's premises (`measured`) when `folder` is given."""
    rows = seeded.add({r.name: r.map for r in grid.results.values()}, grid.spread).merge(shares)
    found = F.judge(paper.RCNN_CLAIMS, rows.points, rows.samples, "rcnn",
                    ours={v: k for k, v in RCNN_PAPER_ROW.items()}, seed=p.runtime.seed)
    F.write_part(folder, "rcnn", found, F.premise_rows(measured or {}))
    return found


def premises(measured: dict[str, float | None]) -> Markdown:
    """The premises a chapter measured (`premises.PREMISES`), paper beside ours, met or not; under
    the table, each unmet premise and what it does to the findings."""
    from IPython.display import display
    rows = F.premise_rows(measured)
    display(readable(F.premises_table(rows)))
    return Markdown(F.unmet_note(rows) or "Every premise measured here is met.")


def show_findings(rows: list[dict[str, Any]]) -> Markdown:
    """Display the judged claims (`findings.table`); returns the verdict rule of every kind of
    claim among them, fixed before any result was seen, as a list under the table."""
    from IPython.display import display
    display(readable(F.table(rows)))
    return Markdown("The verdict of each kind of claim, by a rule fixed before any result was seen:\n\n"
                    + F.rule_text([r["kind"] for r in rows]))


def lsda_sets(lb: L.LsdaBenchmark) -> Table:
    """Images and boxes of the LSDA benchmark's training, oracle-training and test sets."""
    bench = lb.bench
    return readable(pd.DataFrame([
        {"set": "detection training (val1 + train, B boxes only)", "images": len(bench.train),
         "boxes": sum(len(im.objects) for im in bench.train.images)},
        {"set": "oracle training (the same images, every box they have)", "images": len(lb.train_all),
         "boxes": sum(len(im.objects) for im in lb.train_all.images)},
        {"set": "test (val2, every box)", "images": len(bench.test),
         "boxes": sum(len(im.objects) for im in bench.test.images)},
        {"set": f"classification images of the {len(bench.classes)} categories", "images": len(lb.cls_train),
         "boxes": 0},
    ]).set_index("set").assign(categories=f"{len(lb.B)} in B, {len(lb.A)} in A"))


def classification_note(t1: L.Table1, n_classes: int) -> Markdown:
    """One line: the classification network's re-training (epochs, seconds, validation top-1)."""
    h = t1.cls_history
    if not h.get("epochs"):
        return Markdown("classification network: no re-training epochs")
    return Markdown(f"classification network: re-trained {len(h['epochs'])} epochs in {h.get('seconds')} s; "
                    f"val top-1 {h['epochs'][-1].get('val_top1', float('nan')):.3f} over {n_classes} categories")


def adaptation_table(t1: L.Table1) -> Table:
    """Per Table 1 adaptation: how its windows were fed, its seconds and its final loss."""
    return readable(pd.DataFrame([{"row": k, "windows": v.get("windows"), "seconds": v.get("seconds"),
                                   "final loss": v["log"][-1]["loss"] if v.get("log") else np.nan}
                                  for k, v in t1.histories.items()]).set_index("row").round(3), 3,
                    column_digits={"seconds": 1})


def ttest_table(held: L.HeldOut) -> Table:
    """The paired t-tests over held-out APs, each beside the paper's p for the same comparison
    (the paper tested only the transfer against the adapted network without it)."""
    rows = [{"comparison": t["comparison"], "categories": t["n"], "mean difference (points)": t["mean_diff"],
             "t": t["t"], "p": t["p"], "paper p": paper.LSDA_T_TESTS.get(t["key"])} for t in held.ttests]
    return readable(pd.DataFrame(rows).set_index("comparison").round(4), 2,
                    column_digits={"p": 4, "paper p": 4})


def fast_table(fast: L.FastVsWarping) -> Table:
    """The warping and the fast detector: mAP on B, A and all, seconds per image, ours and the paper's."""
    s = paper.LSDA_SECONDS_PER_IMAGE
    return readable(pd.DataFrame([
        {"detector": f"LSDA, warping (k = {fast.k})", **fast.warping_maps, "s / image": fast.timing["warping"],
         "paper s / image": s["warp"]},
        {"detector": "LSDA, fast (SPP)", **fast.fast_maps, "s / image": fast.timing["fast"],
         "paper s / image": s["spp"]},
    ]).set_index("detector").round(3).assign(**{"speed-up": [1.0, round(fast.timing["speed-up"], 1)]}), 1,
                    column_digits={"s / image": 3, "paper s / image": 3})


def _round_spread(t: dict[str, float]) -> str:
    """" (the timing rounds' own speed-ups: 6.1x to 8.6x)", when the timing kept them."""
    if "speed-up, lowest round" not in t:
        return ""
    return f" (the timing rounds' own: {t['speed-up, lowest round']:.1f}x to {t['speed-up, highest round']:.1f}x)"


def fast_scaling_note(fast: L.FastVsWarping) -> Markdown:
    """Where the table's speed-up comes from: each detector's time per image as a fixed part
    plus one per proposal (`bench.speedup_scaling`, from the same timing run), and the speed-up
    those lines give with more proposals, up to the 2000 per image the paper timed."""
    t = fast.timing
    if "fast" + BM.NO_REGION not in t:
        return Markdown("")
    target = paper.LSDA_SECONDS_PER_IMAGE["warp"] / paper.LSDA_SECONDS_PER_IMAGE["spp"]
    s = BM.speedup_scaling(t, target)
    need = s["proposals for target"]
    reach = (f"reaching the paper's {target:.0f}x from {need:.0f} proposals per image" if math.isfinite(need)
             else f"never reaching the paper's {target:.0f}x")
    return Markdown(
        f"Where the speed-up comes from (same timing run): per image the fast detector spends "
        f"{1000 * s['fast fixed']:.1f} ms whatever the proposals (normalising the image, its one pass through "
        f"the conv layers) and {1000 * s['fast per proposal']:.3f} ms per proposal (pooling it, the fc layers); "
        f"the warping one {1000 * s['warping fixed']:.1f} ms and {1000 * s['warping per proposal']:.3f} ms per "
        f"proposal (a warp and the whole network). At this benchmark's {t['proposals / image']:.0f} proposals "
        f"per image that is {t['speed-up']:.1f}x{_round_spread(t)}; more proposals share the one conv "
        f"pass, so the ratio grows towards {s['limit']:.1f}x, {reach} ({BM.speedup_at(s, BM.RCNN_REGIONS):.1f}x at the "
        f"{BM.RCNN_REGIONS} per image the paper timed).")


def lsda_findings(p: Params, seeded: stats.Seeded, shares: stats.Seeded, held: L.HeldOut,
                  folder: str | None = None, measured: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """LSDA's claims (`paper.LSDA_CLAIMS`) on the held-out categories over the training seeds
    (`lsda.seeded`) and Figure 5's shares; the paper's full LSDA (k = 10) is our full LSDA row.
    Handed to the build with the chapter's premises (`measured`) when `folder` is given."""
    rows = seeded.merge(shares)
    found = F.judge(paper.LSDA_CLAIMS, rows.points, rows.samples, "lsda", ours={paper.LSDA_ROW: held.lsda},
                    seed=p.runtime.seed)
    F.write_part(folder, "lsda", found, F.premise_rows(measured or {}))
    return found


def lsda_seed_table(seeded: stats.Seeded, held: L.HeldOut) -> Table:
    """Held-out mAP (%) per training seed of the every-layer row and of full LSDA, beside the
    classification network (fixed), then the mean and std over the seeds."""
    t = pd.DataFrame(seeded.table()).set_index("seed")
    t.insert(0, "classification network", held.maps[L.CLS_ROW]["held-out (A)"])
    t["LSDA - classification network"] = t[held.lsda] - t["classification network"]
    return readable(pd.concat([t, pd.DataFrame({"mean": t.mean(), "std": t.std(ddof=1)}).T]).round(2), 1)


def fp_type_table(fps: dict[str, dict[str, Any]]) -> Table:
    """False positives of each type on the held-out categories, per detector (`held_out_fps`)."""
    return readable(pd.DataFrame({name: f["counts"] for name, f in fps.items()}).T, 0)


def large_summary(ls: L.LargeScale, adapted: str) -> Markdown:
    """One line: the large view's categories (with and without boxes, beside the paper's), its
    scenes, and the adapted layers (`adapted`: a Table 1 row)."""
    boxed, total = paper.LSDA_LARGE_BOXED, paper.LSDA_LARGE_CATEGORIES
    return Markdown(f"{len(ls.bench.classes)} categories: {len(ls.boxed)} with training boxes, {len(ls.unboxed)} from "
                    f"classification data only (the paper: {boxed} and {total - boxed}); {len(ls.bench.train)} "
                    f"training and {len(ls.bench.test)} test scenes; adapted layers: {adapted}")


def large_table(ls: L.LargeScale) -> Table:
    """mAP of the classification network and LSDA on the categories with and without boxes."""
    return readable(pd.DataFrame(ls.maps).set_index("detector").round(2), 1)


def world_note(facts: dict[str, Any], root: str | Path, p: Params) -> Markdown:
    """One line: the world's categories and superclasses, and where its files lie (relative to
    the project or the artifact folder: a page names no folder of the machine that built it)."""
    where = presentable_path(root, [p.runtime.artifacts])
    return Markdown(f"{facts['categories']} categories in {facts['superclasses']} superclasses; "
                    f"world files under `{where}`")


def world_rules(facts: dict[str, Any]) -> Table:
    """The rules that set VOC's flags in the world (`world_figures.describe`)."""
    return readable(pd.Series(facts["rules"], name="rule").to_frame())


def world_sets(facts: dict[str, Any]) -> Table:
    """The ILSVRC-like view's categories: set B (boxes in training) beside set A (none; a dash
    where set B has more)."""
    return readable(pd.DataFrame({"set B (boxes in training)": pd.Series(facts["set_b"]),
                                  "set A (no boxes)": pd.Series(facts["set_a"])}))


# ---------------------------------------------------------------------------------------
# the calibration appendix

CALIBRATION_LOG = "calibration/runs.jsonl"  # every calibration run, appended by `lsda sweep --record`
WHAT_IT_TAKES_LOG = "calibration/what_it_takes.jsonl"  # runs made after the default was fixed (not calibration)
CALIBRATION_METRICS = {"pretrain": ("train_top1", "val_top1", "fit_gap", "epochs", "seconds"),
                       "proposals": ("recall@0.5", "recall@0.7", "boxes_per_image"),
                       "finetune": ("plateau", "val_loss", "passes", "iterations"),
                       "lsda_headroom": ("cls_held_out_map", "oracle_held_out_map", "lsda_headroom", "lsda_recall"),
                       "rcnn_layers": ("val_top1", "train_top1", "fc6 - pool5", "FT gain pool5", "FT gain fc6",
                                       "FT gain fc7", "FT fc7"),
                       "seg_proposals": ("seg_recall", "seg_recall@150", "seg_recall@300", "mean_best_overlap",
                                         "masks_per_image")}


CALIBRATION_TITLES = {"pretrain": "Pre-training (premise: val top-1 >= 0.55, not underfitting)",
                      "proposals": "Proposals (premise: recall at IoU 0.5 >= 0.95 on the test split)",
                      "finetune": "Fine-tuning length (premise: the validation loss has plateaued)",
                      "lsda_headroom": "LSDA view sizes (premise: oracle held-out mAP at least twice the classification "
                                       "network's)",
                      "seg_proposals": "Mask proposals for segmentation (premise: >= 0.9 of the eval split's objects "
                                       "covered at IoU 0.5)",
                      "rcnn_layers": "What it takes: R-CNN's layer and fine-tuning gaps as the setup varies (mAP points, "
                                     "one seed)"}


def calibration_runs(path: str | None = None) -> dict[str, Table]:
    """Every recorded calibration run, one table per premise measured (in the order first run):
    the run's number in the log, its date, the settings it changed from the embedded default of
    its day (runtime keys, which change no result, left out), its premise metrics and why it
    was run (shown collapsed under the table, run by run)."""
    from lsda_core.experiments.sweep import read_record
    from lsda_core.publish.book import project_root
    tables: dict[str, list[dict[str, Any]]] = {}
    for n, r in enumerate(read_record(project_root() / (path or CALIBRATION_LOG)), 1):
        changed = {k: v for k, v in r["overrides"].items() if not k.startswith("runtime.")}
        m = r["metrics"]
        tables.setdefault(r["experiment"], []).append(
            {"run": n, "date": r["date"], "changed": ", ".join(f"{k}={v}" for k, v in changed.items()) or "(the default)",
             **{k: round(m[k], 3) if isinstance(m.get(k), float) else m.get(k)
                for k in CALIBRATION_METRICS.get(r["experiment"], ())},
             "why": r.get("note", "")})
    return {e: readable(pd.DataFrame(rows).set_index("run").astype(object).fillna(DASH), None,
                        main=[c for c in rows[0] if c not in ("run", "why")], detail="Why each run was made",
                        across=False)
            for e, rows in tables.items()}


def show_calibration(path: str | None = None) -> None:
    """Display `calibration_runs`: a heading and a table per premise measured."""
    from IPython.display import display
    for experiment, t in calibration_runs(path).items():
        display(Markdown(f"### {CALIBRATION_TITLES.get(experiment, experiment)}"))
        display(t)


def sweep_table(rows: list[dict[str, Any]], keys: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """The sweep as a table: one row per point indexed by its grid values, one column per metric
    (`metrics`, all numeric ones when None); an unknown metric is a SweepError naming the known."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    known = [c for c in df.columns if c not in keys]
    if metrics:
        bad = [m for m in metrics if m not in known]
        if bad:
            raise sweep.SweepError(f"--metrics: unknown {', '.join(bad)}; this sweep measured {', '.join(known)}")
        cols = metrics
    else:
        cols = [c for c in known if pd.api.types.is_numeric_dtype(df[c])]
    df = df.assign(**{k: df[k].map(str) for k in keys if df[k].map(lambda v: isinstance(v, list)).any()})
    return df.set_index(keys)[cols] if keys else df[cols]
