"""The papers' numbers are transcribed consistently (each row's mean matches its mAP)."""
import re
from pathlib import Path

import numpy as np
import pytest

from lsda_core.publish import paper

PAPERS = Path(__file__).resolve().parents[3] / "shared" / "papers"


@pytest.mark.parametrize("row", list(paper.RCNN_TABLE2))
def test_rcnn_rows_average_to_their_map(row):
    aps, m = paper.RCNN_TABLE2[row]
    assert len(aps) == 20 and abs(np.mean(aps) - m) < 0.06


@pytest.mark.skipif(not (PAPERS / "rcnn.txt").is_file(), reason="../shared/papers not beside the checkout")
def test_rcnn_rows_match_the_paper_text():
    text = (PAPERS / "rcnn.txt").read_text()
    for row, (aps, m) in paper.RCNN_TABLE2.items():
        nums = " ".join(f"{v:.1f}" for v in aps + [m])
        assert re.search(re.escape(nums), text), row


@pytest.mark.skipif(not (PAPERS / "lsda.txt").is_file(), reason="../shared/papers not beside the checkout")
def test_lsda_rows_match_the_paper_text():
    text = (PAPERS / "lsda.txt").read_text()
    for row, vals in paper.LSDA_TABLE1.items():
        assert " ".join(f"{v:.2f}" for v in vals) in text, row


def _text(name: str) -> str:
    """A paper's text with words hyphenated across lines joined and all whitespace single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"-\n", "", (PAPERS / name).read_text()))


@pytest.mark.skipif(not (PAPERS / "rcnn.txt").is_file(), reason="../shared/papers not beside the checkout")
def test_rcnn_numbers_outside_table2_match_the_paper_text():
    text = _text("rcnn.txt")
    fc6 = paper.RCNN_MAP["R-CNN fc6"]
    assert f"from {fc6:.1f}% to {paper.RCNN_FC6_GRAYSCALE:.1f}%" in text  # the grayscale world
    assert paper.RCNN_MAP["R-CNN fc6, grayscale"] == paper.RCNN_FC6_GRAYSCALE
    assert f"The overlap threshold, {paper.RCNN_NEG_IOU_CHOSEN}, was selected by a grid search" in text
    cost_05, cost_0 = paper.RCNN_NEG_IOU_COST[0.5], paper.RCNN_NEG_IOU_COST[0.0]
    assert f"Setting it to 0.5, as in [36], decreased mAP by {cost_05:.0f} points" in text
    assert f"setting it to 0 decreased mAP by {cost_0:.0f} points" in text
    s = paper.RCNN_SECONDS_PER_IMAGE
    assert f"({s['gpu']:.0f}s/image on a GPU or {s['cpu']:.0f}s/image on a CPU)" in text
    seconds = paper.RCNN_100K_CLASSES_SECONDS
    assert f"100k classes, the resulting matrix multiplication takes only {seconds:.0f} seconds" in text


@pytest.mark.skipif(not (PAPERS / "lsda.txt").is_file(), reason="../shared/papers not beside the checkout")
def test_lsda_numbers_outside_table1_match_the_paper_text():
    text = _text("lsda.txt")
    assert f"p = {paper.LSDA_T_TEST_P}" in text
    assert f"(k = {paper.LSDA_K}) further improves" in text and paper.LSDA_ROW in paper.LSDA_TABLE1
    assert " ".join(f"{v}" for v in paper.LSDA_FIGURE3.values()) + " Figure 3:" in text
    s = paper.LSDA_SECONDS_PER_IMAGE
    assert s["spp"] == 0.5 and f"half a second per image (from {s['warp']:.0f}s per image)" in text
    total, boxed = paper.LSDA_LARGE_CATEGORIES, paper.LSDA_LARGE_BOXED
    assert f"a {total} category detector" in text and f"the {boxed} categories from the ILSVRC2013" in text
    assert f"The other {total - boxed} categories" in text


def test_claims_are_rows_of_the_tables_and_their_differences():
    """Each claim's paper effect is the weighted sum of its rows in the paper's table (never typed in);
    figure claims and the optimum carry no effect; ids are unique; every kind has a verdict rule."""
    from lsda_core.evaluation.stats import VERDICT_RULE
    held = {k: v[1] for k, v in paper.LSDA_TABLE1.items()}
    for claims, table in ((paper.RCNN_CLAIMS, paper.RCNN_MAP), (paper.LSDA_CLAIMS, held)):
        for c in claims:
            assert c.kind in VERDICT_RULE, c.id
            if c.kind in ("qualitative", "optimum"):
                assert c.paper is None, c.id
            else:
                assert c.paper == pytest.approx(sum(w * table[r] for r, w in c.terms), abs=0.006), c.id
    ids = [c.id for c in paper.RCNN_CLAIMS + paper.LSDA_CLAIMS]
    assert len(set(ids)) == len(ids)
    by = {c.id: c for c in paper.RCNN_CLAIMS + paper.LSDA_CLAIMS}
    # the headline numbers the chapters used to type in
    assert by["rcnn-ft-fc7"].paper == 5.4 and by["lsda-oracle"].paper == 10.1
    assert by["rcnn-ft-fc7-vs-pool5"].paper == 3.4  # (FT fc7 - fc7) - (FT pool5 - pool5)
    assert by["rcnn-fc7-fc6"].kind == "no difference" and by["rcnn-fc7-fc6"].margin == 1.65
    assert by["rcnn-colour"].kind == "magnitude"
