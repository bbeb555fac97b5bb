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
    """One finding of a paper as two rows of its table: row `a` scores `delta` mAP points above
    row `b` (`delta` computed from the table above, never typed in)."""

    text: str
    a: str
    b: str
    delta: float


def rcnn_claim(text: str, a: str, b: str) -> Claim:
    """An R-CNN finding between two rows of `RCNN_MAP` (VOC 2007 test mAP)."""
    return Claim(text, a, b, RCNN_MAP[a] - RCNN_MAP[b])


def lsda_claim(text: str, a: str, b: str) -> Claim:
    """An LSDA finding between two rows of `LSDA_TABLE1`, on the held-out categories (set A)."""
    return Claim(text, a, b, LSDA_TABLE1[a][1] - LSDA_TABLE1[b][1])


# The findings of R-CNN's Table 2 and colour ablation that the R-CNN chapter tests.
RCNN_CLAIMS = (
    rcnn_claim("fine-tuning improves fc7", "R-CNN FT fc7", "R-CNN fc7"),
    rcnn_claim("fine-tuning improves fc6", "R-CNN FT fc6", "R-CNN fc6"),
    rcnn_claim("fine-tuning improves pool5 (less than fc6/fc7 in the paper)", "R-CNN FT pool5", "R-CNN pool5"),
    rcnn_claim("without fine-tuning, fc6 beats pool5", "R-CNN fc6", "R-CNN pool5"),
    rcnn_claim("without fine-tuning, fc7 is no better than fc6", "R-CNN fc7", "R-CNN fc6"),
    rcnn_claim("CNN features (FT fc7) beat HOG", "R-CNN FT fc7", "DPM HOG"),
    rcnn_claim("colour helps (fc6 colour vs grayscale)", "R-CNN fc6", "R-CNN fc6, grayscale"),
)

# The findings of LSDA's Table 1 on the held-out categories that the LSDA chapter tests.
LSDA_CLAIMS = (
    lsda_claim("the background output alone helps held-out categories", "fcbgrnd",
               "No Adapt (Classification Network)"),
    lsda_claim("adapting every layer helps held-out categories", "fcbgrnd,layers1-7,fcB",
               "No Adapt (Classification Network)"),
    lsda_claim("adapting every layer beats adapting fc6 + fc7 + fcB", "fcbgrnd,layers1-7,fcB", "fcbgrnd,fc6,fc7,fcB"),
    lsda_claim("the category-specific transfer adds to it", LSDA_ROW, "fcbgrnd,layers1-7,fcB"),
    lsda_claim("full LSDA beats the classification network", LSDA_ROW, "No Adapt (Classification Network)"),
    lsda_claim("boxes for every category (oracle) beat LSDA", "Oracle: Full Detection Network", LSDA_ROW),
)
