"""The papers' own numbers, transcribed from `../shared/papers/*.txt`, so every table in
the book can show them beside ours. Percentages as printed in the papers."""
from __future__ import annotations

from dataclasses import dataclass

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")

# R-CNN, Table 2: detection AP (%) on VOC 2007 test, per class (VOC order) and mAP.
RCNN_TABLE2: dict[str, tuple[list[float], float]] = {
    "R-CNN pool5": ([49.3, 58.0, 29.7, 22.2, 20.6, 47.7, 56.8, 43.6, 16.0, 39.7, 37.7, 39.6, 49.6, 55.6, 37.5,
                     20.6, 40.5, 37.4, 47.8, 51.3], 40.1),
    "R-CNN fc6": ([56.1, 58.8, 34.4, 29.6, 22.6, 50.4, 58.0, 52.5, 18.3, 40.1, 41.3, 46.8, 49.5, 53.5, 39.7,
                   23.0, 46.4, 36.4, 50.8, 59.0], 43.4),
    "R-CNN fc7": ([53.1, 58.9, 35.4, 29.6, 22.3, 50.0, 57.7, 52.4, 19.1, 43.5, 40.8, 43.6, 47.6, 54.0, 39.1,
                   23.0, 42.3, 33.6, 51.4, 55.2], 42.6),
    "R-CNN FT pool5": ([55.6, 57.5, 31.5, 23.1, 23.2, 46.3, 59.0, 49.2, 16.5, 43.1, 37.8, 39.7, 51.5, 55.4, 40.4,
                        23.9, 46.3, 37.9, 49.7, 54.1], 42.1),
    "R-CNN FT fc6": ([61.8, 62.0, 38.8, 35.7, 29.4, 52.5, 61.9, 53.9, 22.6, 49.7, 40.5, 48.8, 49.9, 57.3, 44.5,
                      28.5, 50.4, 40.2, 54.3, 61.2], 47.2),
    "R-CNN FT fc7": ([60.3, 62.5, 41.4, 37.9, 29.0, 52.6, 61.6, 56.3, 24.9, 52.3, 41.9, 48.1, 54.3, 57.0, 45.0,
                      26.9, 51.8, 38.1, 56.6, 62.2], 48.0),
    "DPM HOG": ([33.2, 60.3, 10.2, 16.1, 27.3, 54.3, 58.2, 23.0, 20.0, 24.1, 26.7, 12.7, 58.1, 48.2, 43.2,
                 12.0, 21.1, 36.1, 46.0, 43.5], 33.7),
}

# R-CNN, section 2.3: the negative-overlap threshold chosen by a grid search on VOC 2007, and the
# mAP points other thresholds of the grid lost against it (threshold -> points).
RCNN_NEG_IOU_CHOSEN = 0.3
RCNN_NEG_IOU_COST = {0.5: 5.0, 0.0: 4.0}

# R-CNN, section 2.2: proposals + features per image (amortised over classes).
RCNN_SECONDS_PER_IMAGE = {"gpu": 13.0, "cpu": 53.0}
# R-CNN, section 2.2: scoring 2000 regions against 100k classes on a CPU.
RCNN_100K_CLASSES_SECONDS = 10.0

# LSDA, Table 1: mAP (%) on ILSVRC2013 val2, trained (B, 100) / held-out (A, 100) / all (200).
LSDA_TABLE1: dict[str, tuple[float, float, float]] = {
    "No Adapt (Classification Network)": (12.63, 10.31, 11.90),
    "fcbgrnd": (14.93, 12.22, 13.60),
    "fcbgrnd,fc6": (24.72, 13.72, 19.20),
    "fcbgrnd,fc7": (23.41, 14.57, 19.00),
    "fcbgrnd,fcB": (18.04, 11.74, 14.90),
    "fcbgrnd,fc6,fc7": (25.78, 14.20, 20.00),
    "fcbgrnd,fc6,fc7,fcB": (26.33, 14.42, 20.40),
    "fcbgrnd,layers1-7,fcB": (27.81, 15.85, 21.83),
    "fcbgrnd,layers1-7,fcB Avg NN (k=5)": (28.12, 15.97, 22.05),
    "fcbgrnd,layers1-7,fcB Avg NN (k=10)": (27.95, 16.15, 22.05),
    "fcbgrnd,layers1-7,fcB Avg NN (k=100)": (27.91, 15.96, 21.94),
    "Oracle: Full Detection Network": (29.72, 26.25, 28.00),
}

# LSDA, Figure 3: held-out mAP (%).
LSDA_FIGURE3 = {"Classification Net": 10.31, "LSDA (bg only)": 12.2, "LSDA (bg+ft)": 15.85, "LSDA": 16.15}
# LSDA, section 4.2: the paired t-test over held-out APs of the k = 10 transfer against the adapted
# network without it (15.85 -> 16.15). The paper gives no p for LSDA vs the classification network.
LSDA_T_TEST_P = 0.017
LSDA_T_TESTS: dict[str, float | None] = {"transfer": LSDA_T_TEST_P, "classification": None}

# LSDA, section 4.4: seconds per image, warping detector vs the SPP version.
LSDA_SECONDS_PER_IMAGE = {"warp": 4.0, "spp": 0.5}
LSDA_LARGE_CATEGORIES = 7604
# LSDA, section 4.4: of the large-scale detector's categories, those with boxes (ILSVRC2013 DET's).
LSDA_LARGE_BOXED = 200

# R-CNN, section 3.2 ("Color"): fc6 of the pre-trained network, SVMs trained and tested on
# grayscale images; mAP (%) on VOC 2007 test (the colour row is Table 2's fc6).
RCNN_FC6_GRAYSCALE = 40.1
# mAP (%) on VOC 2007 test of every R-CNN row with a number: Table 2's rows and the grayscale one.
RCNN_MAP: dict[str, float] = {**{row: m for row, (_, m) in RCNN_TABLE2.items()},
                              "R-CNN fc6, grayscale": RCNN_FC6_GRAYSCALE}
# LSDA's headline model (Figure 3's "LSDA"): every layer adapted, then the transfer with k = 10.
LSDA_K = 10
LSDA_ROW = f"fcbgrnd,layers1-7,fcB Avg NN (k={LSDA_K})"


@dataclass(frozen=True)
class Claim:
    """One finding of a paper as data: what is compared (`terms`: rows with weights, e.g.
    A - B or (A - B) - (C - D)), the kind of claim (`stats.VERDICT_RULE`), the paper's effect
    in points (computed from the tables above, never typed in; None for figure claims, whose
    sign is the claim), the equivalence margin of a no-difference claim, where the paper says
    it, and the chapter section that tests it. Kind "optimum": `terms[0]` is the paper's choice
    and `alternatives` the other values of its grid."""

    id: str
    text: str
    kind: str
    terms: tuple[tuple[str, float], ...]
    paper: float | None
    source: str
    section: str
    margin: float | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.terms) + self.alternatives


def _effect(table: dict[str, float], terms: tuple[tuple[str, float], ...]) -> float:
    return round(sum(w * table[r] for r, w in terms), 2)


def _diff(a: str, b: str) -> tuple[tuple[str, float], ...]:
    return ((a, 1.0), (b, -1.0))


def _dd(a: str, b: str, c: str, d: str) -> tuple[tuple[str, float], ...]:
    return ((a, 1.0), (b, -1.0), (c, -1.0), (d, 1.0))


def rcnn_claim(id: str, text: str, kind: str, terms: tuple[tuple[str, float], ...], source: str, section: str,
               margin: float | None = None) -> Claim:
    """An R-CNN finding over rows of `RCNN_MAP` (VOC 2007 test mAP)."""
    return Claim(id, text, kind, terms, _effect(RCNN_MAP, terms), source, section, margin)


def lsda_claim(id: str, text: str, kind: str, terms: tuple[tuple[str, float], ...], source: str = "LSDA Table 1",
               section: str = "which-findings-replicate") -> Claim:
    """An LSDA finding over rows of `LSDA_TABLE1`, on the held-out categories (set A)."""
    held = {k: v[1] for k, v in LSDA_TABLE1.items()}
    return Claim(id, text, kind, terms, _effect(held, terms), source, section)


# The equivalence margin of "fc7 offers little or no advantage over fc6": half the smallest gap
# between Table 2's rows that the paper calls a finding (fc6 over pool5, 3.3 points).
RCNN_EQUIVALENCE_MARGIN = round((RCNN_MAP["R-CNN fc6"] - RCNN_MAP["R-CNN pool5"]) / 2, 2)

# The findings of R-CNN that the R-CNN chapter tests (sections 3.1-3.3, Table 2, Figure 4).
RCNN_CLAIMS = (
    rcnn_claim("rcnn-ft-fc7", "fine-tuning improves fc7", "difference", _diff("R-CNN FT fc7", "R-CNN fc7"),
               "R-CNN 3.2, Table 2", "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-ft-fc6", "fine-tuning improves fc6", "difference", _diff("R-CNN FT fc6", "R-CNN fc6"),
               "R-CNN 3.2, Table 2", "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-ft-pool5", "fine-tuning improves pool5", "difference", _diff("R-CNN FT pool5", "R-CNN pool5"),
               "R-CNN Table 2", "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-ft-fc7-vs-pool5", "fine-tuning helps fc7 much more than pool5", "difference of differences",
               _dd("R-CNN FT fc7", "R-CNN fc7", "R-CNN FT pool5", "R-CNN pool5"), "R-CNN 3.2",
               "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-ft-fc6-vs-pool5", "fine-tuning helps fc6 much more than pool5", "difference of differences",
               _dd("R-CNN FT fc6", "R-CNN fc6", "R-CNN FT pool5", "R-CNN pool5"), "R-CNN 3.2",
               "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-fc6-pool5", "without fine-tuning, fc6 beats pool5", "difference", _diff("R-CNN fc6", "R-CNN pool5"),
               "R-CNN 3.2, Table 2", "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-fc7-fc6", "without fine-tuning, fc7 offers little or no advantage over fc6", "no difference",
               _diff("R-CNN fc7", "R-CNN fc6"), "R-CNN 3.2", "table-2-which-layer-and-what-fine-tuning-adds",
               margin=RCNN_EQUIVALENCE_MARGIN),
    rcnn_claim("rcnn-cnn-hog", "CNN features (FT fc7) beat HOG", "difference", _diff("R-CNN FT fc7", "DPM HOG"),
               "R-CNN 3.2, Table 2", "table-2-which-layer-and-what-fine-tuning-adds"),
    rcnn_claim("rcnn-colour", "colour helps by a few points (fc6, colour vs grayscale)", "magnitude",
               _diff("R-CNN fc6", "R-CNN fc6, grayscale"), "R-CNN 3.2 (Color)", "colour"),
    Claim("rcnn-neg-iou", f"the negative-overlap threshold {RCNN_NEG_IOU_CHOSEN:g} is the grid's best", "optimum",
          ((f"neg IoU {RCNN_NEG_IOU_CHOSEN:.1f}", 1.0),), None, "R-CNN 2.3", "the-negative-overlap-threshold",
          alternatives=tuple(f"neg IoU {t:.1f}" for t in (0.0, 0.1, 0.2, 0.4, 0.5))),
    Claim("rcnn-fig4-cnn-loc", "CNN (FT fc7) false positives are mostly Loc rather than BG (share Loc - share BG)",
          "qualitative", (("FT fc7: Loc share", 1.0), ("FT fc7: BG share", -1.0)), None, "R-CNN Figure 4",
          "figure-4-what-the-false-positives-are"),
    Claim("rcnn-fig4-hog-bg", "HOG's false positives are more often BG than CNN's (BG share, HOG - FT fc7)",
          "qualitative", (("HOG: BG share", 1.0), ("FT fc7: BG share", -1.0)), None, "R-CNN Figure 4",
          "figure-4-what-the-false-positives-are"),
    Claim("rcnn-fig5-worst", "fine-tuning raises the lowest-performing subsets (mean over characteristics of the "
          "worst subset's normalised AP, FT fc7 - fc7)", "qualitative",
          (("FT fc7: worst-subset AP_N", 1.0), ("fc7 (no FT): worst-subset AP_N", -1.0)), None, "R-CNN Figure 5",
          "figure-5-sensitivity-to-object-characteristics"),
    Claim("rcnn-fig5-best", "fine-tuning raises the highest-performing subsets (mean over characteristics of the "
          "best subset's normalised AP, FT fc7 - fc7)", "qualitative",
          (("FT fc7: best-subset AP_N", 1.0), ("fc7 (no FT): best-subset AP_N", -1.0)), None, "R-CNN Figure 5",
          "figure-5-sensitivity-to-object-characteristics"),
)

# The findings of LSDA that the LSDA chapter tests (Table 1 on the held-out categories, Figure 5).
LSDA_CLAIMS = (
    lsda_claim("lsda-bg", "the background output alone helps held-out categories", "difference",
               _diff("fcbgrnd", "No Adapt (Classification Network)")),
    lsda_claim("lsda-all-layers", "adapting every layer helps held-out categories", "difference",
               _diff("fcbgrnd,layers1-7,fcB", "No Adapt (Classification Network)")),
    lsda_claim("lsda-all-vs-fc", "adapting every layer beats adapting fc6 + fc7 + fcB", "difference",
               _diff("fcbgrnd,layers1-7,fcB", "fcbgrnd,fc6,fc7,fcB")),
    lsda_claim("lsda-transfer", "the category-specific transfer adds to it", "difference",
               _diff(LSDA_ROW, "fcbgrnd,layers1-7,fcB")),
    lsda_claim("lsda-vs-cls", "full LSDA beats the classification network", "difference",
               _diff(LSDA_ROW, "No Adapt (Classification Network)")),
    lsda_claim("lsda-oracle", "boxes for every category (oracle) beat LSDA", "difference",
               _diff("Oracle: Full Detection Network", LSDA_ROW)),
    Claim("lsda-fig5", "adaptation cuts the share of Loc and BG among the held-out top false positives "
          "(classification network - LSDA)", "qualitative",
          (("classification network: Loc+BG share", 1.0), ("LSDA: Loc+BG share", -1.0)), None, "LSDA Figure 5",
          "figure-5-what-the-held-out-false-positives-are"),
)


# R-CNN, Table 3: segmentation mean accuracy (%) on VOC 2011 val; O2P beside R-CNN's six feature rows
# (CNN pre-trained on ILSVRC 2012, no fine-tuning).
RCNN_TABLE3: dict[str, float] = {"O2P": 46.4, "full fc6": 43.0, "full fc7": 42.5, "fg fc6": 43.7, "fg fc7": 42.1,
                                 "full+fg fc6": 47.9, "full+fg fc7": 45.8}
# R-CNN, Table 4: segmentation accuracy (%) per class on VOC 2011 test (background, the 20 VOC classes,
# mean), for R&P, O2P and R-CNN's full+fg fc6.
SEG_CLASSES = ("background",) + VOC_CLASSES
RCNN_TABLE4: dict[str, tuple[list[float], float]] = {
    "R&P": ([83.4, 46.8, 18.9, 36.6, 31.2, 42.7, 57.3, 47.4, 44.1, 8.1, 39.4, 36.1, 36.3, 49.5, 48.3, 50.7, 26.3,
             47.2, 22.1, 42.0, 43.2], 40.8),
    "O2P": ([85.4, 69.7, 22.3, 45.2, 44.4, 46.9, 66.7, 57.8, 56.2, 13.5, 46.1, 32.3, 41.2, 59.1, 55.3, 51.0, 36.2,
             50.4, 27.8, 46.9, 44.6], 47.6),
    "full+fg fc6": ([84.2, 66.9, 23.7, 58.3, 37.4, 55.4, 73.3, 58.7, 56.5, 9.7, 45.5, 29.5, 49.3, 40.1, 57.8, 53.9,
                     33.8, 60.7, 22.7, 47.1, 41.3], 47.9),
}


def seg_claim(id: str, text: str, terms: tuple[tuple[str, float], ...]) -> Claim:
    """An R-CNN segmentation finding over rows of `RCNN_TABLE3` (VOC 2011 val mean accuracy)."""
    return Claim(id, text, "difference", terms, _effect(RCNN_TABLE3, terms), "R-CNN 5, Table 3",
                 "which-findings-replicate")


# The findings of R-CNN's section 5 that the segmentation chapter tests.
SEG_CLAIMS = (
    seg_claim("seg-fc6-fc7-full", "fc6 beats fc7 (full features)", _diff("full fc6", "full fc7")),
    seg_claim("seg-fc6-fc7-fg", "fc6 beats fc7 (fg features)", _diff("fg fc6", "fg fc7")),
    seg_claim("seg-fc6-fc7-fullfg", "fc6 beats fc7 (full+fg features)", _diff("full+fg fc6", "full+fg fc7")),
    seg_claim("seg-fg-full", "fg slightly beats full (fc6)", _diff("fg fc6", "full fc6")),
    seg_claim("seg-fullfg-fg", "full+fg beats the best single strategy, fg, by a margin (fc6)",
              _diff("full+fg fc6", "fg fc6")),
)


# The papers' side of the premises (`experiments.premises.PREMISES`): value and where it comes from.
PREMISES: dict[str, tuple[float | None, str]] = {
    "recall": (0.98, "selective search's fast mode: about 98 % with about 2000 boxes per image (Uijlings et al., "
                     "cited by R-CNN 2.1; not in R-CNN's text)"),
    "lsda_recall": (0.98, "R-CNN's proposals, which LSDA uses"),
    "pretrain_val": (0.57, "CaffeNet on ILSVRC 2012 val: top-1 error 2.2 points above Krizhevsky et al.'s "
                           "(R-CNN 2.3), about 57 % top-1 over 1000 classes"),
    "pretrain_fit": (None, "CaffeNet overfits enough to need dropout"),
    "finetune_plateau": (None, "fine-tuned until little progress is made (R-CNN 2.3)"),
    "finetune_passes": (None, "R-CNN does not give its count of foreground windows"),
    "lsda_headroom": (round(LSDA_TABLE1["Oracle: Full Detection Network"][1]
                            / LSDA_TABLE1["No Adapt (Classification Network)"][1], 2),
                      "oracle / classification network, held-out mAP (LSDA Table 1)"),
    "rcnn_headroom": (RCNN_MAP["R-CNN FT fc7"], "FT fc7, R-CNN Table 2's best row"),
    "seg_recall": (None, "O2P's CPMC regions, about 150 per image; R-CNN gives no coverage number"),
    "seg_headroom": (None, f"R-CNN's best row, {max(RCNN_TABLE3.values())} % (Table 3), far above any all-background "
                           "labelling; the paper gives no such baseline"),
}

